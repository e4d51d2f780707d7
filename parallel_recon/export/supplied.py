"""Geometry the user supplies for images whose headers lack it.

Images from other programs may carry no field of view (``field_of_view`` 0, so the pixel
spacing is unknown) or put every plane of a stack at one position.  An export cannot guess
either, so the user states them (``--voxel-size X,Y,Z`` and ``--slice-spacing MM``) and the
image headers are completed before any exporter sees them: every format then places the
voxels the same way, through :mod:`.geometry` as always.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..protocol import Image
from .inputs import ExportInput, ImageSeries

__all__ = ["SuppliedGeometry", "parse_positive_triple", "supply_geometry"]

SLICE_ORDER = ("slice", "image_index")
"""How the planes of one volume are ordered along the normal with ``--slice-spacing``: by
the slice counter, then as numbered."""


@dataclass(frozen=True)
class SuppliedGeometry:
    """What the user states about the images' geometry (None: keep the header's)."""

    voxel_size: tuple[float, float, float] | None = None
    """mm along x (columns), y (rows) and z (planes of a 3D image, or the slice thickness)."""
    slice_spacing: float | None = None
    """mm between the 2D images of one volume, along the normal of their plane."""

    @property
    def empty(self) -> bool:
        return self.voxel_size is None and self.slice_spacing is None


def parse_positive_triple(text: str, option: str = "--voxel-size") -> tuple[float, float, float]:
    """``X,Y,Z`` of three finite positive numbers; a UsageError naming ``option`` otherwise."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise UsageError(f"{option} {text!r}: expected three positive numbers X,Y,Z in mm")
    x, y, z = values
    return (x, y, z)


def _with_voxel_size(image: Image, size: tuple[float, float, float]) -> Image:
    head = image.head.copy()
    matrix = np.asarray(head["matrix_size"], dtype=np.float64)
    head["field_of_view"] = np.asarray(size) * matrix
    return Image(head=head, attributes=image.attributes, data=image.data)


def _normal(image: Image) -> np.ndarray:
    read = np.asarray(image.head["read_dir"], dtype=np.float64)
    phase = np.asarray(image.head["phase_dir"], dtype=np.float64)
    normal = np.cross(read, phase)
    length = float(np.linalg.norm(normal))
    if length == 0:
        raise UsageError(
            "--slice-spacing needs the images' read and phase directions, and they are unset"
        )
    return normal / length


def _spaced(series: ImageSeries, spacing: float) -> ImageSeries:
    """The series with the 2D images of each volume placed ``spacing`` mm apart along the
    normal, starting at the position of its first image (in :data:`SLICE_ORDER`)."""
    images = list(series.images)
    for members in series.volumes():
        ordered = sorted(members, key=lambda i: tuple(int(images[i].head[k]) for k in SLICE_ORDER))
        start = np.asarray(images[ordered[0]].head["position"], dtype=np.float64)
        normal = _normal(images[ordered[0]])
        for step, i in enumerate(ordered):
            head = images[i].head.copy()
            head["position"] = start + step * spacing * normal
            images[i] = Image(head=head, attributes=images[i].attributes, data=images[i].data)
    return ImageSeries(series.name, images)


def supply_geometry(source: ExportInput, supplied: SuppliedGeometry) -> ExportInput:
    """``source`` with the supplied voxel size and slice spacing written into its image
    headers (the headers' own values are replaced)."""
    if supplied.empty:
        return source
    series = []
    for one in source.series:
        images = one.images
        if supplied.voxel_size is not None:
            images = [_with_voxel_size(image, supplied.voxel_size) for image in images]
        completed = ImageSeries(one.name, images)
        if supplied.slice_spacing is not None:
            completed = _spaced(completed, supplied.slice_spacing)
        series.append(completed)
    return ExportInput(source.header_xml, series, source.source)
