"""Export reconstructed MRD images to DICOM, NIfTI and NumPy, with one geometry for all.

:func:`export` is the Python entry point; ``parallel-recon export`` the command.  The
geometry conventions (MRD image centre vs DICOM first-pixel position, LPS vs RAS, dcm2niix's
voxel order) live in :mod:`.geometry`, the only place that converts coordinates.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..protocol import Image, Message
from .geometry import LPS_TO_RAS, ImageGeometry, Plane, nifti_affine, stack_planes
from .inputs import (
    ExportInput,
    ImageSeries,
    collect_messages,
    read_hdf5_input,
    read_stream_input,
)
from .supplied import SuppliedGeometry, supply_geometry

__all__ = [
    "FORMATS",
    "LPS_TO_RAS",
    "ExportInput",
    "ImageGeometry",
    "ImageSeries",
    "Plane",
    "collect_messages",
    "export",
    "nifti_affine",
    "read_hdf5_input",
    "read_stream_input",
    "stack_planes",
    "writer",
    "write_dicom",
    "write_nifti",
    "write_npz",
]

Writer = Callable[[ExportInput, str | Path, Callable[[int], None] | None], list[Path]]

FORMATS: dict[str, tuple[str, str]] = {
    "dicom": (".dicom", "write_dicom"),
    "nifti": (".nifti", "write_nifti"),
    "npy": (".numpy", "write_npz"),
}
"""``--to`` value -> (module, writer); a writer is ``(input, path, progress) -> files``.
Modules load on first use: pydicom and nibabel take a second to import."""

_WRITERS = {function: module for module, function in FORMATS.values()}


def writer(to: str) -> Writer:
    """The writer of format ``to``; ConfigurationError for an unknown format."""
    if to not in FORMATS:
        raise ConfigurationError(f"export: expected to= {', '.join(FORMATS)}; found {to!r}")
    module, function = FORMATS[to]
    found: Writer = getattr(importlib.import_module(module, __name__), function)
    return found


def __getattr__(name: str) -> Any:
    """``write_dicom``, ``write_nifti``, ``write_npz``, imported when first asked for."""
    if name in _WRITERS:
        return getattr(importlib.import_module(_WRITERS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def export(
    images: Iterable[Message | Image] | ExportInput,
    path: str | Path,
    to: str = "nifti",
    *,
    header_xml: str | None = None,
    progress: Callable[[int], None] | None = None,
    voxel_size: tuple[float, float, float] | None = None,
    slice_spacing: float | None = None,
) -> list[Path]:
    """Write images as DICOM files, NIfTI files or ``.npz`` archives.

    Parameters
    ----------
    images:
        Image messages (a HEADER message among them supplies the XML header; other messages
        are ignored), grouped into series by ``image_series_index``; or an :class:`ExportInput`
        from :func:`read_hdf5_input` / :func:`read_stream_input`.
    path:
        ``dicom``: a new (or empty) folder.  ``nifti``: a ``.nii`` or ``.nii.gz`` file name.
        ``npy``: a ``.npz`` file name.  Several outputs get ``_<series>`` suffixes.
    to:
        ``"dicom"``, ``"nifti"`` or ``"npy"``.
    header_xml:
        The ISMRMRD XML header (patient, study, sequence facts for DICOM), if not among
        ``images``.
    progress:
        Called with the number of images (or DICOM planes) written after each output.
    voxel_size, slice_spacing:
        Geometry the image headers lack (``field_of_view`` 0, every plane at one position):
        ``(x, y, z)`` mm per voxel, and mm between the 2D images of a volume in slice order
        (see :mod:`.supplied`); they replace the headers' values.

    Returns
    -------
    list[pathlib.Path]
        The files written.
    """
    write = writer(to)
    source = images if isinstance(images, ExportInput) else collect_messages(images, header_xml)
    if header_xml is not None and isinstance(images, ExportInput):
        source = ExportInput(header_xml, images.series, images.source)
    source = supply_geometry(source, SuppliedGeometry(voxel_size, slice_spacing))
    return write(source, path, progress)
