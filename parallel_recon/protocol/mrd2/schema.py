"""The MRD v2 protocol as data: the yardl schema every stream carries, parsed into types.

An MRD v2 stream starts with ``yardl``, an int32 format version and the protocol's JSON
schema (a length-prefixed string), and readers compare that schema with their own byte for
byte.  ``schema.json`` beside this module is the schema of MRD 2.1 (what mrd-python 2.1.x
and current Gadgetron write); every decoder and encoder in this package is derived from it,
so a layout fact lives in exactly one place.

Types are small frozen dataclasses; generic types (``Image<T>``) are resolved once into
concrete ones, so the codec never sees a type parameter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Union

from . import MAGIC

__all__ = [
    "FORMAT_VERSION",
    "KNOWN_SCHEMAS",
    "MAGIC",
    "SCHEMA_TEXT",
    "SCHEMA_VERSION",
    "ArrayType",
    "EnumType",
    "MapType",
    "OptionalType",
    "Primitive",
    "RecordType",
    "StreamType",
    "Type",
    "UnionType",
    "VectorType",
    "describe_schema",
    "named",
    "protocol_steps",
    "stream_item_cases",
]

"""The first five bytes of every MRD v2 binary stream."""

FORMAT_VERSION = 1
"""The yardl binary format version (int32 after the magic)."""

SCHEMA_VERSION = "MRD 2.1"
"""The protocol version whose schema this package implements."""

SCHEMA_TEXT: str = Path(__file__).with_name("schema.json").read_text("utf-8")
"""The schema text exactly as MRD 2.1 streams carry it (read beside the module: importing
importlib.resources would cost every v2 run 8 ms)."""

KNOWN_SCHEMAS: dict[str, str] = {
    "d0d88a50b44c79000ef1f7ab4e9990986c74ee5ffdb8938dade689000d0089c8": "MRD 2.0",
    "35728e5556269a758e1f25926979e7c56041cb01d3d75e69b46e38b5f5a12901": "MRD 2.1",
    "20500d6722fda540af31e4456e851a4a4d8bce7eb933387d4fb2aad054afae67": "MRD 2.2.0",
    "ed0d873b34159caeceb2e7d0b786b36d7ca8c59e499f390d46fc11f673a217e8": "MRD 2.2.1",
}
"""SHA-256 of the schema text of each MRD release -> its name (to name a schema we refuse)."""


@dataclass(frozen=True)
class Primitive:
    """A scalar: ``uint32``, ``float32``, ``string``, ``date``..."""

    name: str


@dataclass(frozen=True)
class OptionalType:
    """``[null, T]``: one byte (0 absent, 1 present), then the value."""

    item: Type


@dataclass(frozen=True)
class VectorType:
    """A list: its length as a varint (none when ``length`` is fixed), then the items."""

    item: Type
    length: int | None = None


@dataclass(frozen=True)
class ArrayType:
    """An n-dimensional array.

    ``shape`` fixed (nothing on the wire but the elements), or ``ndims`` known (the shape as
    ``ndims`` varints), or neither (the number of dimensions, then the shape).
    """

    item: Type
    shape: tuple[int, ...] | None = None
    ndims: int | None = None


@dataclass(frozen=True)
class MapType:
    """A dictionary: its length as a varint, then key, value pairs."""

    key: Type
    value: Type


@dataclass(frozen=True)
class UnionType:
    """One of several tagged cases: one byte (the case index), then the value."""

    cases: tuple[tuple[str, Type], ...]


@dataclass(frozen=True)
class EnumType:
    """Named integers (``flags`` too): the base integer on the wire."""

    name: str
    base: str
    values: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class RecordType:
    """Fields one after another, no tags, no padding."""

    name: str
    fields: tuple[tuple[str, Type], ...]


@dataclass(frozen=True)
class StreamType:
    """Blocks of items: a varint count, that many items; a count of 0 ends the stream."""

    item: Type


Type = Union[  # noqa: UP007 (a runtime alias used in dataclass annotations)
    Primitive,
    OptionalType,
    VectorType,
    ArrayType,
    MapType,
    UnionType,
    EnumType,
    RecordType,
    StreamType,
]


class _Resolver:
    """Turns the schema's JSON type expressions into :data:`Type` values."""

    def __init__(self, schema: dict[str, Any]):
        self.definitions: dict[str, dict[str, Any]] = {}
        for definition in schema["types"]:
            self.definitions.setdefault(definition["name"], definition)
        self.namespace = schema["protocol"]["name"]
        self._done: dict[tuple[str, tuple[Type, ...]], Type] = {}

    def named(self, name: str, arguments: tuple[Type, ...] = ()) -> Type:
        key = (name, arguments)
        if key in self._done:
            return self._done[key]
        definition = self.definitions[name]
        env = dict(zip(definition.get("typeParameters", []), arguments, strict=True))
        if "fields" in definition:
            fields = tuple((f["name"], self.expr(f["type"], env)) for f in definition["fields"])
            resolved: Type = RecordType(name, fields)
        elif "values" in definition:
            values = tuple((v["symbol"], int(v["value"])) for v in definition["values"])
            resolved = EnumType(name, definition.get("base", "int32"), values)
        else:
            resolved = self.expr(definition["type"], env)
        self._done[key] = resolved
        return resolved

    def expr(self, expr: Any, env: dict[str, Type]) -> Type:
        if isinstance(expr, str):
            if expr in env:
                return env[expr]
            prefix = self.namespace + "."
            if expr.startswith(prefix):
                return self.named(expr[len(prefix) :])
            return Primitive(expr)
        if isinstance(expr, list):
            return self._union(expr, env)
        if "vector" in expr:
            vector = expr["vector"]
            return VectorType(self.expr(vector["items"], env), vector.get("length"))
        if "array" in expr:
            return self._array(expr["array"], env)
        if "map" in expr:
            mapping = expr["map"]
            return MapType(self.expr(mapping["keys"], env), self.expr(mapping["values"], env))
        if "stream" in expr:
            return StreamType(self.expr(expr["stream"]["items"], env))
        arguments = tuple(self.expr(a, env) for a in expr.get("typeArguments", []))
        return self.named(expr["name"].split(".", 1)[1], arguments)

    def _union(self, cases: list[Any], env: dict[str, Type]) -> Type:
        if len(cases) == 2 and cases[0] is None:
            return OptionalType(self.expr(cases[1], env))
        if any(case is None for case in cases):
            raise ValueError("unions with null besides [null, T] are not part of MRD 2.1")
        return UnionType(tuple((c["tag"], self.expr(c["type"], env)) for c in cases))

    def _array(self, array: dict[str, Any], env: dict[str, Type]) -> ArrayType:
        item = self.expr(array["items"], env)
        dims = array.get("dimensions")
        if dims is None:
            return ArrayType(item)
        if isinstance(dims, int):
            return ArrayType(item, ndims=dims)
        if all("length" in d for d in dims):
            return ArrayType(item, shape=tuple(int(d["length"]) for d in dims))
        return ArrayType(item, ndims=len(dims))


@cache
def _resolver() -> _Resolver:
    return _Resolver(json.loads(SCHEMA_TEXT))


def named(name: str) -> Type:
    """The resolved type called ``name`` in the schema (``"AcquisitionHeader"``)."""
    return _resolver().named(name)


def protocol_steps() -> tuple[tuple[str, Type], ...]:
    """The protocol's steps in order: ``header`` (optional Header), ``data`` (the stream)."""
    resolver = _resolver()
    protocol = json.loads(SCHEMA_TEXT)["protocol"]
    return tuple((step["name"], resolver.expr(step["type"], {})) for step in protocol["sequence"])


def stream_item_cases() -> tuple[tuple[str, Type], ...]:
    """The stream's item cases in tag order (``Acquisition`` is tag 0)."""
    item = named("StreamItem")
    assert isinstance(item, UnionType)
    return item.cases


def describe_schema(text: str) -> str:
    """A name for the schema ``text``: its MRD release when known, else what it says it is."""
    import hashlib  # only a schema that differs is named by digest

    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if digest in KNOWN_SCHEMAS:
        return f"the schema of {KNOWN_SCHEMAS[digest]}"
    try:
        parsed = json.loads(text)
        protocol = str(parsed["protocol"]["name"])
    except (ValueError, KeyError, TypeError):
        return f"a schema that is not yardl JSON (sha256 {digest[:12]})"
    return f"an unknown schema of protocol {protocol!r} (sha256 {digest[:12]})"
