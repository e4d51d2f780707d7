"""Multi-coil Cartesian Shepp-Logan raw data, as the MRD messages a scanner would send.

The generator works one slice of one repetition at a time (k-space of a slice is computed
once and reused across repetitions when it is small), so arbitrarily long scans stream in
bounded memory.  Scanner order per repetition: slices interleaved (even slices, then odd), and
within a slice partition by partition, ky line by ky line, each line ``averages`` times, all
contrasts (echoes) of a line back to back.

The spec, header, object and coil maps live in :mod:`.spec`, :mod:`.header`,
:mod:`.shepp_logan` and :mod:`.coils`; the package's ``__init__`` lists the public names.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import scipy.fft

from ..protocol.encode import StreamWriter
from ..protocol.layout import AcquisitionFlag
from ..protocol.messages import Acquisition, Header, Message
from .coils import coil_sensitivities, coil_sensitivities_3d
from .geometry import MARKER_VALUE, marker_voxel, slice_centre
from .header import header_xml
from .noncartesian import noncartesian_ground_truth
from .scan import (
    CACHE_BYTES,
    SAMPLE_TIME_US,
    Scan,
    coil_correlation,
    coloured_noise,
    complex_noise,
    noise_std,
    slice_depth,
    slice_order,
)
from .shepp_logan import phantom_object
from .spec import (
    NOISE_BANDWIDTH,
    PhantomSpec,
    calibration_range,
    partition_lines,
    readout_count,
    readout_window,
)

__all__ = [
    "acquisition_count",
    "ground_truth",
    "noise_covariance",
    "iter_messages",
    "object_volume",
    "write_hdf5",
    "write_stream",
]


def _bit(flag: AcquisitionFlag) -> int:
    return 1 << (int(flag) - 1)


def object_volume(spec: PhantomSpec, slice: int = 0, contrast: int = 0) -> np.ndarray:
    """The real object of one slice and contrast, float32 ``[partitions, matrix, matrix]``.

    With a marker, its voxel holds :data:`.geometry.MARKER_VALUE` in every contrast.
    """
    volume = np.stack(
        [
            phantom_object(spec.matrix, slice_depth(spec, slice, p), contrast)
            for p in range(spec.partitions)
        ]
    )
    marker = marker_voxel(spec)
    if marker is not None and marker[0] == slice:
        volume[marker[1:]] = MARKER_VALUE
    return volume


def ground_truth(
    spec: PhantomSpec, slice: int = 0, contrast: int = 0, repetition: int = 0
) -> np.ndarray:
    """The image a plain recon of fully sampled, noise-free data gives.

    Radial and spiral scans (``spec.trajectory``): what a perfect scan of the trajectory
    sees, :func:`.noncartesian.noncartesian_ground_truth` (the analytic spectrum on the
    Cartesian grid kept inside the disc the trajectory covers, transformed back, RSS over
    coils).  Cartesian scans:

    Relation: k-space of coil ``c`` is ``F(pad_x(object * S_c))`` with ``F`` the centered
    orthonormal DFT over (z, y, x) (z only in 3D), ``pad_x`` zero-padding x from ``matrix``
    to ``matrix * oversampling`` samples (the object centred, ``(readout - matrix) // 2``
    zeros before it), and ``S_c`` the :func:`coil_sensitivities` (with k2 acceleration the
    3D :func:`coil_sensitivities_3d`, which also vary along the slab).  The centered orthonormal
    inverse DFT, cropping x back to ``matrix`` around the centre and RSS over coils then give
    ``|object|`` exactly, because ``sum_c |S_c|**2 == 1``.  Noise: complex Gaussian of
    ``noise_level`` standard deviation (``E|n|**2``) is added to the *unnormalised* DFT, as a
    scanner's signal sums over all voxels; in the orthonormal scaling of the data that is
    ``noise_level / sqrt(readout * matrix * partitions)`` per sample, so SNR does not depend
    on how the FFT is normalised.  The object does not change with ``repetition``.

    Returns
    -------
    float32 ``[partitions, matrix, matrix]`` (rows y, columns x).
    """
    del repetition
    if not spec.is_cartesian:
        return noncartesian_ground_truth(spec, slice, contrast)
    return np.abs(object_volume(spec, slice, contrast)).astype(np.float32)


def _clean_kspace(spec: PhantomSpec, slice: int, maps: np.ndarray) -> np.ndarray:
    """Noise-free k-space of one slice, complex64 ``[contrasts, partitions, ky, coils, kx]``."""
    out = np.empty(
        (spec.contrasts, spec.partitions, spec.matrix, spec.coils, spec.readout), np.complex64
    )
    start = (spec.readout - spec.matrix) // 2
    axes = (1, 2, 3)
    for contrast in range(spec.contrasts):
        padded = np.zeros((spec.coils, spec.partitions, spec.matrix, spec.readout), np.complex64)
        volume = object_volume(spec, slice, contrast)
        profile = maps if maps.ndim == 4 else maps[:, np.newaxis]
        padded[..., start : start + spec.matrix] = volume[np.newaxis] * profile
        kspace = scipy.fft.fftshift(
            scipy.fft.fftn(scipy.fft.ifftshift(padded, axes=axes), axes=axes, norm="ortho"),
            axes=axes,
        )
        out[contrast] = kspace.transpose(1, 2, 0, 3)
    return out


def noise_covariance(spec: PhantomSpec) -> np.ndarray:
    """The coil noise covariance of one imaging sample, complex128 ``[coils, coils]``.

    ``noise_std(spec)**2`` times the identity, or with ``noise_correlation`` the correlation
    of :func:`_coil_correlation`.  The noise scan's covariance is this times
    ``NOISE_BANDWIDTH * 5 us / noise_dwell_time_us`` (its bandwidth is wider by the dwell-time
    ratio, and the receiver's noise bandwidth is 0.793 of it).
    """
    base = coil_correlation(spec) if spec.noise_correlation > 0 else np.eye(spec.coils)
    return (noise_std(spec) ** 2 * base).astype(np.complex128)


def _noise_scan(spec: PhantomSpec, scan: Scan) -> Iterator[Acquisition]:
    """``noise_lines`` noise-only lines with the noise scan's own dwell time (and power)."""
    rng = np.random.default_rng([spec.seed, 0xC0FFEE])
    std = noise_std(spec) * np.sqrt(NOISE_BANDWIDTH * SAMPLE_TIME_US / spec.noise_dwell_time_us)
    for _ in range(spec.noise_lines):
        data = coloured_noise(spec, complex_noise(rng, (spec.coils, spec.readout), float(std)))
        acq = scan.acquisition(data, _bit(AcquisitionFlag.IS_NOISE_MEASUREMENT), 0)
        acq.head["position"] = (0.0, 0.0, 0.0)
        acq.head["sample_time_us"] = spec.noise_dwell_time_us
        yield acq


def _line_flags(in_pattern: bool, in_calibration: bool) -> int:
    if not in_calibration:
        return 0
    if in_pattern:
        return _bit(AcquisitionFlag.IS_PARALLEL_CALIBRATION_AND_IMAGING)
    return _bit(AcquisitionFlag.IS_PARALLEL_CALIBRATION)


Shot = tuple[int, int, bool, bool]
"""``(kz, ky, in_pattern, in_calibration)`` of one acquired line."""


def _imaging_shots(spec: PhantomSpec, calibrated: bool) -> list[Shot]:
    return [
        (kz, ky, pattern, calibration)
        for kz in range(spec.partitions)
        for ky, pattern, calibration in partition_lines(spec, kz, calibrated)
    ]


def _reference_shots(spec: PhantomSpec) -> list[Shot]:
    """The calibration region of a slice, flagged calibration-only (``calibration=separate``)."""
    partitions = {kz for kz in range(spec.partitions) for _, _, c in partition_lines(spec, kz) if c}
    return [(kz, ky, False, True) for kz in sorted(partitions) for ky in calibration_range(spec)]


def _slice_heads(
    spec: PhantomSpec,
    scan: Scan,
    slice: int,
    repetition: int,
    stamp: int,
    shots: list[Shot],
    reference: bool = False,
) -> np.ndarray:
    """Headers of every acquisition of one slice of one repetition, in scanner order.

    Built as one structured array (no per-acquisition Python work): order is shot (partition,
    ky line), average, contrast, the last varying fastest.  A reference block (``reference``)
    carries no slice flags, so it closes nothing.
    """
    grid = np.meshgrid(
        np.arange(len(shots)),
        np.arange(spec.averages),
        np.arange(spec.contrasts),
        indexing="ij",
    )
    n, average, contrast = (axis.ravel() for axis in grid)
    shot_kz = np.array([shot[0] for shot in shots])
    kz, ky = shot_kz[n], np.array([shot[1] for shot in shots])[n]
    line_flags = np.array([_line_flags(p, c) for _, _, p, c in shots], dtype=np.uint64)
    flags = line_flags[n]
    first_of_kz = np.r_[True, shot_kz[1:] != shot_kz[:-1]]
    last_of_kz = np.r_[shot_kz[1:] != shot_kz[:-1], True]
    conditions = {
        AcquisitionFlag.FIRST_IN_ENCODE_STEP1: first_of_kz[n],
        AcquisitionFlag.LAST_IN_ENCODE_STEP1: last_of_kz[n],
        AcquisitionFlag.FIRST_IN_ENCODE_STEP2: (kz == 0) & spec.is_3d,
        AcquisitionFlag.LAST_IN_ENCODE_STEP2: (kz == spec.partitions - 1) & spec.is_3d,
    }
    if not reference:
        conditions[AcquisitionFlag.FIRST_IN_SLICE] = (n == 0) & (average == 0)
        conditions[AcquisitionFlag.LAST_IN_SLICE] = (n == len(shots) - 1) & (
            average == spec.averages - 1
        )
    for flag, where in conditions.items():
        flags[where] |= np.uint64(_bit(flag))
    heads = np.empty(n.size, dtype=scan.head.dtype)
    heads[:] = scan.head
    first_sample, heads["center_sample"] = readout_window(spec)
    heads["number_of_samples"] = spec.readout - first_sample
    heads["flags"] = flags
    heads["scan_counter"] = scan.scan_counter + 1 + np.arange(n.size)
    scan.scan_counter += n.size
    shot = n * spec.averages + average
    heads["acquisition_time_stamp"] = stamp + shot * scan.ticks_per_shot + contrast
    heads["position"] = slice_centre(spec, slice)
    counters = heads["idx"]
    counters["kspace_encode_step_1"] = ky
    counters["kspace_encode_step_2"] = kz
    counters["average"] = average
    counters["slice"] = slice
    counters["contrast"] = contrast
    counters["repetition"] = repetition
    return heads


def _slice_messages(
    spec: PhantomSpec,
    scan: Scan,
    kspace: np.ndarray,
    slice: int,
    repetition: int,
    stamp: int,
    shots: list[Shot],
    reference: bool = False,
) -> Iterator[Acquisition]:
    """Every acquisition of one slice of one repetition, in scanner order (flags partly set)."""
    heads = _slice_heads(spec, scan, slice, repetition, stamp, shots, reference)
    seed = [spec.seed, 0xCA1, slice] if reference else [spec.seed, repetition, slice]
    rng = np.random.default_rng(seed)
    std = noise_std(spec)
    no_traj = np.zeros((spec.readout, 0), np.float32)
    per_shot = spec.averages * spec.contrasts
    kzs = [shot[0] for shot in shots]
    first_sample = readout_window(spec)[0]
    done = 0
    for kz in sorted(set(kzs), key=kzs.index):
        count = kzs.count(kz) * per_shot
        noise = coloured_noise(spec, complex_noise(rng, (count, spec.coils, spec.readout), std))
        for i in range(count):
            head = heads[done + i]
            idx = head["idx"]
            ky, contrast = int(idx["kspace_encode_step_1"]), int(idx["contrast"])
            traj = scan.trajectory(ky, kz) if scan.traj_dims else no_traj
            data = noise[i]
            data += kspace[contrast, kz, ky]
            if first_sample:  # an asymmetric echo: the first samples were never acquired
                data, traj = data[:, first_sample:], traj[first_sample:]
            yield Acquisition(head=head, traj=traj, data=data)
        done += count


def acquisition_count(spec: PhantomSpec) -> int:
    """How many acquisitions the scan holds (noise scan and reference block included)."""
    per_shot = spec.averages * spec.contrasts
    noise = spec.noise_lines if spec.noise_calibration else 0
    if not spec.is_cartesian:
        readouts = readout_count(spec) * spec.partitions * spec.slices * spec.repetitions
        return readouts * per_shot + noise
    calibrated = len(_imaging_shots(spec, spec.calibration != "separate"))
    plain = len(_imaging_shots(spec, False))
    first = calibrated if spec.calibration in ("embedded", "first") else plain
    later = calibrated if spec.calibration == "embedded" else plain
    reference = len(_reference_shots(spec)) if spec.calibration == "separate" else 0
    total = (first + later * (spec.repetitions - 1) + reference) * per_shot * spec.slices
    return total + (spec.noise_lines if spec.noise_calibration else 0)


RepetitionSource = Callable[[PhantomSpec, "Scan"], Iterator[Iterator[Acquisition]]]
"""Yields, per repetition, the repetition's acquisitions in scanner order (flags of slices set,
repetition and measurement flags not yet)."""


def _cartesian_repetitions(spec: PhantomSpec, scan: Scan) -> Iterator[Iterator[Acquisition]]:
    maps = (
        coil_sensitivities_3d(spec.matrix, spec.coils, spec.partitions)
        if spec.acceleration_2 > 1
        else coil_sensitivities(spec.matrix, spec.coils)
    )
    volume_bytes = spec.contrasts * spec.partitions * spec.matrix * spec.coils * spec.readout * 8
    cache: dict[int, np.ndarray] | None = (
        {} if volume_bytes * spec.slices <= CACHE_BYTES and spec.repetitions > 1 else None
    )
    stamp = scan.ticks_per_shot
    separate = spec.calibration == "separate" and spec.calibration_width > 0

    def repetition_messages(repetition: int) -> Iterator[Acquisition]:
        nonlocal stamp
        calibrated = spec.calibration == "embedded" or (
            spec.calibration == "first" and repetition == 0
        )
        shots = _imaging_shots(spec, calibrated)
        for slice in slice_order(spec.slices):
            if cache is not None and slice in cache:
                kspace = cache[slice]
            else:
                kspace = _clean_kspace(spec, slice, maps)
                if cache is not None:
                    cache[slice] = kspace
            messages = _slice_messages(spec, scan, kspace, slice, repetition, stamp, shots)
            if separate and repetition == 0:
                reference = _reference_shots(spec)
                block = _slice_messages(
                    spec, scan, kspace, slice, 0, stamp, reference, reference=True
                )
                stamp += len(reference) * spec.averages * scan.ticks_per_shot
                messages = itertools.chain(block, messages)
            yield from messages
            stamp += len(shots) * spec.averages * scan.ticks_per_shot
            del kspace

    for repetition in range(spec.repetitions):
        yield repetition_messages(repetition)


def _repetition_source(spec: PhantomSpec) -> RepetitionSource:
    if spec.trajectory == "cartesian":
        return _cartesian_repetitions
    from .noncartesian import readout_repetitions

    return readout_repetitions


def _acquisitions(spec: PhantomSpec) -> Iterator[Acquisition]:
    """Imaging acquisitions of the whole scan; repetition and measurement flags set here."""
    scan = Scan(spec)
    if spec.noise_calibration:
        yield from _noise_scan(spec, scan)
    pending: Acquisition | None = None
    for messages in _repetition_source(spec)(spec, scan):
        first_of_repetition = True
        for acq in messages:
            if first_of_repetition:
                acq.head["flags"] |= _bit(AcquisitionFlag.FIRST_IN_REPETITION)
                first_of_repetition = False
            if pending is not None:
                yield pending
            pending = acq
        assert pending is not None
        pending.head["flags"] |= _bit(AcquisitionFlag.LAST_IN_REPETITION)
    assert pending is not None
    pending.head["flags"] |= _bit(AcquisitionFlag.LAST_IN_MEASUREMENT)
    yield pending


def iter_messages(spec: PhantomSpec) -> Iterator[Message]:
    """Header, the noise scan (if asked for), then every acquisition in scanner order; no CLOSE."""
    yield Header(header_xml(spec))
    yield from _acquisitions(spec)


def write_stream(spec: PhantomSpec, sink: BinaryIO) -> None:
    """Write the scan as an MRD v1 stream, ending with CLOSE."""
    with StreamWriter(sink) as writer:
        for msg in iter_messages(spec):
            writer.write(msg)


def write_hdf5(spec: PhantomSpec, path: str | Path, group: str = "dataset") -> None:
    """Append the scan to ``group`` of an ISMRMRD HDF5 file (created when missing)."""
    from ..hdf5 import MrdHdf5Writer

    with MrdHdf5Writer(path, group) as writer:
        for msg in iter_messages(spec):
            writer.write(msg)
