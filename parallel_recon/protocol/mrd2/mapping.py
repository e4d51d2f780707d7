"""MRD v1 messages <-> MRD v2 stream items, field by field.

The mapping is the MRD project's (its converter scripts ``ismrmrd_to_mrd.py`` and
``mrd_to_ismrmrd.py``), as it behaves with the MRD 2.1 model that mrd-python 2.1.x and
these streams use:

- v1 -> v2 sets every optional counter and size field, lists ``channelOrder`` as
  ``0..channels-1`` and writes all 8 user ints and floats, but leaves the acquisition and
  image time stamps, the acquisition sample time and ``idx.user`` out (the script names
  them by their MRD 2.2 nanosecond fields, which the 2.1 model does not have);
- v2 -> v1 writes absent optional fields as 0 and takes what the fixed v1 arrays hold.

Trajectories are ``[samples, dimensions]`` in v1 and ``[basis, samples]`` in v2, so they
are transposed (the script copies the v1 array unchanged, which swaps the two axes of the
v2 array; the v2 model and its readers mean ``[basis, samples]``).
Whatever a direction cannot carry is recorded in :class:`~.notes.Notes`.

Values are the codec's plain data (:mod:`.codec`): records as dicts named as in the schema.
Acquisitions, the bulk of a stream, are mapped by :mod:`.acquisitions` straight between the
wire and v1 header records, with this module's field tables.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..layout import DTYPE_TO_DATA_TYPE
from ..messages import (
    Image,
    NDArray,
    Waveform,
    new_image_head,
    new_waveform_head,
)
from .meta import meta_from_attributes, meta_to_attributes
from .notes import Notes

__all__ = [
    "IMAGE_TAGS",
    "MappingError",
    "array_to_v1",
    "image_to_v1",
    "image_to_v2",
    "ndarray_to_v2",
    "waveform_to_v1",
    "waveform_to_v2",
]


class MappingError(ValueError):
    """A value that the other generation cannot hold (e.g. a counter beyond 65535)."""


COUNTERS = (
    ("kspaceEncodeStep1", "kspace_encode_step_1"),
    ("kspaceEncodeStep2", "kspace_encode_step_2"),
    ("average", "average"),
    ("slice", "slice"),
    ("contrast", "contrast"),
    ("phase", "phase"),
    ("repetition", "repetition"),
    ("set", "set"),
    ("segment", "segment"),
)
"""Encoding counters: v2 name, v1 name."""

ACQUISITION_OPTIONALS = (
    ("scanCounter", "scan_counter", True),
    ("acquisitionTimeStamp", "acquisition_time_stamp", False),
    ("discardPre", "discard_pre", True),
    ("discardPost", "discard_post", True),
    ("centerSample", "center_sample", True),
    ("encodingSpaceRef", "encoding_space_ref", True),
    ("sampleTimeUs", "sample_time_us", False),
)
"""Optional acquisition fields: v2 name, v1 name, carried from v1 to v2."""

ACQUISITION_VECTORS = (
    ("physiologyTimeStamp", "physiology_time_stamp", False),
    ("userInt", "user_int", True),
    ("userFloat", "user_float", True),
)
"""Acquisition vectors held in fixed v1 arrays: v2 name, v1 name, carried from v1 to v2."""

GEOMETRY = (
    ("position", "position"),
    ("readDir", "read_dir"),
    ("phaseDir", "phase_dir"),
    ("sliceDir", "slice_dir"),
    ("patientTablePosition", "patient_table_position"),
)
IMAGE_GEOMETRY = (
    ("fieldOfView", "field_of_view"),
    ("position", "position"),
    ("colDir", "read_dir"),
    ("lineDir", "phase_dir"),
    ("sliceDir", "slice_dir"),
    ("patientTablePosition", "patient_table_position"),
)
IMAGE_OPTIONALS = (
    ("average", "average", True),
    ("slice", "slice", True),
    ("contrast", "contrast", True),
    ("phase", "phase", True),
    ("repetition", "repetition", True),
    ("set", "set", True),
    ("acquisitionTimeStamp", "acquisition_time_stamp", False),
    ("imageIndex", "image_index", True),
    ("imageSeriesIndex", "image_series_index", True),
)
IMAGE_VECTORS = (
    ("physiologyTimeStamp", "physiology_time_stamp", False),
    ("userInt", "user_int", True),
    ("userFloat", "user_float", True),
)

IMAGE_TAGS: dict[str, np.dtype] = {
    "ImageUint16": np.dtype("<u2"),
    "ImageInt16": np.dtype("<i2"),
    "ImageUint32": np.dtype("<u4"),
    "ImageInt32": np.dtype("<i4"),
    "ImageFloat": np.dtype("<f4"),
    "ImageDouble": np.dtype("<f8"),
    "ImageComplexFloat": np.dtype("<c8"),
    "ImageComplexDouble": np.dtype("<c16"),
}
"""v2 image item tag -> pixel dtype (the eight v1 image data types)."""
_TAG_OF_DTYPE = {dtype: tag for tag, dtype in IMAGE_TAGS.items()}
_IMAGE_TYPES = range(1, 6)


# ------------------------------------------------------------------ helpers
def _store(record: np.void, name: str, value: Any, what: str) -> None:
    """``record[name] = value``, refusing what the v1 field cannot hold."""
    dtype = record.dtype.fields[name][0] if record.dtype.fields else None
    base = dtype.base if dtype is not None else None
    if base is not None and base.kind in "ui":
        info = np.iinfo(base)
        values = np.atleast_1d(np.asarray(value, dtype=object))
        for number in values:
            if not info.min <= int(number) <= info.max:
                raise MappingError(
                    f"{what} {name} is {int(number)}; MRD v1 holds {info.min}..{info.max} there"
                )
    record[name] = value


def _fixed(values: list[Any], size: int, v2name: str, item: str, notes: Notes) -> list[Any]:
    if len(values) > size:
        notes.field(
            f"{item} {v2name} beyond {size}",
            f"MRD v1 holds {size} {item} {v2name} values: those beyond are not carried",
        )
    return (list(values) + [0] * size)[:size]


def version_note(item: str, notes: Notes) -> None:
    """A v1 header ``version`` other than 1: v2 has no such field."""
    notes.field(
        f"{item} version",
        f"MRD v2 has no {item} header version: a version other than 1 is not carried",
    )


def _absent(notes: Notes) -> None:
    notes.field(
        "absent optional fields",
        "MRD v1 has no 'absent' value: absent optional fields of MRD v2 items are written as 0",
    )


def _v1_dropped(name: str, value: Any, item: str, notes: Notes) -> None:
    if np.any(np.asarray(value) != 0):
        notes.field(
            f"{item} {name}",
            f"the MRD v2 mapping leaves {item} {name} out (not carried)",
        )


# ------------------------------------------------------------------- images
def image_to_v1(tag: str, item: dict[str, Any], notes: Notes) -> Image:
    """A v2 image item of any pixel type as a v1 IMAGE (meta as attribute XML)."""
    data = np.ascontiguousarray(item["data"], dtype=IMAGE_TAGS[tag])
    h = item["head"]
    out = new_image_head()
    out["flags"] = h["flags"]
    _store(out, "measurement_uid", h["measurementUid"], "image")
    for v2name, v1name in IMAGE_GEOMETRY:
        out[v1name] = h[v2name]
    for v2name, v1name, _ in IMAGE_OPTIONALS:
        value = h[v2name]
        if value is None:
            _absent(notes)
            value = 0
        _store(out, v1name, value, "image")
    for v2name, v1name, _ in IMAGE_VECTORS:
        size = out.dtype[v1name].shape[0]
        _store(out, v1name, _fixed(h[v2name], size, v2name, "image", notes), "image")
    _store(out, "image_type", h["imageType"], "image")
    channels, z, y, x = data.shape
    _store(out, "matrix_size", (x, y, z), "image")
    _store(out, "channels", channels, "image")
    out["data_type"] = DTYPE_TO_DATA_TYPE[data.dtype]
    attributes = meta_to_attributes(item["meta"])
    out["attribute_string_len"] = len(attributes.encode("utf-8"))
    return Image(head=out, attributes=attributes, data=data)


def image_to_v2(image: Image, notes: Notes) -> tuple[str, dict[str, Any]]:
    """A v1 IMAGE as a v2 image item ``(tag, value)`` (the MRD project's mapping)."""
    h = image.head
    if int(h["version"]) != 1:
        version_note("image", notes)
    image_type = int(h["image_type"])
    if image_type not in _IMAGE_TYPES:
        notes.field(
            f"image_type {image_type}",
            f"image_type {image_type} is not an MRD v2 image type (1..5): written as 1 (magnitude)",
        )
        image_type = 1
    head: dict[str, Any] = {
        "flags": int(h["flags"]),
        "measurementUid": int(h["measurement_uid"]),
        "physiologyTimeStamp": [],
        "imageType": image_type,
        "userInt": [int(v) for v in h["user_int"]],
        "userFloat": [float(v) for v in h["user_float"]],
    }
    for v2name, v1name in IMAGE_GEOMETRY:
        head[v2name] = np.array(h[v1name], dtype=np.float32)
    for v2name, v1name, carried in IMAGE_OPTIONALS:
        head[v2name] = int(h[v1name]) if carried else None
        if not carried:
            _v1_dropped(v1name, h[v1name], "image", notes)
    _v1_dropped("physiology_time_stamp", h["physiology_time_stamp"], "image", notes)
    meta, problem = meta_from_attributes(image.attributes)
    if problem is not None:
        notes.field(
            "image attributes",
            f"image attributes that are not ISMRMRD meta XML are not carried ({problem})",
        )
    elif meta_to_attributes(meta) != image.attributes:
        notes.field(
            "image attributes text",
            "image attributes are carried as typed MRD v2 meta: their XML text is written "
            "anew (values retyped, whitespace and formatting not kept)",
        )
    data = np.ascontiguousarray(image.data)
    tag = _TAG_OF_DTYPE[data.dtype.newbyteorder("<")]
    return tag, {"head": head, "data": data, "meta": meta}


# ---------------------------------------------------------------- waveforms
def waveform_to_v1(item: dict[str, Any], notes: Notes) -> Waveform:
    """A v2 ``WaveformUint32`` as a v1 WAVEFORM."""
    data = np.ascontiguousarray(item["data"], dtype=np.uint32)
    head = new_waveform_head()
    head["flags"] = item["flags"]
    for v2name, v1name in (
        ("measurementUid", "measurement_uid"),
        ("scanCounter", "scan_counter"),
        ("timeStamp", "time_stamp"),
        ("waveformId", "waveform_id"),
    ):
        _store(head, v1name, item[v2name], "waveform")
    head["sample_time_us"] = item["sampleTimeUs"]
    _store(head, "channels", data.shape[0], "waveform")
    _store(head, "number_of_samples", data.shape[1], "waveform")
    return Waveform(head=head, data=data)


def waveform_to_v2(waveform: Waveform, notes: Notes) -> dict[str, Any]:
    """A v1 WAVEFORM as a v2 ``WaveformUint32``."""
    h = waveform.head
    if int(h["version"]) != 1:
        version_note("waveform", notes)
    return {
        "flags": int(h["flags"]),
        "measurementUid": int(h["measurement_uid"]),
        "scanCounter": int(h["scan_counter"]),
        "timeStamp": int(h["time_stamp"]),
        "sampleTimeUs": float(h["sample_time_us"]),
        "waveformId": int(h["waveform_id"]),
        "data": waveform.data,
    }


# ------------------------------------------------------------------- arrays
def array_to_v1(array: np.ndarray, notes: Notes) -> NDArray:
    """A v2 ``ArrayComplexFloat`` as a v1 complex64 NDARRAY."""
    return NDArray(array=np.ascontiguousarray(array, dtype=np.complex64))


def ndarray_to_v2(message: NDArray, notes: Notes) -> np.ndarray | None:
    """A v1 NDARRAY as a v2 ``ArrayComplexFloat``; None (and a note) for other types."""
    dtype = message.array.dtype.newbyteorder("<")
    if dtype != np.dtype("<c8"):
        notes.item(
            f"NDArray {dtype.name}",
            f"MRD v2 streams carry complex64 arrays only: NDARRAY messages of {dtype.name} "
            "are not carried",
        )
        return None
    if message.version:
        notes.field(
            "NDArray version",
            "MRD v2 arrays have no version field: the NDARRAY version is not carried",
        )
    return np.ascontiguousarray(message.array)
