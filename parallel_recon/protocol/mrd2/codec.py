"""Decoding and encoding any MRD v2 type, derived from the schema.

Each :data:`~.schema.Type` compiles once into a decoder (``reader -> value``) and an
encoder (``(out, value) -> None``).  Values are plain Python data, named as in the schema:

- records are dicts (``{"flags": 64, "idx": {...}, ...}``), optionals ``None`` or the value,
  vectors lists, maps dicts, unions ``(tag, value)`` pairs, enums and flags ints;
- numbers are ints, floats and complex numbers; ``date`` is days since 1970-01-01,
  ``time`` nanoseconds since midnight, both ints;
- arrays are numpy arrays (numbers in their natural dtype; records and maps in object
  arrays).

This path serves the header, images, waveforms, arrays and the intermediate items, where a
call per field is cheap next to the payload; acquisitions have their own bulk decoder
(:mod:`.acquisitions`).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np

from .schema import (
    ArrayType,
    EnumType,
    MapType,
    OptionalType,
    Primitive,
    RecordType,
    StreamType,
    Type,
    UnionType,
    VectorType,
)
from .wire import WireReader

__all__ = [
    "FIXED_DTYPES",
    "VARINT_DTYPES",
    "Decoder",
    "Encoder",
    "Out",
    "decoder",
    "encode_value",
    "encoder",
    "uvarint_bytes",
    "varint_array_bytes",
]

Decoder = Callable[[WireReader], Any]
Encoder = Callable[["Out", Any], None]

FIXED_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "complexfloat32": np.dtype("<c8"),
    "complexfloat64": np.dtype("<c16"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
    "bool": np.dtype("?"),
}
"""Primitives written as their raw little-endian bytes."""

VARINT_DTYPES: dict[str, tuple[bool, np.dtype]] = {
    "int16": (True, np.dtype("<i2")),
    "uint16": (False, np.dtype("<u2")),
    "int32": (True, np.dtype("<i4")),
    "uint32": (False, np.dtype("<u4")),
    "int64": (True, np.dtype("<i8")),
    "uint64": (False, np.dtype("<u8")),
    "size": (False, np.dtype("<u8")),
    "date": (True, np.dtype("<i4")),
    "time": (True, np.dtype("<i8")),
    "datetime": (True, np.dtype("<i8")),
}
"""Primitives written as (zig-zag) varints -> (signed, numpy dtype of their range)."""

_STRUCTS = {
    "float32": struct.Struct("<f"),
    "float64": struct.Struct("<d"),
    "complexfloat32": struct.Struct("<ff"),
    "complexfloat64": struct.Struct("<dd"),
    "int8": struct.Struct("<b"),
    "uint8": struct.Struct("<B"),
    "bool": struct.Struct("<?"),
}
_SMALL = [bytes([value]) for value in range(128)]
_BIG_BYTES = 16 << 10
"""Array payloads at least this large are passed on as zero-copy views."""


def uvarint_bytes(value: int) -> bytes:
    """``value`` (>= 0) as an unsigned LEB128 varint."""
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def varint_array_bytes(values: np.ndarray, signed: bool) -> bytes:
    """An integer array as one varint per element (C order), without a loop per element."""
    flat = np.ascontiguousarray(values).reshape(-1).astype(np.int64 if signed else np.uint64)
    if signed:
        flat = ((flat << 1) ^ (flat >> 63)).view(np.uint64)
    if not flat.size or int(flat.max()) < 0x80:
        return flat.astype(np.uint8).tobytes()
    lengths = np.ones(flat.size, np.int64)
    for bits in range(7, 64, 7):
        lengths += flat >= np.uint64(1 << bits)
    starts = np.cumsum(lengths) - lengths
    out = np.empty(int(lengths.sum()), np.uint8)
    for k in range(int(lengths.max())):
        has = lengths > k
        septet = (flat[has] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = (lengths[has] > k + 1).astype(np.uint64) << np.uint64(7)
        out[starts[has] + k] = (septet | more).astype(np.uint8)
    return out.tobytes()


class Out:
    """Encoded bytes as a list of buffers: small pieces joined, large arrays as views."""

    __slots__ = ("buf", "parts")

    def __init__(self) -> None:
        self.parts: list[bytes | memoryview] = []
        self.buf = bytearray()

    def view(self, data: memoryview) -> None:
        """Append a large buffer without copying it."""
        if self.buf:
            self.parts.append(bytes(self.buf))
            self.buf = bytearray()
        self.parts.append(data)

    def buffers(self) -> list[bytes | memoryview]:
        """Everything appended, in order."""
        if self.buf:
            self.parts.append(bytes(self.buf))
            self.buf = bytearray()
        return self.parts

    def getvalue(self) -> bytes:
        """Everything appended, as one bytes object."""
        return b"".join(self.buffers())


# ------------------------------------------------------------------ decoding
def _varint_decoder(name: str, what: str) -> Decoder:
    signed, dtype = VARINT_DTYPES[name]
    info = np.iinfo(dtype)
    low, high = int(info.min), int(info.max)

    def decode(reader: WireReader) -> int:
        value = reader.svarint(what) if signed else reader.uvarint(what)
        if value < low or value > high:
            raise reader.error(f"expected {what} of type {name} ({low}..{high}), found {value}")
        return value

    return decode


def _primitive_decoder(kind: Primitive, what: str) -> Decoder:
    name = kind.name
    if name in VARINT_DTYPES:
        return _varint_decoder(name, what)
    if name == "string":
        return lambda reader: reader.text(what, reader.limits.max_string_bytes)
    layout = _STRUCTS[name]
    if name.startswith("complex"):
        return lambda reader: complex(*reader.fixed(layout, what))
    return lambda reader: reader.fixed(layout, what)[0]


def _optional_decoder(kind: OptionalType, what: str) -> Decoder:
    inner = decoder(kind.item, what)

    def decode(reader: WireReader) -> Any:
        flag = reader.byte(what)
        if flag == 1:
            return inner(reader)
        if flag == 0:
            return None
        raise reader.error(f"expected 0 or 1 as {what}'s presence flag, found {flag}")

    return decode


def _count(reader: WireReader, what: str) -> int:
    """A vector or map length, checked: every element takes at least one byte."""
    count = reader.uvarint(f"{what} length")
    if count > reader.limits.max_payload_bytes:
        raise reader.error(
            f"expected {what} of at most {reader.limits.max_payload_bytes} elements, found a "
            f"length of {count} (corrupt stream?)"
        )
    return count


def _vector_decoder(kind: VectorType, what: str) -> Decoder:
    inner = decoder(kind.item, what)
    fixed = kind.length

    def decode(reader: WireReader) -> list[Any]:
        count = fixed if fixed is not None else _count(reader, what)
        return [inner(reader) for _ in range(count)]

    return decode


def _map_decoder(kind: MapType, what: str) -> Decoder:
    key = decoder(kind.key, f"{what} key")
    value = decoder(kind.value, what)

    def decode(reader: WireReader) -> dict[Any, Any]:
        out = {}
        for _ in range(_count(reader, what)):
            name = key(reader)
            out[name] = value(reader)
        return out

    return decode


def _union_decoder(kind: UnionType, what: str) -> Decoder:
    names = [tag for tag, _ in kind.cases]
    cases = [(tag, decoder(item, tag)) for tag, item in kind.cases]
    listed = ", ".join(f"{i} ({tag})" for i, tag in enumerate(names))

    def decode(reader: WireReader) -> tuple[str, Any]:
        index = reader.byte(f"{what} tag")
        if index >= len(cases):
            raise reader.error(f"unknown {what} tag: expected one of {listed}, found {index}")
        tag, inner = cases[index]
        return tag, inner(reader)

    return decode


def _record_decoder(kind: RecordType, what: str) -> Decoder:
    fields = [(name, decoder(item, f"{kind.name}.{name}")) for name, item in kind.fields]

    def decode(reader: WireReader) -> dict[str, Any]:
        return {name: inner(reader) for name, inner in fields}

    return decode


def _array_shape(kind: ArrayType, reader: WireReader, what: str) -> tuple[int, ...]:
    if kind.shape is not None:
        return kind.shape
    if kind.ndims is not None:
        return reader.dimensions(kind.ndims, what)
    ndims = reader.uvarint(f"{what} rank")
    if ndims > reader.limits.max_ndarray_dims:
        raise reader.error(
            f"expected {what} of at most {reader.limits.max_ndarray_dims} dimensions, found {ndims}"
        )
    return reader.dimensions(ndims, what)


def _array_decoder(kind: ArrayType, what: str) -> Decoder:
    item = kind.item
    if isinstance(item, Primitive) and item.name in FIXED_DTYPES:
        dtype = FIXED_DTYPES[item.name]
        return lambda reader: reader.read_array(dtype, _array_shape(kind, reader, what), what)
    if isinstance(item, Primitive) and item.name in VARINT_DTYPES:
        signed, wide = VARINT_DTYPES[item.name]
        return lambda reader: reader.varint_array(
            wide, _array_shape(kind, reader, what), signed, what
        )
    inner = decoder(item, what)

    def decode(reader: WireReader) -> np.ndarray:
        shape = _array_shape(kind, reader, what)
        count = math.prod(shape)
        if count > reader.limits.max_payload_bytes:
            raise reader.error(f"expected {what} with fewer elements, found shape {list(shape)}")
        out = np.empty(count, dtype=object)
        for i in range(count):
            out[i] = inner(reader)
        return out.reshape(shape)

    return decode


def _enum_decoder(kind: EnumType, what: str) -> Decoder:
    return _varint_decoder(kind.base, what)


@cache
def decoder(kind: Type, what: str = "value") -> Decoder:
    """The decoder of ``kind`` (``what`` names it in error messages)."""
    makers: dict[type, Callable[[Any, str], Decoder]] = {
        Primitive: _primitive_decoder,
        OptionalType: _optional_decoder,
        VectorType: _vector_decoder,
        MapType: _map_decoder,
        UnionType: _union_decoder,
        RecordType: _record_decoder,
        ArrayType: _array_decoder,
        EnumType: _enum_decoder,
    }
    if isinstance(kind, StreamType):
        raise TypeError("streams are read item by item by the stream reader")
    return makers[type(kind)](kind, what)


# ------------------------------------------------------------------ encoding
def _varint_encoder(name: str) -> Encoder:
    signed, dtype = VARINT_DTYPES[name]
    info = np.iinfo(dtype)
    low, high = int(info.min), int(info.max)

    def encode(out: Out, value: Any) -> None:
        number = int(value)
        if number < low or number > high:
            raise ValueError(f"{number} is outside the range of {name} ({low}..{high})")
        out.buf += uvarint_bytes(_zigzag(number) if signed else number)

    return encode


def _primitive_encoder(kind: Primitive) -> Encoder:
    name = kind.name
    if name in VARINT_DTYPES:
        return _varint_encoder(name)
    if name == "string":

        def encode_text(out: Out, value: Any) -> None:
            raw = str(value).encode("utf-8")
            out.buf += uvarint_bytes(len(raw))
            out.buf += raw

        return encode_text
    layout = _STRUCTS[name]
    if name.startswith("complex"):

        def encode_complex(out: Out, value: Any) -> None:
            number = complex(value)
            out.buf += layout.pack(number.real, number.imag)

        return encode_complex
    return lambda out, value: out.buf.extend(layout.pack(value))


def _optional_encoder(kind: OptionalType) -> Encoder:
    inner = encoder(kind.item)

    def encode(out: Out, value: Any) -> None:
        if value is None:
            out.buf.append(0)
        else:
            out.buf.append(1)
            inner(out, value)

    return encode


def _vector_encoder(kind: VectorType) -> Encoder:
    inner = encoder(kind.item)
    fixed = kind.length

    def encode(out: Out, value: Any) -> None:
        items = list(value)
        if fixed is None:
            out.buf += uvarint_bytes(len(items))
        elif len(items) != fixed:
            raise ValueError(f"expected a vector of {fixed} items, got {len(items)}")
        for item in items:
            inner(out, item)

    return encode


def _map_encoder(kind: MapType) -> Encoder:
    key, inner = encoder(kind.key), encoder(kind.value)

    def encode(out: Out, value: Any) -> None:
        out.buf += uvarint_bytes(len(value))
        for name, item in value.items():
            key(out, name)
            inner(out, item)

    return encode


def _union_encoder(kind: UnionType) -> Encoder:
    cases = {tag: (index, encoder(item)) for index, (tag, item) in enumerate(kind.cases)}

    def encode(out: Out, value: Any) -> None:
        tag, payload = value
        try:
            index, inner = cases[tag]
        except KeyError:
            raise ValueError(f"{tag!r} is not a case of this union ({', '.join(cases)})") from None
        out.buf.append(index)
        inner(out, payload)

    return encode


def _record_encoder(kind: RecordType) -> Encoder:
    fields = [(name, encoder(item)) for name, item in kind.fields]

    def encode(out: Out, value: Any) -> None:
        for name, inner in fields:
            try:
                item = value[name]
            except KeyError:
                raise ValueError(f"{kind.name} value lacks its field {name!r}") from None
            inner(out, item)

    return encode


def _checked_shape(kind: ArrayType, array: np.ndarray, out: Out) -> None:
    if kind.shape is not None:
        if array.shape != kind.shape:
            raise ValueError(f"expected an array of shape {kind.shape}, got {array.shape}")
        return
    if kind.ndims is not None:
        if array.ndim != kind.ndims:
            raise ValueError(f"expected an array of {kind.ndims} dimensions, got {array.ndim}")
    else:
        out.buf += uvarint_bytes(array.ndim)
    for size in array.shape:
        out.buf += uvarint_bytes(size)


def _array_encoder(kind: ArrayType) -> Encoder:
    item = kind.item
    if isinstance(item, Primitive) and item.name in FIXED_DTYPES:
        dtype = FIXED_DTYPES[item.name]

        def encode_fixed(out: Out, value: Any) -> None:
            array = np.asarray(value, dtype=dtype)  # (ascontiguousarray would make 0-d 1-d)
            if not array.flags.c_contiguous:
                array = array.copy(order="C")
            _checked_shape(kind, array, out)
            if array.nbytes >= _BIG_BYTES:
                out.view(memoryview(array).cast("B"))  # type: ignore[arg-type]
            else:
                out.buf += array.tobytes()

        return encode_fixed
    if isinstance(item, Primitive) and item.name in VARINT_DTYPES:
        signed, wide = VARINT_DTYPES[item.name]
        info = np.iinfo(wide)

        def encode_varints(out: Out, value: Any) -> None:
            array = np.asarray(value)
            _checked_shape(kind, array, out)
            if array.size and (array.min() < info.min or array.max() > info.max):
                raise ValueError(f"array values outside the range of {item.name}")
            out.buf += varint_array_bytes(array, signed)

        return encode_varints
    inner = encoder(item)

    def encode(out: Out, value: Any) -> None:
        array = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value
        _checked_shape(kind, array, out)
        for element in array.flat:
            inner(out, element)

    return encode


def _enum_encoder(kind: EnumType) -> Encoder:
    return _varint_encoder(kind.base)


@cache
def encoder(kind: Type) -> Encoder:
    """The encoder of ``kind``."""
    makers: dict[type, Callable[[Any], Encoder]] = {
        Primitive: _primitive_encoder,
        OptionalType: _optional_encoder,
        VectorType: _vector_encoder,
        MapType: _map_encoder,
        UnionType: _union_encoder,
        RecordType: _record_encoder,
        ArrayType: _array_encoder,
        EnumType: _enum_encoder,
    }
    if isinstance(kind, StreamType):
        raise TypeError("streams are written item by item by the stream writer")
    return makers[type(kind)](kind)


def encode_value(kind: Type, value: Any) -> bytes:
    """``value`` of ``kind`` as bytes."""
    out = Out()
    encoder(kind)(out, value)
    return out.getvalue()
