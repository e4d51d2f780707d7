"""MRD v2 acquisitions at stream speed: header layouts learned once, then read by template.

A v2 acquisition header is ~45 varints, optionals and floats: decoding it field by field in
Python would cost more than reading its samples.  But the readouts of a scan share their
*layout* (which optionals are present, vector lengths, how many bytes each varint takes,
the data shape), so the first header of a layout is scanned field by field
(:mod:`.scan`) and becomes a :class:`Template`; every later header is checked against it
with one big-integer mask (structure bytes equal, varint continuation bits equal) and
decoded into an MRD v1 header record: the previous record with the changed fields written
again.  Runs of small readouts that sit whole in the read-ahead buffer are decoded with
numpy, a few calls per run (:class:`RunLayout`, as the v1 reader does in :mod:`..runs`).

The v1 header is built by the MRD project's mapping (:mod:`.mapping`): absent optionals
become 0, vectors fill the fixed v1 arrays, sizes come from the data and trajectory shapes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np

from ..layout import ACQUISITION_HEADER_DTYPE
from ..messages import Acquisition
from .mapping import MappingError
from .notes import Notes
from .scan import CAPACITY, SOURCES, V1_SCALARS, V1_STRUCT, Scan, scan_header

__all__ = ["RunLayout", "Template", "learn_template"]

_C8 = np.dtype("<c8")
_F4 = np.dtype("<f4")

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

    def __init__(self, scan: Scan, raw: bytes, notes: Notes):
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
        scan: Scan, place: dict[tuple[str, int | None], tuple[str, tuple[int, ...]]], notes: Notes
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
            source = SOURCES.get(key)
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
        for path, capacity in CAPACITY.items():
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
