"""The Cartesian kernel's transforms (``workers/fourier.py``) against the literal definition.

The kernel folds the centring shifts into a final index map and sign, transforms in place
and skips the ordering for a root-sum-of-squares magnitude; each shortcut must give the
centred orthonormal transform ``fftshift(ifft(ifftshift(k)))``, cropped or zero-padded about
the centre, in double precision, to float32 accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest

from parallel_recon.workers.fourier import to_image_space, unordered_images


def literal(kspace: np.ndarray, recon: tuple[int, int, int]) -> np.ndarray:
    """``[z, y, coils, x]`` by the book: pad, shift, transform, shift, crop (complex128)."""
    data = kspace.astype(np.complex128)
    x, y, z = recon
    for axis, size in ((3, x), (1, y), (0, z)):
        n = data.shape[axis]
        if n < size:
            pad = [(0, 0)] * 4
            pad[axis] = (size // 2 - n // 2, size - n - (size // 2 - n // 2))
            data = np.pad(data, pad)
            n = size
        data = np.fft.fftshift(
            np.fft.ifft(np.fft.ifftshift(data, axes=axis), axis=axis, norm="ortho"), axes=axis
        )
        start = n // 2 - size // 2
        index = [slice(None)] * 4
        index[axis] = slice(start, start + size)
        data = data[tuple(index)]
    return data


SHAPES = {
    "2d, 2x readout oversampling": ((1, 16, 3, 32), (16, 16, 1)),
    "2d, odd sizes": ((1, 15, 2, 21), (11, 15, 1)),
    "2d, zero-filled interpolation": ((1, 8, 2, 16), (8, 20, 1)),
    "2d, no oversampling": ((1, 12, 2, 12), (12, 12, 1)),
    "3d, oversampling": ((6, 8, 2, 16), (8, 8, 6)),
    "3d, odd and cropped partitions": ((7, 9, 2, 18), (9, 9, 5)),
    "3d, interpolated y and z": ((4, 6, 2, 12), (6, 24, 16)),
    "3d, z interpolated by a fraction": ((6, 6, 2, 12), (6, 6, 10)),
    "3d, odd partitions interpolated 3x": ((5, 6, 2, 12), (6, 6, 15)),
    "3d, odd partitions to an even size": ((5, 6, 2, 12), (6, 6, 8)),
    "one readout point": ((1, 8, 2, 1), (1, 8, 1)),
}


def _kspace(shape: tuple[int, int, int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _relative(found: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(found - expected) / np.linalg.norm(expected))


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_coil_images_equal_the_literal_transform(name: str) -> None:
    shape, recon = SHAPES[name]
    kspace = _kspace(shape)
    before = kspace.copy()
    found = to_image_space(kspace, recon)
    expected = literal(kspace, recon)
    assert found.dtype == np.complex64 and found.shape == expected.shape
    assert _relative(found, expected) < 1e-6
    assert np.array_equal(kspace, before)  # left unchanged without overwrite


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_in_place_and_unordered_paths_agree(name: str) -> None:
    shape, recon = SHAPES[name]
    kspace = _kspace(shape, seed=1)
    expected = literal(kspace, recon)
    scratch = kspace.copy()
    in_place = unordered_images(scratch, recon, overwrite=True).ordered()
    assert _relative(in_place, expected) < 1e-6
    rss = unordered_images(kspace, recon).root_sum_of_squares()
    reference = np.sqrt((np.abs(expected) ** 2).sum(axis=2))
    assert rss.dtype == np.float32 and rss.shape == reference.shape
    assert _relative(rss, reference) < 1e-6


def test_results_do_not_alias_the_reused_workspace() -> None:
    shape, recon = SHAPES["3d, oversampling"]
    first = to_image_space(_kspace(shape, 2), recon)
    kept = first.copy()
    to_image_space(_kspace(shape, 3), recon)  # reuses the working memory
    assert np.array_equal(first, kept)


def test_padding_stays_zero_from_unit_to_unit() -> None:
    """The padded working arrays are zeroed once; units of other shapes in between (which
    reuse or replace them) must not leave data where the next padded unit expects zeros."""
    for name in ("3d, interpolated y and z", "3d, oversampling", "2d, zero-filled interpolation"):
        shape, recon = SHAPES[name]
        for seed in range(3):
            kspace = _kspace(shape, seed)
            assert _relative(to_image_space(kspace, recon), literal(kspace, recon)) < 1e-6
    same_n = ((4, 6, 2, 12), (6, 6, 4))  # k2 = 4 -> 4 points, no padding...
    padded = ((2, 6, 2, 12), (6, 6, 4))  # ...then k2 = 2 padded to the same 4 points
    for shape, recon in (same_n, padded, same_n, padded):
        kspace = _kspace(shape, 7)
        assert _relative(to_image_space(kspace, recon), literal(kspace, recon)) < 1e-6
