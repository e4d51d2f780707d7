"""NumPy export: one ``.npz`` per series that plain ``numpy.load`` reads (no pickles).

Arrays in each file:

``data``
    ``[n, channels, z, y, x]`` in the images' own dtype (the MRD pixels, unchanged).
``headers``
    ``(n,)`` structured array of the 198-byte ISMRMRD ImageHeader (field names as in
    ismrmrd-python: ``position``, ``read_dir``, ``field_of_view``, ``image_index``, ...).
``attributes``
    ``(n,)`` unicode strings: each image's meta attribute XML.
``affine_lps``, ``affine_ras``
    ``(n, 4, 4)`` float64: voxel index ``(x, y, z, 1)`` of ``data[i, c, z, y, x]`` to patient
    coordinates in mm, LPS (DICOM, MRD) and RAS (NIfTI); the geometry of :mod:`.geometry`.
``header_xml``, ``series``
    0-d unicode: the XML header (``""`` if none) and the series name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import GeometryError
from ..files import PendingFile
from ..protocol import IMAGE_HEADER_DTYPE
from .geometry import LPS_TO_RAS, ImageGeometry
from .inputs import ExportInput, ImageSeries
from .output import numbered_paths

__all__ = ["EXTENSIONS", "series_arrays", "write_npz"]

EXTENSIONS = (".npz",)


def series_arrays(series: ImageSeries, header_xml: str | None, where: str) -> dict[str, np.ndarray]:
    """The arrays of one series' ``.npz`` (see the module text)."""
    shapes = {(image.data.shape, image.data.dtype.str) for image in series.images}
    if len(shapes) != 1:
        found = sorted(f"{shape} {dtype}" for shape, dtype in shapes)
        raise GeometryError(
            f"{where}: series {series.name} mixes image shapes or types ({', '.join(found)}); "
            "expected one [channels, z, y, x] shape and dtype per series to stack "
            "(export it with --to dicom instead)"
        )
    affines = np.stack(
        [
            ImageGeometry.from_header(
                image.head, series.meta(i), f"{where}: series {series.name} image {i}"
            ).lps_affine()
            for i, image in enumerate(series.images)
        ]
    )
    headers = np.zeros(len(series.images), IMAGE_HEADER_DTYPE)
    for i, image in enumerate(series.images):
        headers[i] = image.head
    return {
        "data": np.stack([image.data for image in series.images]),
        "headers": headers,
        "attributes": np.array([image.attributes for image in series.images], dtype=np.str_),
        "affine_lps": affines,
        "affine_ras": LPS_TO_RAS @ affines,
        "header_xml": np.array(header_xml or "", dtype=np.str_),
        "series": np.array(series.name, dtype=np.str_),
    }


def write_npz(
    source: ExportInput, path: str | Path, progress: Callable[[int], None] | None = None
) -> list[Path]:
    """Write one compressed ``.npz`` per series named after ``path``; returns the files.

    One series is written to ``path`` itself; several get ``_<series>`` before ``.npz``.
    """
    arrays = [series_arrays(s, source.header_xml, source.source) for s in source.series]
    paths = numbered_paths(Path(path), [s.name for s in source.series], EXTENSIONS)
    for series, contents, out in zip(source.series, arrays, paths, strict=True):
        with PendingFile(out, suffix=".npz") as pending, pending.path.open("wb") as handle:
            np.savez_compressed(handle, **contents)  # type: ignore[arg-type]
        if progress is not None:
            progress(len(series.images))
    return paths
