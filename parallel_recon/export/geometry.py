"""Image geometry, converted once: MRD ImageHeader -> DICOM plane attributes and NIfTI affine.

Every exporter goes through this module, so a pixel has one world coordinate whatever the
format.  Conventions (all coordinates in mm):

* **MRD** (ISMRMRD ImageHeader): patient coordinates LPS (x to the patient's left, y to
  posterior, z to head).  Data ``[channels, z, y, x]``: x (columns) runs along ``read_dir``,
  y (rows) along ``phase_dir``, z (planes of a 3D image) along ``slice_dir``.  ``position``
  is the *centre of the image*: the grid of ``nx x ny x nz`` voxels of size
  ``field_of_view / matrix_size`` is centred on it, so voxel ``(x, y, z)`` lies at
  ``position + (x - (nx-1)/2) dx read_dir + (y - (ny-1)/2) dy phase_dir
  + (z - (nz-1)/2) dz slice_dir``.  The meta attributes ``ImageRowDir``, ``ImageColumnDir``
  and ``ImageSliceDir``, when present, override the three directions (ISMRMRD's rule for
  images flipped or rotated after reconstruction).
* **DICOM** (Image Plane module): also LPS.  ``ImagePositionPatient`` is the centre of the
  *first* pixel (row 0, column 0), not the image centre: half a pixel matters.
  ``ImageOrientationPatient`` is the row direction then the column direction, and
  ``PixelSpacing`` is *row spacing* (between rows, along the column direction) then
  *column spacing*.
* **NIfTI**: RAS (x to the right, y anterior), so the affine is the LPS one with its first two
  rows negated.  The voxel order is the one ``dcm2niix`` writes, so that our files and
  dcm2niix's agree voxel for voxel: i along the rows (column index), j from the last row to
  the first, k along the slice normal ``row x column``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import GeometryError

__all__ = [
    "LPS_TO_RAS",
    "ImageGeometry",
    "Plane",
    "StackedVolume",
    "nifti_affine",
    "nifti_voxels",
    "stack_planes",
]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Converts homogeneous LPS coordinates (DICOM, MRD) to RAS (NIfTI) and back (its own inverse)."""

_UNIT_TOLERANCE = 1e-3
"""Direction cosines must have unit length and be orthogonal to this tolerance."""
_SAME_DIRECTION = 1e-4
"""Planes stack into one volume when their directions differ by less than this."""
_POSITION_TOLERANCE_MM = 1e-3
"""Gaps between stacked planes may differ by this much (float32 positions carry ~1e-5 mm)."""

_META_DIRECTIONS = {"row": "ImageRowDir", "column": "ImageColumnDir", "slice": "ImageSliceDir"}


def _vector(values: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(3)


def _meta_vector(meta: Mapping[str, Sequence[str]], name: str, where: str) -> np.ndarray | None:
    values = meta.get(name)
    if not values:
        return None
    try:
        return _vector([float(v) for v in values])
    except ValueError:
        raise GeometryError(
            f"{where}: meta attribute {name} is {list(values)!r}; expected three numbers"
        ) from None


def _unit(vector: np.ndarray, name: str, where: str) -> np.ndarray:
    length = float(np.linalg.norm(vector))
    if not math.isfinite(length) or abs(length - 1.0) > _UNIT_TOLERANCE:
        raise GeometryError(
            f"{where}: {name} is {tuple(float(v) for v in vector)} (length {length:.6g}); "
            "expected a unit direction cosine, so the image cannot be placed in the patient"
        )
    return vector / length


@dataclass(frozen=True)
class Plane:
    """One 2D plane of an image, as DICOM's Image Plane module describes it.

    Attributes
    ----------
    position:
        float64 ``(3,)`` LPS centre of the first pixel (row 0, column 0), mm.
    row_dir, column_dir:
        float64 ``(3,)`` unit vectors: the direction of increasing column index (along a row)
        and of increasing row index (down a column).
    spacing:
        ``(column spacing dx, row spacing dy)`` in mm: the distance between neighbouring
        columns (along ``row_dir``) and rows (along ``column_dir``).
    thickness:
        Slice thickness in mm.
    shape:
        ``(rows, columns)``.
    """

    position: np.ndarray
    row_dir: np.ndarray
    column_dir: np.ndarray
    spacing: tuple[float, float]
    thickness: float
    shape: tuple[int, int]

    @property
    def normal(self) -> np.ndarray:
        """``row_dir x column_dir``: the direction DICOM readers stack planes along."""
        return np.cross(self.row_dir, self.column_dir)

    @property
    def location(self) -> float:
        """Distance of the plane from the origin along its normal (DICOM SliceLocation), mm."""
        return float(self.position @ self.normal)

    def lps(self, row: float, column: float) -> np.ndarray:
        """LPS coordinate of pixel ``(row, column)``'s centre, mm."""
        dx, dy = self.spacing
        return self.position + column * dx * self.row_dir + row * dy * self.column_dir


@dataclass(frozen=True)
class ImageGeometry:
    """Where the voxels of one MRD image lie, from its ImageHeader (and meta attributes).

    Attributes
    ----------
    matrix:
        ``(nx, ny, nz)``: columns, rows, planes.
    spacing:
        ``(dx, dy, dz)`` mm: ``field_of_view / matrix_size`` per axis; for a 2D image ``dz`` is
        the slice thickness.
    centre:
        float64 ``(3,)`` LPS centre of the voxel grid (the header's ``position``).
    row_dir, column_dir, slice_dir:
        float64 ``(3,)`` unit vectors along x, y and z.
    """

    matrix: tuple[int, int, int]
    spacing: tuple[float, float, float]
    centre: np.ndarray
    row_dir: np.ndarray
    column_dir: np.ndarray
    slice_dir: np.ndarray

    @classmethod
    def from_header(
        cls,
        head: np.void,
        meta: Mapping[str, Sequence[str]] | None = None,
        where: str = "image",
    ) -> ImageGeometry:
        """The geometry of an ImageHeader record; GeometryError when it cannot place voxels."""
        meta = meta or {}
        matrix = tuple(int(v) for v in head["matrix_size"])
        fov = tuple(float(v) for v in head["field_of_view"])
        if any(n < 1 for n in matrix) or not all(math.isfinite(f) and f > 0 for f in fov):
            raise GeometryError(
                f"{where}: field_of_view {fov} mm over matrix_size {matrix}; expected positive "
                "sizes, so the pixel spacing is unknown: give it with --voxel-size X,Y,Z (mm)"
            )
        directions = {
            "row": _meta_vector(meta, _META_DIRECTIONS["row"], where),
            "column": _meta_vector(meta, _META_DIRECTIONS["column"], where),
            "slice": _meta_vector(meta, _META_DIRECTIONS["slice"], where),
        }
        row = _unit(
            _vector(head["read_dir"]) if directions["row"] is None else directions["row"],
            "read_dir (row direction)",
            where,
        )
        column = _unit(
            _vector(head["phase_dir"]) if directions["column"] is None else directions["column"],
            "phase_dir (column direction)",
            where,
        )
        if abs(float(row @ column)) > _UNIT_TOLERANCE:
            raise GeometryError(
                f"{where}: row and column directions {tuple(row)} and {tuple(column)} are not "
                "orthogonal; expected the read and phase directions of one plane"
            )
        slice_ = _vector(head["slice_dir"]) if directions["slice"] is None else directions["slice"]
        if matrix[2] > 1 or float(np.linalg.norm(slice_)) > 0:
            slice_ = _unit(slice_, "slice_dir", where)
        else:  # a 2D image may leave slice_dir unset: its planes need only the normal
            slice_ = np.cross(row, column)
        centre = _vector(head["position"])
        if not np.all(np.isfinite(centre)):
            raise GeometryError(f"{where}: position {tuple(centre)} is not finite")
        nx, ny, nz = matrix
        spacing = (fov[0] / nx, fov[1] / ny, fov[2] / nz)
        return cls((nx, ny, nz), spacing, centre, row, column, slice_)

    def lps_affine(self) -> np.ndarray:
        """float64 ``4x4`` taking voxel indices ``(x, y, z, 1)`` to LPS mm."""
        axes = np.stack([self.row_dir, self.column_dir, self.slice_dir], axis=1)
        affine = np.eye(4)
        affine[:3, :3] = axes * np.asarray(self.spacing)
        half = (np.asarray(self.matrix, dtype=np.float64) - 1) / 2
        affine[:3, 3] = self.centre - affine[:3, :3] @ half
        return affine

    def voxel_lps(self, x: float, y: float, z: float = 0.0) -> np.ndarray:
        """LPS coordinate of the centre of voxel ``(x, y, z)`` (column, row, plane), mm."""
        return (self.lps_affine() @ np.array([x, y, z, 1.0]))[:3]

    def plane(self, z: int) -> Plane:
        """Plane ``z`` of the image, with its first pixel's centre as DICOM wants it."""
        nx, ny, _ = self.matrix
        dx, dy, dz = self.spacing
        return Plane(
            position=self.voxel_lps(0, 0, z),
            row_dir=self.row_dir,
            column_dir=self.column_dir,
            spacing=(dx, dy),
            thickness=dz,
            shape=(ny, nx),
        )


@dataclass(frozen=True)
class StackedVolume:
    """Planes stacked into one regular 3D grid.

    Attributes
    ----------
    order:
        Indices into the planes given to :func:`stack_planes`, sorted along the normal.
    lps_affine:
        float64 ``4x4`` taking ``(column, row, k, 1)`` to LPS mm, ``k`` counting the sorted
        planes.
    shape:
        ``(rows, columns)`` of every plane.
    """

    order: tuple[int, ...]
    lps_affine: np.ndarray
    shape: tuple[int, int]

    def same_grid(self, other: StackedVolume) -> bool:
        """True when both volumes put every voxel at the same place (so they can be 4D)."""
        return (
            self.shape == other.shape
            and len(self.order) == len(other.order)
            and bool(np.allclose(self.lps_affine, other.lps_affine, atol=_POSITION_TOLERANCE_MM))
        )


def _same_plane_kind(first: Plane, plane: Plane) -> bool:
    return (
        plane.shape == first.shape
        and np.allclose(plane.row_dir, first.row_dir, atol=_SAME_DIRECTION)
        and np.allclose(plane.column_dir, first.column_dir, atol=_SAME_DIRECTION)
        and np.allclose(plane.spacing, first.spacing, rtol=1e-5, atol=0)
    )


def stack_planes(planes: Sequence[Plane], where: str = "volume") -> StackedVolume:
    """Sort planes along their normal and check that they form a regular grid.

    A single plane is one slice thick.  Several planes must share shape, directions and pixel
    spacing, and follow each other at equal steps (a step that is not along the normal, as
    in a tilted stack, is kept in the affine).  GeometryError says which rule fails.
    """
    if not planes:
        raise GeometryError(f"{where}: no planes to stack")
    first = planes[0]
    for i, plane in enumerate(planes):
        if not _same_plane_kind(first, plane):
            raise GeometryError(
                f"{where}: plane {i} differs from plane 0 in shape, orientation or pixel "
                "spacing; expected one regular grid (export each image separately with "
                "--to dicom or --to npy)"
            )
    normal = first.normal
    order = tuple(sorted(range(len(planes)), key=lambda i: float(planes[i].position @ normal)))
    positions = np.stack([planes[i].position for i in order])
    if len(planes) == 1:
        step = first.thickness * normal
    else:
        gaps = np.diff(positions, axis=0)
        step = (positions[-1] - positions[0]) / (len(planes) - 1)
        deviation = float(np.max(np.linalg.norm(gaps - step, axis=1)))
        if float(np.max(np.linalg.norm(positions - positions[0], axis=1))) < _POSITION_TOLERANCE_MM:
            raise GeometryError(
                f"{where}: all {len(planes)} planes lie at one position (gaps 0 mm), so their "
                "spacing is unknown: give the distance between them with --slice-spacing MM"
            )
        if float(np.linalg.norm(step)) < _POSITION_TOLERANCE_MM or deviation > max(
            _POSITION_TOLERANCE_MM, 1e-4 * float(np.linalg.norm(step))
        ):
            distances = np.round(gaps @ normal, 4).tolist()
            raise GeometryError(
                f"{where}: planes are not evenly spaced along the normal (gaps {distances} mm); "
                "expected a regular grid (two images at one position, or a missing slice?); "
                "--slice-spacing MM places them evenly in slice order"
            )
    dx, dy = first.spacing
    affine = np.eye(4)
    affine[:3, 0] = first.row_dir * dx
    affine[:3, 1] = first.column_dir * dy
    affine[:3, 2] = step
    affine[:3, 3] = positions[0]
    return StackedVolume(order, affine, first.shape)


def nifti_affine(volume: StackedVolume) -> np.ndarray:
    """The RAS affine of :func:`nifti_voxels`' array: rows reversed, as dcm2niix writes them."""
    affine = volume.lps_affine.copy()
    rows = volume.shape[0]
    affine[:3, 3] += affine[:3, 1] * (rows - 1)
    affine[:3, 1] *= -1
    return LPS_TO_RAS @ affine


def nifti_voxels(planes: np.ndarray) -> np.ndarray:
    """``[k, rows, columns, ...]`` (planes sorted along the normal) -> NIfTI ``[i, j, k, ...]``.

    i is the column, j the row counted from the last row, k the plane: the order of
    :func:`nifti_affine`.  Trailing axes (volumes) stay last.
    """
    voxels = np.moveaxis(planes, (0, 1, 2), (2, 1, 0))
    return voxels[:, ::-1]
