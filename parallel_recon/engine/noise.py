"""The noise scan in the pipeline: gathered by the reader, frozen once, shared with workers.

IS_NOISE_MEASUREMENT lines come first in a stream (or from ``--noise FILE``, read by the
supervisor before anything starts).  At the first line that is not noise the reader freezes
the covariance, scales it to the imaging lines' dwell time and the receiver's noise
bandwidth, computes the prewhitening matrix once and writes it into a small shared block
before any unit has closed, so every worker sees the same matrix for every unit.  Noise
lines that arrive after that are counted and reported, not used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from parallel_recon.workers.noise import (
    NoiseAccumulator,
    bandwidth_scale,
    channel_order,
    imaging_covariance,
    noise_figures,
    whitening_matrix,
)

from ..errors import InputFileError
from ..protocol import Acquisition, AcquisitionFlag, open_reader
from .placement import flag_mask

__all__ = ["NoiseBlock", "NoiseGate", "noise_from_file"]

_NOISE = flag_mask(AcquisitionFlag.IS_NOISE_MEASUREMENT)
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class NoiseBlock:
    """The prewhitening matrix in shared memory: ``[ready, channels, re/im of W...]`` doubles.

    Created by the supervisor before forking; written once (reader), read by workers.
    """

    def __init__(self, ctx: Any, channels: int):
        self.capacity = channels
        self.array = ctx.RawArray("d", 2 + 2 * channels * channels)

    def publish(self, matrix: np.ndarray) -> None:
        n = matrix.shape[0]
        values = np.frombuffer(self.array, dtype=np.float64)
        values[2 : 2 + 2 * n * n] = matrix.astype(np.complex128).view(np.float64).ravel()
        values[1] = n
        values[0] = 1.0

    def matrix(self) -> np.ndarray | None:
        """complex64 ``[channels, channels]``, or None when nothing was published."""
        values = np.frombuffer(self.array, dtype=np.float64)
        if values[0] != 1.0:
            return None
        n = int(values[1])
        pairs = values[2 : 2 + 2 * n * n].copy()
        return pairs.view(np.complex128).reshape(n, n).astype(np.complex64)


def _channel_mask(head: np.void) -> bytes:
    return np.asarray(head["channel_mask"], dtype="<u8").tobytes()


def noise_from_file(path: str) -> NoiseAccumulator:
    """Noise statistics of the IS_NOISE_MEASUREMENT lines of an MRD stream or HDF5 file."""
    source = Path(path)
    if not source.is_file():
        raise InputFileError(f"--noise {path!r}: expected an MRD file, found nothing there")
    with source.open("rb") as handle:
        is_hdf5 = handle.read(8) == _HDF5_SIGNATURE
    accumulator = NoiseAccumulator()
    if is_hdf5:
        from ..hdf5 import read_messages

        messages: Any = read_messages(source)
        _gather(accumulator, messages)
    else:
        with source.open("rb") as handle:
            _gather(accumulator, open_reader(handle, require_close=False))
    if accumulator.covariance() is None:
        raise InputFileError(
            f"--noise {path!r}: expected acquisitions flagged IS_NOISE_MEASUREMENT, found none"
        )
    return accumulator


def _gather(accumulator: NoiseAccumulator, messages: Any) -> None:
    for msg in messages:
        if isinstance(msg, Acquisition) and int(msg.head["flags"]) & _NOISE:
            accumulator.add(msg.data, float(msg.head["sample_time_us"]), _channel_mask(msg.head))


class NoiseGate:
    """The reader's noise bookkeeping: gather, then freeze and publish at the first other line.

    Parameters
    ----------
    block:
        Where the prewhitening matrix goes.
    prewhiten:
        False for ``--recon-option prewhiten=off`` (figures are still reported).
    receiver_bandwidth:
        The header's relativeReceiverNoiseBandwidth (or the 0.793 default).
    preset:
        Noise from ``--noise FILE``; it replaces the stream's own noise lines.
    source:
        Where ``preset`` came from, for the profile.
    """

    def __init__(
        self,
        block: NoiseBlock | None,
        *,
        prewhiten: bool,
        receiver_bandwidth: float,
        preset: NoiseAccumulator | None = None,
        source: str = "stream",
    ):
        self.block = block
        self.prewhiten = prewhiten
        self.receiver_bandwidth = receiver_bandwidth
        self.preset = preset
        self.source = source if preset is not None else "stream"
        self.stream = NoiseAccumulator()
        self.frozen = False
        self.late_lines = 0
        self.report: dict[str, Any] = {"prewhitening": "no noise scan"}

    def add(self, data: np.ndarray, head: np.void) -> None:
        """One noise line (complex64 ``[channels, samples]``)."""
        if self.frozen:
            self.late_lines += 1
            return
        self.stream.add(data, float(head["sample_time_us"]), _channel_mask(head))

    def freeze(self, head: np.void) -> str | None:
        """At the first line that is not noise: publish the prewhitening matrix (once).

        Returns a warning for the user when a noise scan exists but cannot be used (it holds
        only zeros, as a noise-free simulation's does).
        """
        if self.frozen:
            return None
        self.frozen = True
        noise = self.preset or self.stream
        covariance = noise.covariance()
        if covariance is None:
            return None
        if not np.any(covariance):
            self.report = {"prewhitening": "off (the noise scan holds only zeros)"}
            return "the noise scan holds only zeros: no prewhitening"
        scale = bandwidth_scale(
            noise.dwell_time_us, float(head["sample_time_us"]), self.receiver_bandwidth
        )
        figures = noise_figures(covariance)
        self.report = {
            "prewhitening": "on" if self.prewhiten else "off (--recon-option prewhiten=off)",
            "source": self.source,
            "noise_dwell_time_us": noise.dwell_time_us,
            "acquisition_dwell_time_us": float(head["sample_time_us"]),
            "receiver_noise_bandwidth": self.receiver_bandwidth,
            "bandwidth_scale": scale,
            "coil_std": list(figures.coil_std),
            "max_correlation": figures.max_correlation,
            "max_correlation_pair": list(figures.max_pair),
            "regularised": False,
        }
        if not self.prewhiten or self.block is None:
            return None
        channels = int(head["active_channels"])
        order = channel_order(noise.channel_mask, _channel_mask(head), noise.channels, channels)
        imaging = imaging_covariance(covariance, order, scale)
        matrix, regularised = whitening_matrix(imaging)
        self.report["regularised"] = regularised
        self.block.publish(matrix)
        return None

    def summary(self) -> dict[str, Any]:
        """The profile's ``input.noise`` section."""
        covariance = self.stream.covariance()
        variance = [] if covariance is None else [float(v) for v in np.real(np.diag(covariance))]
        return {
            "lines": self.stream.lines,
            "samples": self.stream.samples,
            "coil_variance": variance,
            "late_lines": self.late_lines,
            **self.report,
        }
