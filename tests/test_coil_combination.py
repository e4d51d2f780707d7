"""Adaptive (sensitivity-weighted) coil combination against root-sum-of-squares.

Fully sampled 8-coil phantoms with correlated coil noise, every recon prewhitened with the
same noise scan (``--noise FILE``), so that noisy and noise-free streams go through the same
whitening matrix and RSS and the adaptive combination see the same whitened data.

SNR by pseudo-replicas: the repetitions of a stream carry independent noise on the same
object.  A pixel's SNR is its noise-free value over the root-mean-square, across the
replicas, of its deviation from that value: the noise is everything the noise in the data
did to the pixel, spread and bias.  The spread alone (standard deviation over replicas)
would not do for RSS: the length of an N-coil vector is a biased estimator whose spread
shrinks as its noise floor lifts it.  At an SNR of about 7 its mean is ~19% too high and
its standard deviation ~7% below that of the best linear combination, the one made with the
whitened coils' exact sensitivities, so by spread alone RSS would beat even that.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import scipy.ndimage
from accelerated_helpers import phantom_bytes, recon_images, write_phantom

from parallel_recon.phantom import PhantomSpec, ground_truth, iter_messages
from parallel_recon.protocol import Acquisition, MessageId, encode_message, message_id_bytes

BASE = dict(matrix=64, coils=8, noise_correlation=0.4)
REPLICAS = 16
NOISE_LEVELS = (1.5, 4.0, 8.0)
"""SNR of the adaptive image inside the object: about 18, 7 and 3."""
METHODS = {
    "rss": ("--recon", "cartesian"),
    "adaptive": ("--recon", "cartesian", "--recon-option", "combine=adaptive"),
    "channels": ("--recon", "cartesian", "--recon-option", "coils=channels"),
}
"""The recons compared; ``channels`` gives the whitened coil images."""

Recon = Callable[[float, str], np.ndarray]


def _inside() -> np.ndarray:
    """Pixels well inside the object: bright enough, two pixels away from every edge."""
    truth = ground_truth(PhantomSpec(**BASE))[0]
    return scipy.ndimage.binary_erosion(truth > 0.15, iterations=2)


INSIDE = _inside()


def _replicas_stream() -> bytes:
    """One stream with ``REPLICAS`` repetitions at each of ``NOISE_LEVELS`` in turn (the
    repetitions renumbered), so that each method is one recon run for every level."""
    header = next(iter_messages(PhantomSpec(**BASE, repetitions=REPLICAS * len(NOISE_LEVELS))))
    parts = [encode_message(header)]
    for block, level in enumerate(NOISE_LEVELS):
        spec = PhantomSpec(**BASE, noise_level=level, repetitions=REPLICAS, seed=1 + block)
        for message in iter_messages(spec):
            if isinstance(message, Acquisition):
                message.head["idx"]["repetition"] += block * REPLICAS
                parts.append(encode_message(message))
    parts.append(message_id_bytes(MessageId.CLOSE))
    return b"".join(parts)


@pytest.fixture(scope="module")
def recon(tmp_path_factory: pytest.TempPathFactory) -> Recon:
    """``recon(noise_level, method)``: complex images ``[replicas, channels, y, x]``; each
    method runs once on the noise-free stream and once on the replicas of every level."""
    noise_scan = PhantomSpec(
        **BASE, noise_level=4.0, noise_calibration=True, noise_lines=64, seed=7
    )  # fmt: skip
    noise_file = write_phantom(tmp_path_factory.mktemp("noise") / "noise.bin", noise_scan)
    streams = {"clean": phantom_bytes(PhantomSpec(**BASE, noise_level=0.0))}
    done: dict[tuple[str, str], np.ndarray] = {}

    def run(noise_level: float, method: str) -> np.ndarray:
        which = "clean" if noise_level == 0 else "replicas"
        if (which, method) not in done:
            if which not in streams:
                streams[which] = _replicas_stream()
            found = recon_images(
                streams[which], "--noise", str(noise_file), "--image-type", "complex",
                *METHODS[method],
            )  # fmt: skip
            done[which, method] = np.stack([image.data[:, 0] for image in found])
        if which == "clean":
            return done[which, method]
        block = NOISE_LEVELS.index(noise_level)
        return done[which, method][block * REPLICAS : (block + 1) * REPLICAS]

    return run


def _snr(replicas: np.ndarray, noise_free: np.ndarray) -> float:
    """Mean over the object of a pixel's noise-free magnitude over the RMS deviation of the
    replicas' magnitudes from it (``replicas`` ``[n, y, x]``, ``noise_free`` ``[y, x]``)."""
    reference = np.abs(noise_free)
    deviation = np.sqrt(((np.abs(replicas) - reference) ** 2).mean(axis=0))
    return float((reference / deviation)[INSIDE].mean())


def _method_snr(recon: Recon, noise_level: float, method: str) -> float:
    return _snr(recon(noise_level, method)[:, 0], recon(0.0, method)[0, 0])


def test_adaptive_magnitude_matches_rss_inside_the_object(recon: Recon) -> None:
    ratio = np.abs(recon(0.0, "adaptive")[0, 0]) / np.abs(recon(0.0, "rss")[0, 0])
    assert np.all(np.abs(ratio[INSIDE] - 1) < 0.05), (ratio[INSIDE].min(), ratio[INSIDE].max())


def test_adaptive_phase_is_the_objects_not_the_coils(recon: Recon) -> None:
    """The phantom is real and positive: its phase is 0.  The coils' phases vary by more
    than a radian across the field of view; the combination must remove them."""
    phase = np.angle(recon(0.0, "adaptive")[0, 0])[INSIDE]
    assert np.abs(phase).max() < 0.1 and np.abs(phase).mean() < 0.02, np.abs(phase).max()
    rss_phase = np.angle(recon(0.0, "rss")[0, 0])[INSIDE]
    assert np.ptp(rss_phase) > 1.0  # the RSS kernel's phase is the coils' mix


@pytest.mark.parametrize("noise_level", NOISE_LEVELS)
def test_adaptive_snr_is_at_least_that_of_rss(recon: Recon, noise_level: float) -> None:
    adaptive = _method_snr(recon, noise_level, "adaptive")
    rss = _method_snr(recon, noise_level, "rss")
    assert adaptive >= rss, (adaptive, rss)


def test_adaptive_snr_is_that_of_the_exact_sensitivities(recon: Recon) -> None:
    """The maps estimated from the data are as good as exact ones: the combination with the
    whitened coils' true sensitivities (the noise-free coil images over their RSS) is the
    SNR-optimal linear combination, and the adaptive one comes within 5% of it."""
    noise_level = NOISE_LEVELS[1]
    clean_coils = recon(0.0, "channels")[0]  # [coils, y, x]
    maps = clean_coils / np.sqrt((np.abs(clean_coils) ** 2).sum(axis=0))
    coils = recon(noise_level, "channels")  # [replicas, coils, y, x]
    exact = _snr((maps.conj() * coils).sum(axis=1), (maps.conj() * clean_coils).sum(axis=0))
    adaptive = _method_snr(recon, noise_level, "adaptive")
    assert adaptive >= 0.95 * exact, (adaptive, exact)
    assert exact >= _method_snr(recon, noise_level, "rss")
