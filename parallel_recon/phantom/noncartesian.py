"""Radial, golden-angle radial and spiral scans of the phantom, from its analytic spectrum.

Trajectories (cycles per pixel of the recon matrix ``N``; ``kx`` along image columns, ``ky``
along rows):

- ``radial``: spoke ``i`` of ``n`` at angle ``i * 180 / n`` degrees, ``goldenangle``: at
  ``i * 111.246`` degrees; sample ``s`` of ``S = oversampling * N`` at radius
  ``(s - S/2) / S`` (the convention Gadgetron uses, and the engine's for radial data stored
  without trajectories).  Fully sampled: ``ceil(pi/2 * N)`` spokes.
- ``spiral``: Archimedean interleaves from the centre to radius 0.5, sampled at equal arc
  length (``oversampling`` samples per grid unit), interleave ``i`` of ``n`` rotated by
  ``360 i / n`` degrees.  Fully sampled: ``n = ceil(N / 8)`` interleaves whose arms are
  ``1 / (sqrt(2) FOV)`` apart, Nyquist for the field of view's diagonal (a spiral's alias is a
  ring at ``1 / spacing`` from the object, so a spacing of ``1 / FOV`` would fold the object
  into the square image's corners).  Fewer interleaves keep the same arms.

Samples are the analytic spectrum of the phantom and its coils (:mod:`.analytic`), exact at
every k position, plus noise as for Cartesian scans.  Stacks (``partitions > 1``) are
Cartesian along kz: ``kspace_encode_step_2`` is the partition, the samples the centred
orthonormal DFT over partitions, and the stored trajectory has a third, constant column
``(kz - P/2) / P``.

Stored unit: **cycles per pixel** (``traj_units=cycles_per_pixel``), ``trajectory_dimensions``
2 (3 for stacks).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from ..protocol.layout import AcquisitionFlag
from ..protocol.messages import Acquisition
from .analytic import coil_spectrum
from .scan import (
    CACHE_BYTES,
    Scan,
    coloured_noise,
    complex_noise,
    noise_std,
    slice_depth,
    slice_order,
)
from .spec import PhantomSpec, readout_count

__all__ = [
    "GOLDEN_ANGLE_DEG",
    "covered_radius",
    "noncartesian_ground_truth",
    "readout_repetitions",
    "readout_samples",
    "readout_trajectories",
]

GOLDEN_ANGLE_DEG = 180.0 * (math.sqrt(5.0) - 1.0) / 2.0
_ARC_TABLE = 65536
"""Points of the table that inverts a spiral's arc length."""


def _spiral_turns(spec: PhantomSpec) -> float:
    """Turns of one interleave: arms of the fully sampled set ``1 / (sqrt(2) FOV)`` apart."""
    full = math.ceil(spec.matrix / 8)
    return math.sqrt(2.0) * spec.matrix / (2 * full)


def _spiral_arm(spec: PhantomSpec) -> tuple[np.ndarray, np.ndarray]:
    """Radius (cycles per pixel) and angle of the samples of interleave 0."""
    turns = _spiral_turns(spec)
    pitch = (spec.matrix / 2) / (2 * math.pi * turns)  # grid units per radian
    theta = np.linspace(0.0, 2 * math.pi * turns, _ARC_TABLE)
    arc = (pitch / 2) * (theta * np.sqrt(1 + theta**2) + np.arcsinh(theta))
    samples = math.ceil(spec.oversampling * arc[-1]) + 1
    angles = np.interp(np.linspace(0.0, arc[-1], samples), arc, theta)
    return pitch * angles / spec.matrix, angles


def readout_samples(spec: PhantomSpec) -> int:
    """Samples of one readout."""
    if spec.trajectory == "spiral":
        return int(_spiral_arm(spec)[0].size)
    return spec.readout


def readout_trajectories(spec: PhantomSpec) -> np.ndarray:
    """float64 ``[readouts, samples, 2]``: (kx, ky) in cycles per pixel of every readout."""
    count = readout_count(spec)
    if spec.trajectory == "spiral":
        radius, angles = _spiral_arm(spec)
        turn = 2 * math.pi * np.arange(count) / count
        phi = angles[None, :] + turn[:, None]
        radius = np.broadcast_to(radius, phi.shape)
    else:
        samples = spec.readout
        step = GOLDEN_ANGLE_DEG if spec.trajectory == "goldenangle" else 180.0 / count
        phi = np.radians(step * np.arange(count))[:, None] * np.ones((1, samples))
        radius = np.broadcast_to((np.arange(samples) - samples / 2) / samples, phi.shape)
    return np.stack([radius * np.cos(phi), radius * np.sin(phi)], axis=-1)


def covered_radius(spec: PhantomSpec) -> float:
    """The radius of the disc the trajectory covers, cycles per pixel (0.5 for all three)."""
    del spec
    return 0.5


def _centred_dft_partitions(spectra: np.ndarray) -> np.ndarray:
    """Centred orthonormal DFT along axis 0 (partitions -> kz)."""
    return np.fft.fftshift(
        np.fft.fft(np.fft.ifftshift(spectra, axes=0), axis=0, norm="ortho"), axes=0
    )


def _slice_spectra(spec: PhantomSpec, slice: int, contrast: int, traj: np.ndarray) -> np.ndarray:
    """Noise-free samples of one slice, complex64 ``[kz, coils, readouts, samples]``."""
    kx, ky = traj[..., 0].ravel(), traj[..., 1].ravel()
    spectra = np.stack(
        [
            coil_spectrum(kx, ky, spec.matrix, spec.coils, slice_depth(spec, slice, p), contrast)
            for p in range(spec.partitions)
        ]
    )
    if spec.partitions > 1:
        spectra = _centred_dft_partitions(spectra)
    return spectra.reshape(spec.partitions, spec.coils, *traj.shape[:2]).astype(np.complex64)


def _bit(flag: AcquisitionFlag) -> int:
    return 1 << (int(flag) - 1)


def readout_repetitions(spec: PhantomSpec, scan: Scan) -> Iterator[Iterator[Acquisition]]:
    """Per repetition, its readouts in scanner order: slices interleaved, partition by
    partition, readout by readout, each ``averages`` times, contrasts back to back."""
    from .geometry import slice_centre

    traj = readout_trajectories(spec)
    count, samples = traj.shape[:2]
    stored = _stored_trajectories(spec, traj)
    slice_bytes = spec.contrasts * spec.partitions * spec.coils * traj[..., 0].size * 8
    keep = spec.repetitions > 1 and slice_bytes * spec.slices <= CACHE_BYTES
    cache: dict[tuple[int, int], np.ndarray] = {}
    stamp = scan.ticks_per_shot
    centre = 0 if spec.trajectory == "spiral" else samples // 2

    def slice_messages(repetition: int, slice: int) -> Iterator[Acquisition]:
        nonlocal stamp
        rng = np.random.default_rng([spec.seed, repetition, slice, 0x5A1])
        spectra = [
            cache[(slice, c)] if (slice, c) in cache else _slice_spectra(spec, slice, c, traj)
            for c in range(spec.contrasts)
        ]
        if keep:
            cache.update({(slice, c): spectra[c] for c in range(spec.contrasts)})
        shots = spec.partitions * count * spec.averages
        for shot in range(shots):
            kz, rest = divmod(shot, count * spec.averages)
            readout, average = divmod(rest, spec.averages)
            for contrast in range(spec.contrasts):
                white = complex_noise(rng, (spec.coils, samples), noise_std(spec))
                data = coloured_noise(spec, white)
                data += spectra[contrast][kz, :, readout]
                flags = _bit(AcquisitionFlag.FIRST_IN_SLICE) if shot == 0 else 0
                if shot == shots - 1:
                    flags |= _bit(AcquisitionFlag.LAST_IN_SLICE)
                acq = scan.acquisition(data, flags, stamp + contrast, stored[kz][readout])
                head = acq.head
                head["center_sample"] = centre
                head["position"] = slice_centre(spec, slice)
                idx = head["idx"]
                idx["kspace_encode_step_1"] = readout
                idx["kspace_encode_step_2"] = kz
                idx["average"] = average
                idx["slice"] = slice
                idx["contrast"] = contrast
                idx["repetition"] = repetition
                yield acq
            stamp += scan.ticks_per_shot

    def repetition_messages(repetition: int) -> Iterator[Acquisition]:
        for slice in slice_order(spec.slices):
            yield from slice_messages(repetition, slice)

    for repetition in range(spec.repetitions):
        yield repetition_messages(repetition)


def _stored_trajectories(spec: PhantomSpec, traj: np.ndarray) -> list[np.ndarray]:
    """Per partition, float32 ``[readouts, samples, dims]`` as stored in the acquisitions."""
    if spec.partitions == 1:
        return [traj.astype(np.float32)]
    out = []
    for kz in range(spec.partitions):
        column = np.full((*traj.shape[:2], 1), (kz - spec.partitions // 2) / spec.partitions)
        out.append(np.concatenate([traj, column], axis=2).astype(np.float32))
    return out


def noncartesian_ground_truth(spec: PhantomSpec, slice: int = 0, contrast: int = 0) -> np.ndarray:
    """What a perfect scan of this trajectory sees: per coil, the phantom's analytic spectrum
    on the Cartesian grid, kept inside the disc the trajectory covers, transformed back
    (centred orthonormal inverse DFT), then the root sum of squares over coils.

    Returns
    -------
    float32 ``[partitions, matrix, matrix]`` (rows y, columns x).
    """
    n = spec.matrix
    axis = (np.arange(n) - n // 2) / n
    ky, kx = np.meshgrid(axis, axis, indexing="ij")
    outside = np.hypot(kx, ky) > covered_radius(spec)
    out = np.empty((spec.partitions, n, n), np.float32)
    for p in range(spec.partitions):
        depth = slice_depth(spec, slice, p)
        grid = coil_spectrum(kx.ravel(), ky.ravel(), n, spec.coils, depth, contrast)
        grid = grid.reshape(spec.coils, n, n)
        grid[:, outside] = 0
        images = np.fft.fftshift(
            np.fft.ifft2(np.fft.ifftshift(grid, axes=(1, 2)), norm="ortho"), axes=(1, 2)
        )
        out[p] = np.sqrt((np.abs(images) ** 2).sum(axis=0))
    return out
