"""Coil noise: covariance from a noise scan, and the prewhitening matrix derived from it.

Receive channels pick up correlated noise of different power.  Whitening (multiplying every
line's coil vector by ``W = L^-1`` where ``L L^H`` is the noise covariance of the imaging
samples) turns it into independent unit-variance noise, which is what root-sum-of-squares and
the SNR-optimal combination assume.  The covariance is measured on IS_NOISE_MEASUREMENT lines
and scaled to the imaging lines as Gadgetron's noise adjustment does: noise power per sample
grows with the sampling bandwidth (``1 / dwell time``), and the noise scan, sampled over the
full receiver band, sees only ``relativeReceiverNoiseBandwidth`` (0.793 by convention) of the
power that lands in the flat centre of the band the image keeps.  So the imaging covariance is
``C_noise * t_noise / (t_acquisition * rnb)``.  After whitening the imaging noise has unit
complex variance ``E|n|**2 = 1`` per sample (Gadgetron's SNR units are a further sqrt(2):
unit variance per real component).

Whitening is linear over the coil axis, so it commutes with placing lines in k-space and
averaging: the engine applies it once per unit (and per calibration block) rather than per
line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parallel_recon.errors import ConfigurationError

__all__ = [
    "DEFAULT_RECEIVER_BANDWIDTH",
    "NoiseAccumulator",
    "NoiseFigures",
    "bandwidth_scale",
    "channel_order",
    "imaging_covariance",
    "noise_figures",
    "whiten_lines",
    "whitening_matrix",
]

DEFAULT_RECEIVER_BANDWIDTH = 0.793
"""``relativeReceiverNoiseBandwidth`` when the header has none (the common convention)."""

_REGULARISATION = 1e-6
"""Diagonal loading, relative to the mean coil variance, used only for a singular covariance."""


class NoiseAccumulator:
    """Running sum of ``x x^H`` over noise samples, per channel layout of the first line.

    Lines whose channel count differs from the first noise line's are counted but left out
    (``mismatched``): one covariance needs one channel layout.
    """

    def __init__(self) -> None:
        self.lines = 0
        self.samples = 0
        self.mismatched = 0
        self.dwell_time_us = 0.0
        self.channel_mask: bytes = b""
        self._outer: np.ndarray | None = None

    @property
    def channels(self) -> int:
        return 0 if self._outer is None else int(self._outer.shape[0])

    def add(self, data: np.ndarray, dwell_time_us: float = 0.0, channel_mask: bytes = b"") -> None:
        """``data``: complex64 ``[channels, samples]`` of one noise line."""
        if self._outer is None:
            self._outer = np.zeros((data.shape[0], data.shape[0]), np.complex128)
            self.dwell_time_us = float(dwell_time_us)
            self.channel_mask = bytes(channel_mask)
        elif data.shape[0] != self._outer.shape[0]:
            self.mismatched += 1
            return
        block = data.astype(np.complex128)
        self._outer += block @ block.conj().T
        self.lines += 1
        self.samples += data.shape[1]

    def covariance(self) -> np.ndarray | None:
        """complex128 ``[channels, channels]`` ``E[x x^H]`` per sample, or None without noise."""
        if self._outer is None or self.samples == 0:
            return None
        return self._outer / self.samples


@dataclass(frozen=True)
class NoiseFigures:
    """What the profile reports about a noise covariance."""

    coil_std: tuple[float, ...]
    """Standard deviation of each channel, ``sqrt(E|x|**2)``."""
    max_correlation: float
    """Largest ``|C_ij| / sqrt(C_ii C_jj)`` over channel pairs i != j (0 for one channel)."""
    max_pair: tuple[int, int]


def noise_figures(covariance: np.ndarray) -> NoiseFigures:
    """Per-coil std and the most correlated pair of a covariance ``[channels, channels]``."""
    variance = np.real(np.diag(covariance)).clip(min=0)
    std = np.sqrt(variance)
    denominator = np.outer(std, std)
    correlation = np.divide(
        np.abs(covariance), denominator, out=np.zeros(covariance.shape), where=denominator > 0
    )
    np.fill_diagonal(correlation, 0.0)
    pair = np.unravel_index(int(np.argmax(correlation)), correlation.shape)
    return NoiseFigures(
        coil_std=tuple(float(s) for s in std),
        max_correlation=float(correlation[pair]) if correlation.size else 0.0,
        max_pair=(int(pair[0]), int(pair[1])),
    )


def bandwidth_scale(
    noise_dwell_us: float, acquisition_dwell_us: float, receiver_bandwidth: float
) -> float:
    """Factor ``t_noise / (t_acquisition * rnb)`` from noise-scan to imaging noise power.

    1 when either dwell time is unknown (0), as in Gadgetron: the data then cannot say how
    the two bandwidths relate.
    """
    if noise_dwell_us <= 0 or acquisition_dwell_us <= 0 or receiver_bandwidth <= 0:
        return 1.0
    return noise_dwell_us / (acquisition_dwell_us * receiver_bandwidth)


def _mask_bits(mask: bytes) -> list[int]:
    words = np.frombuffer(mask, dtype="<u8") if mask else np.zeros(0, np.uint64)
    return [i for i in range(64 * words.size) if int(words[i // 64]) >> (i % 64) & 1]


def channel_order(noise_mask: bytes, imaging_mask: bytes, noise: int, imaging: int) -> list[int]:
    """Which noise-scan channel each imaging channel is, from the acquisitions' channel masks.

    Equal counts with no usable masks map one to one.  Raises ConfigurationError when the
    imaging channels are not a subset of the noise scan's.
    """
    noise_bits, imaging_bits = _mask_bits(noise_mask), _mask_bits(imaging_mask)
    if len(noise_bits) == noise and len(imaging_bits) == imaging:
        where = {bit: i for i, bit in enumerate(noise_bits)}
        if all(bit in where for bit in imaging_bits):
            return [where[bit] for bit in imaging_bits]
    elif noise == imaging:
        return list(range(imaging))
    raise ConfigurationError(
        f"the noise scan has {noise} channels and the imaging lines {imaging}, and their "
        "channel masks do not say which noise channel is which imaging channel: cannot "
        "prewhiten (use a matching noise scan, or --recon-option prewhiten=off)"
    )


def imaging_covariance(covariance: np.ndarray, order: list[int], scale: float) -> np.ndarray:
    """The noise covariance of the imaging channels: selected, reordered and scaled."""
    picked = covariance[np.ix_(order, order)]
    return picked * scale


def whitening_matrix(covariance: np.ndarray) -> tuple[np.ndarray, bool]:
    """``W = L^-1`` with ``L L^H = covariance`` (lower Cholesky factor), complex64.

    Returns ``(W, regularised)``.  A channel with zero noise power cannot be whitened and is
    an error naming it; a covariance that is singular only numerically (e.g. two channels
    that are copies of each other) gets a diagonal loading of 1e-6 times the mean channel
    variance, and ``regularised`` says so.  Never returns NaN or inf.
    """
    variance = np.real(np.diag(covariance))
    dead = [int(i) for i in np.nonzero(~(variance > 0))[0]]
    if dead:
        raise ConfigurationError(
            f"noise scan channel {dead[0]} has zero noise power (all samples zero): the coil "
            "noise cannot be whitened; drop the channel or use --recon-option prewhiten=off"
        )
    regularised = False
    try:
        lower = np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError:
        loading = _REGULARISATION * float(variance.mean())
        lower = np.linalg.cholesky(covariance + loading * np.eye(covariance.shape[0]))
        regularised = True
    inverse = np.linalg.solve(lower, np.eye(covariance.shape[0]))
    if not np.all(np.isfinite(inverse)):
        raise ConfigurationError("noise covariance cannot be inverted (non-finite samples?)")
    return inverse.astype(np.complex64), regularised


_WHITEN_PASS_BYTES = 1 << 20
"""How much k-space one pass of :func:`whiten_lines` mixes: small enough that the product
stays in cache, large enough that each pass is one efficient batched matrix product."""


def whiten_lines(kspace: np.ndarray, matrix: np.ndarray, sampled: np.ndarray | None) -> None:
    """Multiply the coil vector of every sampled line of ``[k2, k1, coils, k0]`` by ``matrix``.

    In place.  ``sampled`` is a bool ``[k2, k1]`` mask of lines that hold data (None: all);
    unsampled lines are zero and stay zero, so skipping them saves work only.  The lines go
    through a small reused buffer a few at a time: one product of the whole unit would
    allocate (and page-fault) two unit-sized temporaries, half again the time of the
    arithmetic itself; the bytes are the same.
    """
    coils, samples = kspace.shape[-2:]
    if not kspace.flags.c_contiguous:  # reshape would copy: mix through indexing instead
        lines = kspace if sampled is None else kspace[sampled]
        result = np.matmul(matrix, lines)
        if sampled is None:
            kspace[...] = result
        else:
            kspace[sampled] = result
        return
    flat = kspace.reshape(-1, coils, samples)
    rows = np.arange(flat.shape[0]) if sampled is None else np.flatnonzero(sampled)
    if not rows.size:
        return
    step = max(1, _WHITEN_PASS_BYTES // max(1, coils * samples * kspace.itemsize))
    buffer = np.empty((min(step, rows.size), coils, samples), kspace.dtype)
    for start in range(0, rows.size, step):
        picked = rows[start : start + step]
        mixed = buffer[: picked.size]
        if picked[-1] - picked[0] + 1 == picked.size:  # a run of neighbouring lines: a view
            lines = flat[picked[0] : picked[-1] + 1]
            np.matmul(matrix, lines, out=mixed)
            lines[...] = mixed
        else:
            np.matmul(matrix, flat[picked], out=mixed)
            flat[picked] = mixed
