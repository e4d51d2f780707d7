"""Simulated multi-coil Cartesian raw data (Shepp-Logan) with its exact ground truth."""

from __future__ import annotations

from .generate import (
    acquisition_count,
    ground_truth,
    iter_messages,
    noise_covariance,
    noise_std,
    object_volume,
    slice_order,
    write_hdf5,
    write_stream,
)
from .geometry import ORIENTATIONS, marker_position, marker_voxel, voxel_position
from .spec import PhantomSpec, acquired_lines

__all__ = [
    "ORIENTATIONS",
    "PhantomSpec",
    "acquisition_count",
    "noise_covariance",
    "acquired_lines",
    "ground_truth",
    "iter_messages",
    "marker_position",
    "marker_voxel",
    "noise_std",
    "object_volume",
    "slice_order",
    "voxel_position",
    "write_hdf5",
    "write_stream",
]
