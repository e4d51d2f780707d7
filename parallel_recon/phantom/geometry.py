"""Where the simulated scan lies in the patient: orientation, position, and the marker dot.

The phantom is the ground truth for every geometry test, so this module states the
convention once, in the terms of the ISMRMRD headers it writes (patient coordinates LPS, mm):

* ``read_dir`` runs along image columns (x), ``phase_dir`` along image rows (y) and
  ``slice_dir = read_dir x phase_dir`` along slices / partitions (z).
* ``position`` of an acquisition is the centre of its slice (2D) or slab (3D); the pixel grid
  is centred on it, so the voxel at column ``j``, row ``i``, partition ``p`` of an
  ``N x N x P`` grid lies at ``position + (j - (N-1)/2) dx read_dir + (i - (N-1)/2) dy phase_dir
  + (p - (P-1)/2) dz slice_dir`` (ISMRMRD: the position is the centre of the image).
* Slices (2D) and slabs (3D) are stacked one thickness apart along ``slice_dir``, centred on
  the spec's ``position``.

The recon reproduces the object pixel for pixel (row ``i`` of the object is row ``i`` of the
image), so :func:`voxel_position` is the exact world coordinate of every reconstructed voxel.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from ..errors import ConfigurationError

__all__ = [
    "FOV_MM",
    "MARKER_VALUE",
    "ORIENTATIONS",
    "PARTITION_THICKNESS_MM",
    "SLICE_THICKNESS_MM",
    "ScanLayout",
    "Vector",
    "Voxel",
    "directions",
    "marker_position",
    "marker_voxel",
    "nearest_voxel",
    "orientation_problem",
    "slice_centre",
    "voxel_position",
]

FOV_MM = 300.0
"""Field of view along read and phase (the recon space; the readout's is ``oversampling`` x)."""
SLICE_THICKNESS_MM = 6.0
PARTITION_THICKNESS_MM = 2.0

MARKER_VALUE = 2.0
"""Intensity of the marker voxel: twice the brightest part of the Shepp-Logan object."""

Voxel = tuple[int, int, int, int]
"""``(slice, partition, row, column)`` of one voxel of the scan."""


class ScanLayout(Protocol):
    """What the geometry reads of a scan's parameters (a :class:`.spec.PhantomSpec`).

    A protocol rather than the spec class itself, so that this module sits below the spec,
    which checks its orientation and marker with the functions here.
    """

    @property
    def matrix(self) -> int: ...
    @property
    def slices(self) -> int: ...
    @property
    def partitions(self) -> int: ...
    @property
    def orientation(self) -> str: ...
    @property
    def position(self) -> tuple[float, float, float]: ...
    @property
    def marker(self) -> tuple[float, float, float] | None: ...
    @property
    def is_3d(self) -> bool: ...


def _rotation(about_l: float, about_p: float, about_s: float) -> np.ndarray:
    """Rotation by angles in degrees about the L, then P, then S axis (columns: new axes)."""
    a, b, c = (math.radians(v) for v in (about_l, about_p, about_s))
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


Vector = tuple[float, float, float]


def _rotated_frame(about_l: float, about_p: float, about_s: float) -> tuple[Vector, Vector]:
    """``(read_dir, phase_dir)`` of the axial frame turned by :func:`_rotation`."""
    rotation = _rotation(about_l, about_p, about_s)
    read, phase = rotation[:, 0], rotation[:, 1]
    return (
        (float(read[0]), float(read[1]), float(read[2])),
        (float(phase[0]), float(phase[1]), float(phase[2])),
    )


ORIENTATIONS: dict[str, tuple[Vector, Vector]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "oblique": _rotated_frame(30.0, -15.0, 20.0),
}
"""Named orientations: ``(read_dir, phase_dir)`` in LPS.  ``oblique`` is the axial frame
rotated by 30 degrees about L, -15 about P and 20 about S, so every direction has three
non-zero components (any swapped or sign-flipped axis moves every voxel)."""


def _parse_angles(text: str) -> Vector | None:
    parts = text.split(",")
    if len(parts) != 3:
        return None
    try:
        l_angle, p_angle, s_angle = (float(p) for p in parts)
    except ValueError:
        return None
    angles = (l_angle, p_angle, s_angle)
    return angles if all(math.isfinite(a) for a in angles) else None


def orientation_problem(orientation: str) -> str | None:
    """Why ``orientation`` is not a valid name or ``L,P,S`` angle triple (None when it is)."""
    if orientation in ORIENTATIONS or _parse_angles(orientation) is not None:
        return None
    return (
        f"orientation must be one of {', '.join(ORIENTATIONS)} or three rotation angles in "
        f"degrees 'L,P,S', got {orientation!r}"
    )


def directions(spec: ScanLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(read_dir, phase_dir, slice_dir)`` of the scan, float64 unit vectors in LPS."""
    if spec.orientation in ORIENTATIONS:
        read, phase = (np.array(v, dtype=np.float64) for v in ORIENTATIONS[spec.orientation])
    else:
        angles = _parse_angles(spec.orientation)
        assert angles is not None  # checked when the spec was made
        rotation = _rotation(*angles)
        read, phase = rotation[:, 0].copy(), rotation[:, 1].copy()
    return read, phase, np.cross(read, phase)


def _slab_thickness(spec: ScanLayout) -> float:
    return spec.partitions * PARTITION_THICKNESS_MM if spec.is_3d else SLICE_THICKNESS_MM


def _z_step(spec: ScanLayout) -> float:
    """Distance between neighbouring planes along slice_dir (partitions or slices)."""
    return PARTITION_THICKNESS_MM if spec.is_3d else SLICE_THICKNESS_MM


def slice_centre(spec: ScanLayout, slice: int) -> np.ndarray:
    """LPS centre of slice (2D) or slab (3D) ``slice``: the acquisitions' ``position``."""
    offset = (slice - (spec.slices - 1) / 2) * _slab_thickness(spec)
    # + 0.0 turns -0.0 into 0.0, so axial scans keep their exact header bytes
    return np.asarray(spec.position, dtype=np.float64) + offset * directions(spec)[2] + 0.0


def voxel_position(spec: ScanLayout, voxel: Voxel) -> np.ndarray:
    """LPS coordinate (mm, float64) of the centre of ``(slice, partition, row, column)``."""
    slice, partition, row, column = voxel
    read, phase, normal = directions(spec)
    pixel = FOV_MM / spec.matrix
    half = (spec.matrix - 1) / 2
    depth = (partition - (spec.partitions - 1) / 2) * PARTITION_THICKNESS_MM
    return (
        slice_centre(spec, slice)
        + (column - half) * pixel * read
        + (row - half) * pixel * phase
        + depth * normal
    )


def nearest_voxel(spec: ScanLayout, point: Vector) -> Voxel:
    """The voxel whose centre is nearest the LPS ``point``; ConfigurationError if outside."""
    read, phase, normal = directions(spec)
    offset = np.asarray(point, dtype=np.float64) - np.asarray(spec.position, dtype=np.float64)
    pixel = FOV_MM / spec.matrix
    half = (spec.matrix - 1) / 2
    column = round(float(offset @ read) / pixel + half)
    row = round(float(offset @ phase) / pixel + half)
    planes = spec.slices * spec.partitions
    plane = round(float(offset @ normal) / _z_step(spec) + (planes - 1) / 2)
    if not (0 <= column < spec.matrix and 0 <= row < spec.matrix and 0 <= plane < planes):
        raise ConfigurationError(
            f"marker {tuple(point)} mm (LPS) lies outside the imaged volume: expected a point "
            f"within {FOV_MM / 2:g} mm of the centre {tuple(spec.position)} along read and "
            f"phase and {planes * _z_step(spec) / 2:g} mm along the slice direction"
        )
    return (plane // spec.partitions, plane % spec.partitions, row, column)


def marker_voxel(spec: ScanLayout) -> Voxel | None:
    """``(slice, partition, row, column)`` of the marker dot, or None without a marker."""
    return None if spec.marker is None else nearest_voxel(spec, spec.marker)


def marker_position(spec: ScanLayout) -> np.ndarray | None:
    """Exact LPS coordinate (mm) of the marker voxel's centre, or None without a marker."""
    voxel = marker_voxel(spec)
    return None if voxel is None else voxel_position(spec, voxel)
