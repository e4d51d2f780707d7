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
from .spec import PhantomSpec, acquired_lines

__all__ = [
    "PhantomSpec",
    "acquisition_count",
    "noise_covariance",
    "acquired_lines",
    "ground_truth",
    "iter_messages",
    "noise_std",
    "object_volume",
    "slice_order",
    "write_hdf5",
    "write_stream",
]
