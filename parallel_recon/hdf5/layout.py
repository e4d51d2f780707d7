"""The ISMRMRD HDF5 layout: dataset names, HDF5 dtypes, and opening files and groups.

The C++ library (``libsrc/dataset.c``) defines the layout; ismrmrd-python follows it.  Inside
a group (``/dataset`` by default) live ``xml`` (one variable-length string), ``data`` (the
acquisitions: compound of ``head``, ``traj`` vlen float32 and ``data`` vlen float32 holding
interleaved re/im), ``waveforms`` (``head`` + vlen uint32 ``data``), image series as
sub-groups with ``header``, ``attributes`` and ``data [N, channels, z, y, x]``, and NDArrays
as datasets ``[N, *shape]``.  Complex pixels are stored as compounds ``(real, imag)``.

Headers are read into our packed wire dtypes by *field name*, so files whose compound is
padded differently (e.g. a 352-byte acquisition header) still read correctly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from ..errors import InputFileError
from ..files.inputs import refuse_non_hdf5_output
from ..protocol.layout import (
    ACQUISITION_HEADER_DTYPE,
    DATA_TYPE_TO_DTYPE,
    IMAGE_HEADER_DTYPE,
    WAVEFORM_HEADER_DTYPE,
)

__all__ = [
    "ACQUISITIONS",
    "ACQUISITION_ROW_DTYPE",
    "ACQUISITION_FILE_DTYPE",
    "CONFIG_FILE",
    "CONFIG_TEXT",
    "TEXT",
    "VLEN_STRING",
    "WAVEFORMS",
    "WAVEFORM_ROW_DTYPE",
    "XML",
    "check_fields",
    "file_pixel_dtype",
    "image_series_group",
    "from_file_pixels",
    "list_groups",
    "list_image_series",
    "ndarray_name",
    "open_group",
    "open_mrd_file",
    "to_file_pixels",
]

XML = "xml"
ACQUISITIONS = "data"
WAVEFORMS = "waveforms"
CONFIG_FILE = "config_file"
"""Our addition: CONFIG_FILE names received on a stream, one vlen string per message."""
CONFIG_TEXT = "config_text"
"""Our addition: CONFIG_TEXT texts received on a stream."""
TEXT = "text"
"""Our addition: TEXT messages received on a stream."""

VLEN_STRING = h5py.special_dtype(vlen=bytes)
_VLEN_F4 = h5py.vlen_dtype(np.dtype("<f4"))
_VLEN_U4 = h5py.vlen_dtype(np.dtype("<u4"))

ACQUISITION_ROW_DTYPE = np.dtype(
    [("head", ACQUISITION_HEADER_DTYPE), ("traj", _VLEN_F4), ("data", _VLEN_F4)]
)
"""In-memory row of the ``data`` dataset (packed head, vlen arrays as objects)."""

ACQUISITION_FILE_DTYPE = np.dtype(
    {
        "names": ["head", "traj", "data"],
        "formats": [ACQUISITION_HEADER_DTYPE, _VLEN_F4, _VLEN_F4],
        "offsets": [0, 344, 360],
        "itemsize": 376,
    }
)
"""The row layout the C++ library writes (``HDF5_Acquisition`` with its natural padding)."""

WAVEFORM_ROW_DTYPE = np.dtype([("head", WAVEFORM_HEADER_DTYPE), ("data", _VLEN_U4)])

_COMPLEX_FILE = {
    np.dtype("<c8"): np.dtype([("real", "<f4"), ("imag", "<f4")]),
    np.dtype("<c16"): np.dtype([("real", "<f8"), ("imag", "<f8")]),
}
_HEADER_DTYPES = {"acquisition": ACQUISITION_HEADER_DTYPE, "image": IMAGE_HEADER_DTYPE}


def file_pixel_dtype(dtype: np.dtype) -> np.dtype:
    """The HDF5 storage dtype of an image/NDArray element dtype (complex -> real/imag)."""
    dtype = np.dtype(dtype).newbyteorder("<")
    return _COMPLEX_FILE.get(dtype, dtype)


def to_file_pixels(array: np.ndarray) -> np.ndarray:
    """View a pixel array in its storage dtype (no copy for contiguous arrays)."""
    array = np.ascontiguousarray(array)
    return array.view(file_pixel_dtype(array.dtype))


def from_file_pixels(array: np.ndarray, data_type: int) -> np.ndarray:
    """Stored pixels as the element dtype of ISMRMRD ``data_type`` (converted if needed)."""
    target = DATA_TYPE_TO_DTYPE[data_type]
    if array.dtype.names is not None:
        stored = np.dtype(array.dtype.fields["real"][0]).newbyteorder("<")  # type: ignore[index]
        complex_dtype = np.result_type(stored, np.complex64)
        values = np.empty(array.shape, complex_dtype)
        values.real = array["real"]
        values.imag = array["imag"]
        array = values
    return np.ascontiguousarray(array, dtype=target)


def check_fields(found: np.dtype, kind: str, where: str) -> None:
    """Refuse a header compound that lacks fields of our layout, naming them."""
    expected = _HEADER_DTYPES[kind]
    missing = [name for name in expected.names or () if name not in (found.names or ())]
    if missing:
        raise InputFileError(
            f"{where}: the {kind} header compound lacks field(s) {', '.join(missing)}; "
            f"expected the ISMRMRD {kind} header fields"
        )


def ndarray_name(array: np.ndarray, version: int, data_type: int) -> str:
    """The dataset name the C++ tool gives an NDArray (``dims`` fastest-first, as C++ sees it)."""
    dims = "".join(f"{d}_" for d in reversed(array.shape))
    return f"array_ver_{version}_dim_{dims}datatype_{data_type}"


@contextmanager
def open_mrd_file(path: str | Path, mode: str = "r") -> Iterator[h5py.File]:
    """Open an HDF5 file, turning "missing" and "not HDF5" into one-line input errors."""
    path = Path(path)
    if mode == "r":
        if not path.exists():
            raise InputFileError(f"cannot open input {str(path)!r}: no such file")
        if path.is_dir():
            raise InputFileError(f"cannot open input {str(path)!r}: it is a directory")
        if not h5py.is_hdf5(path):
            raise InputFileError(
                f"input {str(path)!r} is not an HDF5 file (expected an ISMRMRD HDF5 file; "
                "for a binary MRD stream use it directly)"
            )
    else:
        refuse_non_hdf5_output(path)
    try:
        handle = h5py.File(path, mode)
    except OSError as exc:
        raise InputFileError(f"cannot open HDF5 file {str(path)!r}: {exc}") from None
    with handle:
        yield handle


def list_groups(path: str | Path) -> list[str]:
    """Names of the top-level groups of an HDF5 file (candidate MRD datasets)."""
    with open_mrd_file(path) as handle:
        return [name for name, item in handle.items() if isinstance(item, h5py.Group)]


def _series_of(group: h5py.Group) -> list[str]:
    return [
        name
        for name, item in group.items()
        if isinstance(item, h5py.Group) and "header" in item and "data" in item
    ]


def list_image_series(path: str | Path, group: str = "dataset") -> list[str]:
    """Names of the image series (sub-groups with ``header`` and ``data``) in ``group``."""
    with open_mrd_file(path) as handle:
        return _series_of(open_group(handle, group, str(path)))


def open_group(handle: h5py.File, group: str, where: str) -> h5py.Group:
    """The group ``group`` of an open file, or an error listing the groups that exist."""
    item = handle.get(group)
    if not isinstance(item, h5py.Group):
        found = [name for name, it in handle.items() if isinstance(it, h5py.Group)]
        listing = ", ".join(repr(name) for name in found) or "none"
        raise InputFileError(
            f"{where}: no group {group!r} (groups in the file: {listing}; choose one with -g)"
        )
    return item


def image_series_group(group: h5py.Group, series: str, where: str) -> h5py.Group:
    """The image series ``series`` of ``group``, or an error listing the series that exist."""
    item = group.get(series)
    if not isinstance(item, h5py.Group) or "header" not in item or "data" not in item:
        listing = ", ".join(repr(name) for name in _series_of(group)) or "none"
        raise InputFileError(
            f"{where}: group {group.name!r} has no image series {series!r} "
            f"(image series found: {listing})"
        )
    return item
