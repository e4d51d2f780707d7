"""Helpers of the MRD v2 tests: random values of any schema type, streams of one item,
and a comparison of our decoded values with mrd-python's objects.

The oracle is mrd-python 2.1.x (``mrd.BinaryMrdReader`` / ``mrd.BinaryMrdWriter``): what we
write must read there, and what it writes back must be our bytes; what it writes must
decode here to values equal to its objects.
"""

from __future__ import annotations

import datetime
import io
from typing import Any

import ismrmrd
import mrd
import numpy as np

from parallel_recon.protocol import Acquisition, Image
from parallel_recon.protocol.mrd2.codec import FIXED_DTYPES, VARINT_DTYPES
from parallel_recon.protocol.mrd2.reader import Mrd2StreamReader
from parallel_recon.protocol.mrd2.schema import (
    ArrayType,
    EnumType,
    MapType,
    OptionalType,
    Primitive,
    RecordType,
    Type,
    UnionType,
    VectorType,
)
from parallel_recon.protocol.mrd2.writer import item_buffers, prologue_bytes

EPOCH = datetime.date(1970, 1, 1)
_DAY_NS = 86_400 * 10**9


# ------------------------------------------------------------ random values
def _integer(rng: np.random.Generator, low: int, high: int) -> int:
    """Small values mostly (one-byte varints), sometimes the extremes or anything."""
    choice = rng.integers(4)
    if choice == 0:
        return int(rng.integers(max(low, 0), min(high, 127) + 1))
    if choice == 1:
        return low if rng.random() < 0.5 else high
    return int(rng.integers(low, high, endpoint=True, dtype=np.int64 if low < 0 else np.uint64))


def random_value(kind: Type, rng: np.random.Generator, depth: int = 0) -> Any:
    """A random value of ``kind`` as our codec represents it (dicts, lists, arrays)."""
    if isinstance(kind, Primitive):
        return _random_primitive(kind.name, rng)
    if isinstance(kind, EnumType):
        if kind.base == "uint64":  # flags: any set of the named bits
            return int(sum(value for _, value in kind.values if rng.random() < 0.3))
        return int(rng.choice([value for _, value in kind.values]))
    if isinstance(kind, OptionalType):
        return None if rng.random() < 0.4 else random_value(kind.item, rng, depth)
    if isinstance(kind, VectorType):
        count = kind.length if kind.length is not None else int(rng.integers(0, 3 if depth else 4))
        return [random_value(kind.item, rng, depth + 1) for _ in range(count)]
    if isinstance(kind, MapType):
        return {
            f"key{n}-{rng.integers(100)}": random_value(kind.value, rng, depth + 1)
            for n in range(int(rng.integers(0, 3)))
        }
    if isinstance(kind, UnionType):
        tag, item = kind.cases[int(rng.integers(len(kind.cases)))]
        return (tag, random_value(item, rng, depth + 1))
    if isinstance(kind, RecordType):
        return {name: random_value(item, rng, depth + 1) for name, item in kind.fields}
    assert isinstance(kind, ArrayType)
    return _random_array(kind, rng, depth)


def _random_primitive(name: str, rng: np.random.Generator) -> Any:
    if name == "string":
        return "".join(rng.choice(list("abcé€ \n<&>\"'"), size=int(rng.integers(0, 8))))
    if name == "date":
        return int(rng.integers(-700_000, 2_900_000))
    if name == "time":
        return int(rng.integers(0, _DAY_NS))
    if name in VARINT_DTYPES:
        info = np.iinfo(VARINT_DTYPES[name][1])
        return _integer(rng, int(info.min), int(info.max))
    if name.startswith("complex"):
        return complex(float(np.float32(rng.normal())), float(np.float32(rng.normal())))
    value = rng.normal() * 10 ** int(rng.integers(-3, 4))
    return float(np.float32(value)) if name == "float32" else float(value)


def _random_array(kind: ArrayType, rng: np.random.Generator, depth: int) -> np.ndarray:
    if kind.shape is not None:
        shape = kind.shape
    else:
        ndims = kind.ndims if kind.ndims is not None else int(rng.integers(0, 4))
        shape = tuple(int(rng.integers(0, 4 if depth < 2 else 2)) for _ in range(ndims))
    item = kind.item
    if isinstance(item, Primitive) and item.name in FIXED_DTYPES:
        dtype = FIXED_DTYPES[item.name]
        values = rng.normal(size=shape) + (1j * rng.normal(size=shape) if dtype.kind == "c" else 0)
        return np.asarray(values).astype(dtype)
    if isinstance(item, Primitive) and item.name in VARINT_DTYPES:
        info = np.iinfo(VARINT_DTYPES[item.name][1])
        flat = [_integer(rng, int(info.min), int(info.max)) for _ in range(int(np.prod(shape)))]
        return np.array(flat, dtype=VARINT_DTYPES[item.name][1]).reshape(shape)
    out = np.empty(int(np.prod(shape)), dtype=object)
    for i in range(out.size):
        out[i] = random_value(item, rng, depth + 1)
    return out.reshape(shape)


# --------------------------------------------------------- streams of items
def item_stream(tag: str, value: Any, header: bytes = b"\x00") -> bytes:
    """An MRD v2 stream with no header (or ``header``) and one item."""
    return prologue_bytes() + header + b"".join(item_buffers(tag, value)) + b"\x00"


def read_with_mrd(raw: bytes) -> tuple[Any, list[Any]]:
    """The header and items mrd-python reads from ``raw``."""
    with mrd.BinaryMrdReader(io.BytesIO(raw)) as reader:
        header = reader.read_header()
        items = list(reader.read_data())
    return header, items


def write_with_mrd(header: Any, items: list[Any]) -> bytes:
    """The stream mrd-python writes for ``header`` and ``items`` (one block, as a list)."""
    sink = io.BytesIO()
    writer = mrd.BinaryMrdWriter(sink)
    writer.write_header(header)
    writer.write_data(iter(items))
    writer.close()
    return sink.getvalue()


def read_native(raw: bytes) -> list[tuple[str, Any]]:
    """Every step of ``raw`` as our codec decodes it, without mapping."""
    reader = Mrd2StreamReader(io.BytesIO(raw))
    out = []
    while (step := reader.read_native()) is not None:
        out.append(step)
    return out


# ----------------------------------------------------------------- compare
def same(ours: Any, theirs: Any, kind: Type, where: str = "$") -> None:
    """Assert that our decoded value equals mrd-python's object (fields by position)."""
    if isinstance(theirs, np.void) and isinstance(kind, OptionalType):
        theirs = theirs["value"] if theirs["has_value"] else None
    if isinstance(kind, OptionalType):
        if ours is None or theirs is None:
            assert ours is None and theirs is None, f"{where}: {ours!r} vs {theirs!r}"
            return
        same(ours, theirs, kind.item, where)
    elif isinstance(kind, RecordType):
        if isinstance(theirs, np.void):  # a record read into a structured array
            values = [theirs[name] for name in theirs.dtype.names]
        else:
            values = [v for k, v in vars(theirs).items() if not k.startswith("_")]
        assert len(values) == len(kind.fields), where
        for (name, item), value in zip(kind.fields, values, strict=True):
            same(ours[name], value, item, f"{where}.{name}")
    elif isinstance(kind, VectorType):
        theirs = list(theirs)
        assert len(ours) == len(theirs), f"{where}: {len(ours)} vs {len(theirs)} items"
        for n, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            same(a, b, kind.item, f"{where}[{n}]")
    elif isinstance(kind, MapType):
        assert list(ours) == list(theirs), f"{where}: keys {list(ours)} vs {list(theirs)}"
        for key in ours:
            same(ours[key], theirs[key], kind.value, f"{where}[{key!r}]")
    elif isinstance(kind, UnionType):
        assert ours[0] == theirs.tag, f"{where}: case {ours[0]} vs {theirs.tag}"
        case = dict(kind.cases)[ours[0]]
        same(ours[1], theirs.value, case, f"{where}<{ours[0]}>")
    elif isinstance(kind, EnumType):
        number = (
            theirs.value
            if hasattr(theirs, "value") and not isinstance(theirs, np.generic)
            else theirs
        )
        assert ours == int(number), where
    elif isinstance(kind, ArrayType):
        _same_array(ours, theirs, kind, where)
    else:
        _same_primitive(ours, theirs, kind, where)


def _same_array(ours: np.ndarray, theirs: Any, kind: ArrayType, where: str) -> None:
    theirs = np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{where}: shape {ours.shape} vs {theirs.shape}"
    item = kind.item
    if isinstance(item, Primitive):
        assert np.array_equal(ours, theirs), f"{where}: values differ"
        return
    for n, (a, b) in enumerate(zip(ours.flat, theirs.flat, strict=True)):
        same(a, b, item, f"{where}.flat[{n}]")


def _same_primitive(ours: Any, theirs: Any, kind: Type, where: str) -> None:
    assert isinstance(kind, Primitive)
    if kind.name == "date":
        theirs = (theirs - EPOCH).days
    elif kind.name == "time":
        theirs = int(theirs.numpy_value.astype(np.int64))
    if isinstance(theirs, np.generic):
        theirs = theirs.item()
    assert ours == theirs, f"{where}: {ours!r} vs {theirs!r}"


# ------------------------------------------- mrd-python objects of v1 messages
COUNTERS = [
    "kspace_encode_step_1",
    "kspace_encode_step_2",
    "average",
    "slice",
    "contrast",
    "phase",
    "repetition",
    "set",
    "segment",
]
IMAGE_TAGS = {
    1: mrd.StreamItem.ImageUint16,
    2: mrd.StreamItem.ImageInt16,
    3: mrd.StreamItem.ImageUint32,
    4: mrd.StreamItem.ImageInt32,
    5: mrd.StreamItem.ImageFloat,
    6: mrd.StreamItem.ImageDouble,
    7: mrd.StreamItem.ImageComplexFloat,
    8: mrd.StreamItem.ImageComplexDouble,
}


def mrd_acquisition(acq: Acquisition) -> Any:
    """The mrd-python item of a v1 acquisition, every field set (absent none)."""
    h = acq.head
    head = mrd.AcquisitionHeader(
        flags=mrd.AcquisitionFlags(int(h["flags"])),
        idx=mrd.EncodingCounters(
            **{name: int(h["idx"][name]) for name in COUNTERS},
            user=[int(v) for v in h["idx"]["user"]],
        ),
        measurement_uid=int(h["measurement_uid"]),
        scan_counter=int(h["scan_counter"]),
        acquisition_time_stamp=int(h["acquisition_time_stamp"]),
        physiology_time_stamp=[int(v) for v in h["physiology_time_stamp"]],
        channel_order=list(range(int(h["active_channels"]))),
        discard_pre=int(h["discard_pre"]),
        discard_post=int(h["discard_post"]),
        center_sample=int(h["center_sample"]),
        encoding_space_ref=int(h["encoding_space_ref"]),
        sample_time_us=float(h["sample_time_us"]),
        position=np.array(h["position"]),
        read_dir=np.array(h["read_dir"]),
        phase_dir=np.array(h["phase_dir"]),
        slice_dir=np.array(h["slice_dir"]),
        patient_table_position=np.array(h["patient_table_position"]),
        user_int=[int(v) for v in h["user_int"]],
        user_float=[float(v) for v in h["user_float"]],
    )
    trajectory = acq.traj.T.copy() if acq.traj.size else np.zeros((0, 0), np.float32)
    return mrd.StreamItem.Acquisition(
        mrd.Acquisition(head=head, data=acq.data.copy(), trajectory=trajectory)
    )


def mrd_image(image: Image) -> Any:
    """The mrd-python item of a v1 image (meta values as strings; image type 0 as 1)."""
    h = image.head
    head = mrd.ImageHeader(
        image_type=mrd.ImageType(max(int(h["image_type"]), 1)),
        flags=mrd.ImageFlags(int(h["flags"])),
        measurement_uid=int(h["measurement_uid"]),
        field_of_view=np.array(h["field_of_view"]),
        position=np.array(h["position"]),
        col_dir=np.array(h["read_dir"]),
        line_dir=np.array(h["phase_dir"]),
        slice_dir=np.array(h["slice_dir"]),
        patient_table_position=np.array(h["patient_table_position"]),
        slice=int(h["slice"]),
        repetition=int(h["repetition"]),
        image_index=int(h["image_index"]),
        image_series_index=int(h["image_series_index"]),
        user_int=[int(v) for v in h["user_int"]],
        user_float=[float(v) for v in h["user_float"]],
    )
    meta = {
        key: [
            mrd.ImageMetaValue.String(v) for v in (values if isinstance(values, list) else [values])
        ]
        for key, values in (
            ismrmrd.Meta.deserialize(image.attributes) if image.attributes else {}
        ).items()
    }
    case = IMAGE_TAGS[int(h["data_type"])]
    return case(mrd.Image(head=head, data=image.data.copy(), meta=meta))
