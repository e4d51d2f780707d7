"""MRD v2 acquisitions at stream speed: header layouts learned once, then read by template.

A v2 acquisition header is ~45 varints, optionals and floats: decoding it field by field in
Python would cost more than reading its samples.  But the readouts of a scan share their
*layout* (which optionals are present, vector lengths, how many bytes each varint takes,
the data shape), so the first header of a layout is scanned field by field and becomes a
:class:`Template`; every later header is checked against it with one big-integer mask
(structure bytes equal, varint continuation bits equal) and decoded with one
``struct.unpack_from`` straight into MRD v1 header values.  Runs of small readouts that sit
whole in the read-ahead buffer are decoded with numpy, a few calls per run (as the v1
reader does, :mod:`..runs`).

The v1 header is built by the MRD project's mapping (:mod:`.mapping`): absent optionals
become 0, vectors fill the fixed v1 arrays, sizes come from the data and trajectory shapes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np

from ..layout import ACQUISITION_HEADER_DTYPE
from ..messages import Acquisition
from .codec import uvarint_bytes
from .mapping import (
    ACQUISITION_OPTIONALS,
    ACQUISITION_VECTORS,
    COUNTERS,
    GEOMETRY,
    MappingError,
)
from .mapping import (
    version_note as _version_note,
)
from .notes import Notes
from .schema import ArrayType, EnumType, OptionalType, Primitive, RecordType, VectorType, named

__all__ = [
    "ACQUISITION_TAG",
    "varint_at",
    "RunLayout",
    "ShortRead",
    "Template",
    "acquisition_buffers",
    "learn_template",
]

ACQUISITION_TAG = 0
_C8 = np.dtype("<c8")
_F4 = np.dtype("<f4")


class ShortRead(Exception):
    """The bytes at hand end inside the header: ``need`` bytes from its start are needed."""

    def __init__(self, need: int):
        super().__init__(need)
        self.need = need


# ------------------------------------------------------- the v1 header, flat
def _v1_scalars() -> list[tuple[tuple[Any, ...], str]]:
    """Every scalar of the v1 AcquisitionHeader in byte order: (key, struct code)."""
    codes = {"u2": "H", "u4": "I", "u8": "Q", "i4": "i", "f4": "f"}
    out: list[tuple[tuple[Any, ...], str]] = []

    def walk(dtype: np.dtype, prefix: tuple[str, ...]) -> None:
        assert dtype.names is not None
        for name in dtype.names:
            sub = dtype.fields[name][0]  # type: ignore[index]
            if sub.names:
                walk(sub, (*prefix, name))
            elif sub.shape:
                code = codes[sub.base.str[1:]]
                out.extend(((*prefix, name, i), code) for i in range(sub.shape[0]))
            else:
                out.append(((*prefix, name), codes[sub.str[1:]]))

    walk(ACQUISITION_HEADER_DTYPE, ())
    return out


V1_SCALARS = _v1_scalars()
V1_STRUCT = struct.Struct("<" + "".join(code for _, code in V1_SCALARS))
assert V1_STRUCT.size == ACQUISITION_HEADER_DTYPE.itemsize


def _v1_sources() -> dict[tuple[Any, ...], tuple[str, int | None]]:
    """v1 scalar key -> (v2 value path, element index), from the mapping's tables."""
    sources: dict[tuple[Any, ...], tuple[str, int | None]] = {
        ("flags",): ("flags", None),
        ("measurement_uid",): ("measurementUid", None),
    }
    for v2, v1, _ in ACQUISITION_OPTIONALS:
        sources[(v1,)] = (v2, None)
    for v2, v1, _ in ACQUISITION_VECTORS:
        size = ACQUISITION_HEADER_DTYPE.fields[v1][0].shape[0]  # type: ignore[index]
        sources.update({(v1, i): (v2, i) for i in range(size)})
    for v2, v1 in GEOMETRY:
        sources.update({(v1, i): (v2, i) for i in range(3)})
    for v2, v1 in COUNTERS:
        sources[("idx", v1)] = (f"idx.{v2}", None)
    sources.update({("idx", "user", i): ("idx.user", i) for i in range(8)})
    return sources


_SOURCES = _v1_sources()
_CAPACITY = {
    v2: ACQUISITION_HEADER_DTYPE.fields[v1][0].shape[0]  # type: ignore[index]
    for v2, v1, _ in ACQUISITION_VECTORS
}
_CAPACITY["idx.user"] = 8


# ------------------------------------------------- the v2 header, as leaves
@dataclass(frozen=True)
class _Leaf:
    """One field of the v2 AcquisitionHeader: how it is wrapped and what it holds."""

    path: str
    wrap: str
    """``one``, ``optional``, ``vector`` or ``array`` (a fixed-size array)."""
    kind: str
    """``var`` (unsigned varint), ``svar`` (zig-zag varint) or ``f4`` (float32)."""
    length: int = 0
    """Elements of a fixed-size array."""


def _leaf_kind(kind: Any) -> str:
    if isinstance(kind, EnumType):
        kind = Primitive(kind.base)
    assert isinstance(kind, Primitive), kind
    if kind.name == "float32":
        return "f4"
    return "svar" if kind.name.startswith("int") else "var"


def _leaves(record: RecordType, prefix: str = "") -> list[_Leaf]:
    out: list[_Leaf] = []
    for name, kind in record.fields:
        path = prefix + name
        if isinstance(kind, RecordType):
            out.extend(_leaves(kind, path + "."))
        elif isinstance(kind, OptionalType):
            out.append(_Leaf(path, "optional", _leaf_kind(kind.item)))
        elif isinstance(kind, VectorType):
            assert kind.length is None
            out.append(_Leaf(path, "vector", _leaf_kind(kind.item)))
        elif isinstance(kind, ArrayType):
            assert kind.shape is not None and len(kind.shape) == 1
            out.append(_Leaf(path, "array", _leaf_kind(kind.item), kind.shape[0]))
        else:
            out.append(_Leaf(path, "one", _leaf_kind(kind)))
    return out


_HEAD = named("AcquisitionHeader")
assert isinstance(_HEAD, RecordType)
LEAVES = _leaves(_HEAD)
"""The v2 AcquisitionHeader, field by field in wire order."""
_STRUCTURAL_VECTORS = frozenset({"channelOrder"})
"""Vectors whose element values are part of the layout (checked, not decoded)."""


# ------------------------------------------------------------------ scanning
@dataclass
class _Scan:
    """One header read field by field: its values and which bytes play which role."""

    values: dict[str, Any] = field(default_factory=dict)
    """path -> value (None for absent optionals, lists for vectors and arrays)."""
    fixed: list[tuple[int, int]] = field(default_factory=list)
    """(start, length) of bytes that belong to the layout: they must repeat exactly."""
    slots: list[tuple[str, int | None, int, int, str]] = field(default_factory=list)
    """(path, element, start, length, kind) of each decoded value."""
    end: int = 0
    coils: int = 0
    samples: int = 0


def varint_at(chunk: Any, pos: int, end: int, start: int = 0) -> tuple[int, int]:
    """(value, position after) of the varint at ``chunk[pos:end]``; ShortRead (with the
    bytes needed counted from ``start``) when it runs past ``end``, ValueError when it is
    longer than 10 bytes."""
    value = shift = 0
    while True:
        if pos >= end:
            raise ShortRead(pos - start + 1)
        byte = chunk[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")


def scan_header(chunk: Any, start: int, end: int) -> _Scan:
    """Read the header and the data shape at ``chunk[start:end]`` field by field.

    Raises ShortRead when they do not fit, ValueError for bytes no header has.
    """
    scan = _Scan()
    pos = start
    f4 = struct.Struct("<f")

    def element(leaf: _Leaf, index: int | None) -> Any:
        nonlocal pos
        if leaf.kind == "f4":
            if pos + 4 > end:
                raise ShortRead(pos + 4 - start)
            scan.slots.append((leaf.path, index, pos - start, 4, "f4"))
            value = f4.unpack_from(chunk, pos)[0]
            pos += 4
            return value
        begin = pos
        value, pos = varint_at(chunk, pos, end, start)
        if leaf.path in _STRUCTURAL_VECTORS:
            scan.fixed.append((begin - start, pos - begin))
        else:
            scan.slots.append((leaf.path, index, begin - start, pos - begin, leaf.kind))
        if leaf.kind == "svar":
            value = (value >> 1) ^ -(value & 1)
        return value

    for leaf in LEAVES:
        if leaf.wrap == "one":
            scan.values[leaf.path] = element(leaf, None)
        elif leaf.wrap == "optional":
            if pos >= end:
                raise ShortRead(pos - start + 1)
            flag = chunk[pos]
            if flag > 1:
                raise ValueError(f"a presence flag of {flag} for {leaf.path} (expected 0 or 1)")
            scan.fixed.append((pos - start, 1))
            pos += 1
            scan.values[leaf.path] = element(leaf, None) if flag else None
        else:
            count = leaf.length
            if leaf.wrap == "vector":
                begin = pos
                count, pos = varint_at(chunk, pos, end, start)
                scan.fixed.append((begin - start, pos - begin))
                if count > 1 << 16:
                    raise ValueError(f"a {leaf.path} of {count} elements")
            scan.values[leaf.path] = [element(leaf, i) for i in range(count)]
    for name in ("coils", "samples"):
        begin = pos
        value, pos = varint_at(chunk, pos, end, start)
        scan.fixed.append((begin - start, pos - begin))
        setattr(scan, name, value)
    scan.end = pos - start
    return scan


# ------------------------------------------------------------------ templates
_ZIGZAG = tuple((b >> 1) ^ -(b & 1) for b in range(128))
_CODE_RANGE = {
    "H": (0, 0xFFFF),
    "I": (0, 0xFFFFFFFF),
    "Q": (0, (1 << 64) - 1),
    "i": (-(1 << 31), (1 << 31) - 1),
}
_CODE_BITS = {"H": 16, "I": 32, "Q": 64, "i": 32}
_BATCH = 64
"""v1 header records allocated at once by :meth:`Template.head`."""
_ABSENT_TEXT = (
    "MRD v1 has no 'absent' value: absent optional fields of MRD v2 items are written as 0"
)


@dataclass(frozen=True)
class _Spec:
    """Where one v1 scalar comes from: a constant, or a decoded value's unpacked bytes."""

    constant: Any = 0
    kind: str = ""
    """``var``, ``svar`` or ``f4``; empty for a constant."""
    indices: tuple[int, ...] = ()
    """Positions of the value's bytes (or float) in the template's unpacked tuple."""
    check: tuple[int, int] | None = None
    """(low, high) when the varint is wide enough to exceed the v1 field."""


def _wide_varint(spec: _Spec) -> Any:
    """A function of the unpacked tuple giving a varint of several bytes its value (the
    last byte has no continuation bit, so it needs no mask)."""
    indices = spec.indices
    signed = spec.kind == "svar"
    if len(indices) == 2 and not signed:
        low, high = indices
        return lambda values: (values[low] & 0x7F) | (values[high] << 7)
    if len(indices) == 3 and not signed:
        low, mid, high = indices
        return lambda values: (
            (values[low] & 0x7F) | ((values[mid] & 0x7F) << 7) | (values[high] << 14)
        )
    shifts = [(index, 7 * n) for n, index in enumerate(indices)]

    def combine(values: tuple[Any, ...]) -> int:
        number = 0
        for index, shift in shifts:
            number |= (values[index] & 0x7F) << shift
        return (number >> 1) ^ -(number & 1) if signed else number

    return combine


class Template:
    """The layout of one header (and data shape): check and decode later headers by it.

    Attributes
    ----------
    size:
        Bytes from the header's start to the end of the data shape.
    coils, samples:
        The data shape, part of the layout.
    """

    def __init__(self, scan: _Scan, raw: bytes, notes: Notes):
        self.size = scan.end
        self.coils = scan.coils
        self.samples = scan.samples
        self.payload = 8 * scan.coils * scan.samples
        """Bytes of the samples that follow the header."""
        self.raw = raw
        mask = bytearray(self.size)
        for start, length in scan.fixed:
            mask[start : start + length] = b"\xff" * length
        codes = ["x"] * self.size
        self.positions: list[tuple[int, str]] = []
        """(byte position, ``B`` or ``f``) of each unpacked value."""
        place: dict[tuple[str, int | None], tuple[str, tuple[int, ...]]] = {}
        for path, index, start, length, kind in sorted(scan.slots, key=lambda s: s[2]):
            first = len(self.positions)
            if kind == "f4":
                codes[start : start + 4] = ["f", "", "", ""]
                self.positions.append((start, "f"))
            else:
                for k in range(length):
                    codes[start + k] = "B"
                    mask[start + k] = 0x80
                    self.positions.append((start + k, "B"))
            place[(path, index)] = (kind, tuple(range(first, len(self.positions))))
        self.mask = int.from_bytes(mask, "little")
        self.expect = int.from_bytes(raw, "little") & self.mask
        self.layout = struct.Struct("<" + "".join(codes))
        self.specs = self._specs(scan, place, notes)
        self._previous: tuple[int, bytes] | None = None
        """The last header decoded (as an int) and its v1 record."""
        self._owner: list[int] = []
        self._patches: list[tuple[int, Any]] = []
        self._compile()
        self._plan_rows()
        self._plan_patches()

    @staticmethod
    def _specs(
        scan: _Scan, place: dict[tuple[str, int | None], tuple[str, tuple[int, ...]]], notes: Notes
    ) -> list[_Spec]:
        """The source of every v1 scalar, and notes on what v1 cannot carry."""
        for name in ("coils", "samples"):
            if getattr(scan, name) > 0xFFFF:
                raise MappingError(
                    f"acquisition has {getattr(scan, name)} {name}; MRD v1 holds at most 65535"
                )
        sizes = {
            ("version",): 1,
            ("number_of_samples",): scan.samples,
            ("available_channels",): scan.coils,
            ("active_channels",): scan.coils,
        }
        specs = []
        for key, code in V1_SCALARS:
            source = _SOURCES.get(key)
            found = place.get(source) if source is not None else None
            if found is None:
                if source is not None and source[1] is None and scan.values.get(source[0]) is None:
                    notes.field("absent optional fields", _ABSENT_TEXT)
                specs.append(_Spec(constant=sizes.get(key, 0)))
                continue
            kind, indices = found
            check = None
            if kind != "f4" and 7 * len(indices) > _CODE_BITS[code]:
                check = _CODE_RANGE[code]
            specs.append(_Spec(kind=kind, indices=indices, check=check))
        for path, capacity in _CAPACITY.items():
            if len(scan.values[path]) > capacity:
                notes.field(
                    f"acquisition {path} beyond {capacity}",
                    f"MRD v1 holds {capacity} acquisition {path} values: those beyond are not "
                    "carried",
                )
        if scan.values["channelOrder"] != list(range(scan.coils)):
            notes.field(
                "acquisition channelOrder",
                "MRD v1 keeps no channel order: acquisition channelOrder other than "
                "0..channels-1 is not carried",
            )
        return specs

    def _compile(self) -> None:
        """One ``itemgetter`` over ``unpacked + derived + constants`` gives the v1 scalars;
        ``derived`` holds the one-byte zig-zag values (mapped by a table in one go), then
        each wider varint."""
        unpacked = len(self.positions)
        zigzag: list[int] = []
        wide: list[Any] = []
        constants: list[Any] = []
        order: list[tuple[str, int]] = []
        for spec in self.specs:
            if not spec.kind:
                constants.append(spec.constant)
                order.append(("constant", len(constants) - 1))
            elif spec.kind == "f4" or (spec.kind == "var" and len(spec.indices) == 1):
                order.append(("unpacked", spec.indices[0]))
            elif len(spec.indices) == 1:
                zigzag.append(spec.indices[0])
                order.append(("zigzag", len(zigzag) - 1))
            else:
                wide.append(_wide_varint(spec))
                order.append(("wide", len(wide) - 1))
        base = {
            "unpacked": 0,
            "zigzag": unpacked,
            "wide": unpacked + len(zigzag),
            "constant": unpacked + len(zigzag) + len(wide),
        }
        self.zigzag = itemgetter(*zigzag, *zigzag[:1]) if zigzag else None
        """The one-byte zig-zag values (the first once more, so a tuple comes back)."""
        self.zigzag_count = len(zigzag)
        # user ints rarely change within a scan: when their bytes are the learned header's,
        # their values are too
        zigzag_bytes = bytearray(self.size)
        for index in zigzag:
            zigzag_bytes[self.positions[index][0]] = 0xFF
        self.zigzag_mask = int.from_bytes(zigzag_bytes, "little")
        self.zigzag_expect = int.from_bytes(self.raw, "little") & self.zigzag_mask
        learned = self.layout.unpack_from(self.raw, 0)
        self.zigzag_known: tuple[int, ...] = (
            tuple(map(_ZIGZAG.__getitem__, self.zigzag(learned)))[: len(zigzag)]
            if self.zigzag is not None
            else ()
        )
        self.wide = wide
        self.constants = tuple(constants)
        self.getter = itemgetter(*(base[where] + at for where, at in order))
        self.checks = [(n, spec.check) for n, spec in enumerate(self.specs) if spec.check]
        # for whole records: zero constants become pad bytes (the batch is zeroed), so
        # only the other scalars are gathered and packed
        codes = []
        kept = []
        for (where, at), (_, code) in zip(order, V1_SCALARS, strict=True):
            if where == "constant" and not constants[at]:
                codes.append("x" * struct.calcsize("<" + code))
            else:
                codes.append(code)
                kept.append(base[where] + at)
        self.record_layout = struct.Struct("<" + "".join(codes))
        self.record_getter = itemgetter(*kept)
        self._batch_bytes = bytearray()
        self._batch = np.zeros(0, ACQUISITION_HEADER_DTYPE)
        self._batch_at = 0

    def matches(self, chunk: Any, pos: int) -> bool:
        """Whether the header at ``chunk[pos:]`` (``size`` bytes available) has this layout."""
        value = int.from_bytes(chunk[pos : pos + self.size], "little")
        return value & self.mask == self.expect

    def v1_values(self, chunk: Any, pos: int) -> tuple[Any, ...]:
        """The v1 header scalars of the matching header at ``pos`` (V1_STRUCT order)."""
        values = self.layout.unpack_from(chunk, pos)
        if self.zigzag is not None:
            values += tuple(map(_ZIGZAG.__getitem__, self.zigzag(values)))[: self.zigzag_count]
        if self.wide:
            values += tuple(derive(values) for derive in self.wide)
        result = self.getter(values + self.constants)
        for number, (low, high) in self.checks:
            if not low <= result[number] <= high:
                raise MappingError(_overflow(number, result[number], low, high))
        return result

    def head(self, chunk: Any, pos: int) -> np.void:
        """The v1 AcquisitionHeader record of the matching header at ``pos``."""
        record = self.head_if_matching(chunk, pos)
        assert record is not None, "head() of a header that does not match the template"
        return record

    def head_if_matching(self, chunk: Any, pos: int) -> np.void | None:
        """The v1 AcquisitionHeader record of the header at ``pos`` (``size`` bytes
        available), None when it does not have this layout.

        Records are handed out from blocks allocated a few dozen at a time.  Readouts of a
        scan differ in a few counters: after the first, a record is the previous one with
        the fields whose bytes changed written again (see :meth:`_plan_patches`).
        """
        raw = int.from_bytes(chunk[pos : pos + self.size], "little")
        if raw & self.mask != self.expect:
            return None
        batch, at = self._batch, self._batch_at
        if at == batch.size:
            self._batch_bytes = bytearray(_BATCH * V1_STRUCT.size)
            batch = self._batch = np.frombuffer(self._batch_bytes, ACQUISITION_HEADER_DTYPE)
            at = 0
        record = self._batch_bytes
        start = at * V1_STRUCT.size
        previous = self._previous
        if previous is not None:
            diff = raw ^ previous[0]
            record[start : start + V1_STRUCT.size] = previous[1]
            owner, patches = self._owner, self._patches
            while diff:
                mask, patch = patches[owner[((diff & -diff).bit_length() - 1) >> 3]]
                patch(record, start, chunk, pos)
                diff &= ~mask
        else:
            V1_STRUCT.pack_into(record, start, *self.v1_values(chunk, pos))
        self._previous = (raw, bytes(record[start : start + V1_STRUCT.size]))
        self._batch_at = at + 1
        return batch[at]

    def _plan_patches(self) -> None:
        """For each decoded field, the header bytes it owns and how to write it into a v1
        record from them (a float run as a byte copy, a varint decoded), so that a record
        can be the previous one with the changed fields written again."""
        self._previous = None
        owner = [0] * self.size
        patches: list[tuple[int, Any]] = []

        def own(positions: list[int], patch: Any) -> None:
            mask = bytearray(self.size)
            for at in positions:
                mask[at] = 0xFF
                owner[at] = len(patches)
            patches.append((int.from_bytes(mask, "little"), patch))

        for v1_at, source, nbytes in self.copies:
            own(list(range(source, source + nbytes)), _copy_patch(v1_at, source, nbytes))
        for number, v1_at, dtype, positions, spec in self.varints:
            own(list(positions), _varint_patch(number, v1_at, dtype, positions, spec))
        self._owner = owner
        self._patches = patches

    def _plan_rows(self) -> None:
        """How :meth:`heads` fills whole blocks of v1 headers: constants from a base
        record, float runs as byte copies, each varint as one or a few column operations."""
        offsets = np.cumsum([0] + [struct.calcsize("<" + code) for _, code in V1_SCALARS])
        base = [spec.constant if not spec.kind else 0 for spec in self.specs]
        self.base = np.frombuffer(V1_STRUCT.pack(*base), np.uint8)
        copies: list[list[int]] = []
        varints = []
        for number, spec in enumerate(self.specs):
            if not spec.kind:
                continue
            v1_at = int(offsets[number])
            wire_at = [self.positions[i][0] for i in spec.indices]
            if spec.kind == "f4":
                if (
                    copies
                    and copies[-1][0] + copies[-1][2] == v1_at
                    and (copies[-1][1] + copies[-1][2] == wire_at[0])
                ):
                    copies[-1][2] += 4
                else:
                    copies.append([v1_at, wire_at[0], 4])
                continue
            code = V1_SCALARS[number][1]
            varints.append((number, v1_at, np.dtype("<" + code), wire_at, spec))
        self.copies: list[tuple[int, ...]] = [tuple(copy) for copy in copies]
        self.varints = varints

    def heads(self, rows: np.ndarray) -> np.ndarray:
        """The v1 AcquisitionHeader array of a block of matching rows (uint8 ``[n, bytes]``,
        each row one header from its first byte)."""
        count = rows.shape[0]
        out = np.empty((count, self.base.size), np.uint8)
        out[...] = self.base
        for v1_at, source, nbytes in self.copies:
            out[:, v1_at : v1_at + nbytes] = rows[:, source : source + nbytes]
        for number, v1_at, dtype, wire_at, spec in self.varints:
            if len(wire_at) == 1 and spec.kind == "var":
                out[:, v1_at] = rows[:, wire_at[0]]
                continue
            raw = np.zeros(count, np.uint64)
            for n, byte_at in enumerate(wire_at):
                raw |= (rows[:, byte_at] & 0x7F).astype(np.uint64) << np.uint64(7 * n)
            value: np.ndarray = raw
            if spec.kind == "svar":
                value = (raw >> np.uint64(1)).astype(np.int64) ^ -(raw & np.uint64(1)).astype(
                    np.int64
                )
            if spec.check is not None:
                low, high = spec.check
                top, bottom = int(value.max()), int(value.min())
                if bottom < low or top > high:
                    raise MappingError(_overflow(number, top if top > high else bottom, low, high))
            out[:, v1_at : v1_at + dtype.itemsize] = (
                value.astype(dtype).reshape(count, 1).view(np.uint8)
            )
        return out.view(ACQUISITION_HEADER_DTYPE).reshape(count)


def _copy_patch(v1_at: int, wire_at: int, nbytes: int) -> Any:
    """Write floats into a v1 record: their bytes are the same little-endian float32."""

    def patch(record: bytearray, start: int, chunk: Any, pos: int) -> None:
        record[start + v1_at : start + v1_at + nbytes] = chunk[
            pos + wire_at : pos + wire_at + nbytes
        ]

    return patch


def _varint_patch(number: int, v1_at: int, dtype: np.dtype, wire_at: list[int], spec: Any) -> Any:
    """Write one varint field into a v1 record (a one-byte unsigned one is its low byte:
    the field's other bytes are zero in the record it is written over, same layout)."""
    if len(wire_at) == 1 and spec.kind == "var":
        (at,) = wire_at

        def low_byte(record: bytearray, start: int, chunk: Any, pos: int) -> None:
            record[start + v1_at] = chunk[pos + at]

        return low_byte
    layout = struct.Struct("<" + dtype.char)
    signed = spec.kind == "svar"
    check = spec.check

    def varint(record: bytearray, start: int, chunk: Any, pos: int) -> None:
        value = 0
        for n, at in enumerate(wire_at):
            value |= (chunk[pos + at] & 0x7F) << (7 * n)
        if signed:
            value = (value >> 1) ^ -(value & 1)
        if check is not None and not check[0] <= value <= check[1]:
            raise MappingError(_overflow(number, value, *check))
        layout.pack_into(record, start + v1_at, value)

    return varint


def _overflow(number: int, value: int, low: int, high: int) -> str:
    name = ".".join(str(part) for part in V1_SCALARS[number][0])
    return f"acquisition {name} is {value}; MRD v1 holds {low}..{high} there"


def learn_template(chunk: Any, start: int, end: int, notes: Notes) -> Template:
    """Scan the header at ``chunk[start:end]`` into a template (ShortRead if it is cut)."""
    scan = scan_header(chunk, start, end)
    return Template(scan, bytes(chunk[start : start + scan.end]), notes)


# ----------------------------------------------------------------------- runs
class RunLayout:
    """Whole acquisitions of one template back to back, each followed by the next one's
    block count and tag: a run of them decodes with numpy, a few calls per run.

    Parameters
    ----------
    template:
        The header layout.
    shape_bytes:
        The trajectory shape as it follows the samples (part of the layout).
    basis, tsamples:
        That shape.
    prefix:
        What precedes the next header: its block count (when each item is a block of its
        own) and its tag.
    """

    def __init__(
        self, template: Template, shape_bytes: bytes, basis: int, tsamples: int, prefix: bytes
    ):
        self.template = template
        self.basis = basis
        data_at = template.size
        shape_at = data_at + 8 * template.coils * template.samples
        traj_at = shape_at + len(shape_bytes)
        prefix_at = traj_at + 4 * basis * tsamples
        self.itemsize = prefix_at + len(prefix)
        self.body = prefix_at
        """Bytes of one acquisition (without the next one's prefix)."""
        self.dtype = np.dtype(
            {
                "names": ["data", "traj"],
                "formats": [(_C8, (template.coils, template.samples)), (_F4, (basis, tsamples))],
                "offsets": [data_at, traj_at],
                "itemsize": self.itemsize,
            }
        )
        expect = bytearray(self.itemsize)
        mask = bytearray(self.itemsize)
        expect[: template.size] = template.raw
        mask[: template.size] = template.mask.to_bytes(template.size, "little")
        expect[shape_at:traj_at] = shape_bytes
        mask[shape_at:traj_at] = b"\xff" * len(shape_bytes)
        expect[prefix_at:] = prefix
        mask[prefix_at:] = b"\xff" * len(prefix)
        mask_array = np.frombuffer(bytes(mask), np.uint8)
        self.columns = np.flatnonzero(mask_array)
        self.column_mask = mask_array[self.columns]
        self.column_expect = np.frombuffer(bytes(expect), np.uint8)[self.columns] & self.column_mask
        self._empty_traj = np.zeros((template.samples, 0), _F4)

    def count(self, chunk: Any, start: int, end: int, limit: int) -> int:
        """How many records from ``start`` follow the layout: the first always does; the
        last one's trailing prefix is not required (it belongs to what follows)."""
        available = min((end - start) // self.itemsize, limit)
        if available < 2:
            return available
        rows = np.frombuffer(chunk, np.uint8, available * self.itemsize, start).reshape(
            available, self.itemsize
        )
        good = ((rows[:, self.columns] & self.column_mask) == self.column_expect).all(axis=1)
        # records 0..i-1 whole (header and the next prefix) make acquisitions 0..i-1 sure;
        # the first is sure by construction even when what follows it is something else
        bad = np.flatnonzero(~good)
        return available if not bad.size else max(1, int(bad[0]))

    def decode(self, chunk: Any, start: int, count: int) -> list[Acquisition]:
        """``count`` acquisitions from ``start`` (checked by :meth:`count`)."""
        rows = np.frombuffer(chunk, np.uint8, count * self.itemsize, start).reshape(
            count, self.itemsize
        )
        heads = self.template.heads(rows)
        records = np.frombuffer(chunk, self.dtype, count, start)
        if self.basis:
            heads["trajectory_dimensions"] = self.basis
            trajs: Any = [np.ascontiguousarray(t.T) for t in records["traj"]]
        else:
            trajs = repeat(self._empty_traj, count)
        return list(map(Acquisition, heads, trajs, records["data"]))


# ------------------------------------------------------------------- encoding
_V1_FIELD_AT = {key: n for n, (key, _) in enumerate(V1_SCALARS)}
_GEOMETRY_BYTES = (
    int(ACQUISITION_HEADER_DTYPE.fields["position"][1]),  # type: ignore[index]
    int(ACQUISITION_HEADER_DTYPE.fields["user_float"][1]),  # type: ignore[index]
)


def _at(*key: Any) -> int:
    return _V1_FIELD_AT[key]


_SCALAR = {
    "flags": _at("flags"),
    "measurement_uid": _at("measurement_uid"),
    "scan_counter": _at("scan_counter"),
    "active_channels": _at("active_channels"),
    "available_channels": _at("available_channels"),
    "number_of_samples": _at("number_of_samples"),
    "discard_pre": _at("discard_pre"),
    "discard_post": _at("discard_post"),
    "center_sample": _at("center_sample"),
    "encoding_space_ref": _at("encoding_space_ref"),
    "acquisition_time_stamp": _at("acquisition_time_stamp"),
    "sample_time_us": _at("sample_time_us"),
}
_COUNTER_AT = [_at("idx", v1) for _, v1 in COUNTERS]
_USER_INT_AT = _at("user_int", 0)
_DROPPED_RANGES = {
    "physiology_time_stamp": (_at("physiology_time_stamp", 0), 3),
    "idx.user": (_at("idx", "user", 0), 8),
    "channel_mask": (_at("channel_mask", 0), 16),
    "acquisition_time_stamp": (_SCALAR["acquisition_time_stamp"], 1),
    "sample_time_us": (_SCALAR["sample_time_us"], 1),
}
_CHANNEL_ORDERS: dict[int, bytes] = {}
_EMPTY_SHAPE = b"\x00\x00"


def _channel_order(channels: int) -> bytes:
    cached = _CHANNEL_ORDERS.get(channels)
    if cached is None:
        cached = uvarint_bytes(channels) + b"".join(map(uvarint_bytes, range(channels)))
        _CHANNEL_ORDERS[channels] = cached
    return cached


def _optional(value: int) -> bytes:
    return b"\x01" + uvarint_bytes(value)


def acquisition_buffers(acq: Acquisition, notes: Notes) -> list[bytes | memoryview]:
    """A v1 ACQUISITION as one v2 stream item (block count 1, tag, value), by the MRD
    project's mapping, without building the v2 value first."""
    raw = acq.head.tobytes()
    values = V1_STRUCT.unpack(raw)
    for name, (first, count) in _DROPPED_RANGES.items():
        if any(values[first : first + count]):
            notes.field(
                f"acquisition {name}",
                f"the MRD v2 mapping leaves acquisition {name} out (not carried)",
            )
    if values[0] != 1:
        _version_note("acquisition", notes)
    channels = values[_SCALAR["active_channels"]]
    if values[_SCALAR["available_channels"]] != channels:
        notes.field(
            "acquisition available_channels",
            "the MRD v2 mapping leaves acquisition available_channels out (v1 reads it back "
            "as the active channels)",
        )
    data = np.ascontiguousarray(acq.data, dtype=_C8)
    traj = acq.traj
    if data.shape != (channels, values[_SCALAR["number_of_samples"]]):
        raise MappingError(f"acquisition data shape {data.shape} does not match its header")
    zigzag = [(v << 1) ^ (v >> 31) for v in values[_USER_INT_AT : _USER_INT_AT + 8]]
    geometry_at, user_float_at = _GEOMETRY_BYTES
    head = b"".join(
        (
            b"\x01\x00",
            uvarint_bytes(values[_SCALAR["flags"]]),
            *(_optional(values[at]) for at in _COUNTER_AT),
            b"\x00",
            uvarint_bytes(values[_SCALAR["measurement_uid"]]),
            _optional(values[_SCALAR["scan_counter"]]),
            b"\x00\x00",
            _channel_order(channels),
            _optional(values[_SCALAR["discard_pre"]]),
            _optional(values[_SCALAR["discard_post"]]),
            _optional(values[_SCALAR["center_sample"]]),
            _optional(values[_SCALAR["encoding_space_ref"]]),
            b"\x00",
            raw[geometry_at : geometry_at + 60],
            b"\x08",
            b"".join(map(uvarint_bytes, zigzag)),
            b"\x08",
            raw[user_float_at : user_float_at + 32],
            uvarint_bytes(data.shape[0]),
            uvarint_bytes(data.shape[1]),
        )
    )
    if traj.size:
        v2traj = np.ascontiguousarray(np.asarray(traj, _F4).T)
        shape = uvarint_bytes(v2traj.shape[0]) + uvarint_bytes(v2traj.shape[1])
        tail: list[bytes | memoryview] = [shape, v2traj.tobytes()]
    else:
        tail = [_EMPTY_SHAPE]
    if data.nbytes >= 16 << 10:
        return [head, memoryview(data).cast("B"), *tail]  # type: ignore[arg-type]
    return [head + data.tobytes() + b"".join(tail)]
