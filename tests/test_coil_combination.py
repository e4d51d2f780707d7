"""Adaptive (sensitivity-weighted) coil combination against root-sum-of-squares."""

from __future__ import annotations

import numpy as np
import scipy.ndimage
from accelerated_helpers import phantom_bytes, recon_images

from parallel_recon.phantom import PhantomSpec, ground_truth

SPEC = PhantomSpec(matrix=64, coils=8, noise_level=0.0)


def _inside(spec: PhantomSpec) -> np.ndarray:
    """Pixels well inside the object: bright enough, two pixels away from every edge."""
    truth = ground_truth(spec)[0]
    return scipy.ndimage.binary_erosion(truth > 0.15, iterations=2)


def test_adaptive_magnitude_matches_rss_inside_the_object() -> None:
    stream = phantom_bytes(SPEC)
    rss = recon_images(stream, "--recon", "cartesian")[0].data[0, 0]
    adaptive = recon_images(stream, "--recon-option", "combine=adaptive")[0].data[0, 0]
    inside = _inside(SPEC)
    ratio = adaptive[inside] / rss[inside]
    assert np.all(np.abs(ratio - 1) < 0.05), (ratio.min(), ratio.max())


def test_adaptive_phase_is_the_objects_not_the_coils() -> None:
    """The phantom is real and positive: its phase is 0.  The coils' phases vary by more
    than a radian across the field of view; the combination must remove them."""
    stream = phantom_bytes(SPEC)
    inside = _inside(SPEC)
    adaptive = recon_images(stream, "--output", "complex", "--recon-option", "combine=adaptive")
    phase = np.angle(adaptive[0].data[0, 0])[inside]
    assert np.abs(phase).max() < 0.1 and np.abs(phase).mean() < 0.02, np.abs(phase).max()
    rss = recon_images(stream, "--recon", "cartesian", "--output", "complex")[0].data[0, 0]
    rss_phase = np.angle(rss)
    assert np.ptp(rss_phase[inside]) > 1.0  # the RSS kernel's phase is the coils' mix
