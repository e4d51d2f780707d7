"""MRD v2 acquisition headers, field by field: the ground the templates stand on.

The v1 AcquisitionHeader as flat scalars (in byte order, with the v2 value each one comes
from, by the MRD project's mapping: :mod:`.mapping`), the v2 AcquisitionHeader as leaves
(taken from the schema), and :func:`scan_header`, which reads one v2 header from a buffer
and says which of its bytes are layout and which are values.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..layout import ACQUISITION_HEADER_DTYPE
from .mapping import ACQUISITION_OPTIONALS, ACQUISITION_VECTORS, COUNTERS, GEOMETRY
from .schema import ArrayType, EnumType, OptionalType, Primitive, RecordType, VectorType, named

__all__ = [
    "ACQUISITION_TAG",
    "CAPACITY",
    "LEAVES",
    "SOURCES",
    "V1_SCALARS",
    "V1_STRUCT",
    "Scan",
    "ShortRead",
    "scan_header",
    "varint_at",
]

ACQUISITION_TAG = 0


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


SOURCES = _v1_sources()
CAPACITY = {
    v2: ACQUISITION_HEADER_DTYPE.fields[v1][0].shape[0]  # type: ignore[index]
    for v2, v1, _ in ACQUISITION_VECTORS
}
CAPACITY["idx.user"] = 8


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
class Scan:
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


def scan_header(chunk: Any, start: int, end: int) -> Scan:
    """Read the header and the data shape at ``chunk[start:end]`` field by field.

    Raises ShortRead when they do not fit, ValueError for bytes no header has.
    """
    scan = Scan()
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
