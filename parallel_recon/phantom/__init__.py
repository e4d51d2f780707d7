"""Simulated multi-coil Shepp-Logan raw data (Cartesian, radial, spiral) with its ground truth."""

from __future__ import annotations

from .generate import (
    acquisition_count,
    ground_truth,
    iter_messages,
    noise_covariance,
    object_volume,
    write_hdf5,
    write_stream,
)
from .geometry import ORIENTATIONS, marker_position, marker_voxel, voxel_position
from .noncartesian import readout_samples, readout_trajectories
from .scan import noise_std, slice_order
from .spec import TRAJECTORIES, PhantomSpec, acquired_lines, readout_count

__all__ = [
    "ORIENTATIONS",
    "PhantomSpec",
    "TRAJECTORIES",
    "acquisition_count",
    "noise_covariance",
    "acquired_lines",
    "ground_truth",
    "iter_messages",
    "marker_position",
    "marker_voxel",
    "noise_std",
    "object_volume",
    "readout_count",
    "readout_samples",
    "readout_trajectories",
    "slice_order",
    "voxel_position",
    "write_hdf5",
    "write_stream",
]
