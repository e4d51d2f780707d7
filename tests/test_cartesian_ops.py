"""The Cartesian encoding operator and the SENSE solve, by invariant.

Centred transforms against numpy's ``fftshift(fft(ifftshift(x)))`` (even and odd lengths);
every operator passes the dot-product test; the fast normal operator (which skips axes the
mask does not vary along) equals ``adjoint(forward(x))``; the SENSE solve takes any operator
and agrees with a dense solve built here.
"""

from __future__ import annotations

import numpy as np
import pytest

from parallel_recon.workers.cartesian_ops import (
    cartesian_sampling,
    centred_fft,
    centred_ifft,
    sense_operator,
)
from parallel_recon.workers.linop import LinearOperator, adjoint_mismatch
from parallel_recon.workers.sense import sense_solve


def _noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


@pytest.mark.parametrize("shape", [(3, 1, 8, 6), (2, 5, 7, 9), (2, 4, 6, 1)])
def test_centred_transforms_match_numpy(shape: tuple[int, ...]) -> None:
    x = _noise(shape, 1)
    axes = (1, 2, 3)
    expected = np.fft.fftshift(
        np.fft.fftn(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes
    )
    assert np.abs(centred_fft(x, axes) - expected).max() < 1e-5
    inverse = np.fft.fftshift(
        np.fft.ifftn(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes
    )
    assert np.abs(centred_ifft(x, axes) - inverse).max() < 1e-5
    assert np.abs(centred_ifft(centred_fft(x, axes), axes) - x).max() < 1e-5


@pytest.mark.parametrize("readout_constant", [True, False])
@pytest.mark.parametrize("shape", [(3, 1, 8, 6), (2, 5, 7, 9)])
def test_sampling_operator_adjoint_and_fast_normal(
    shape: tuple[int, ...], readout_constant: bool
) -> None:
    rng = np.random.default_rng(2)
    mask_shape = (*shape[1:3], 1) if readout_constant else shape[1:]
    mask = rng.random(mask_shape) > 0.5
    op = cartesian_sampling(mask, shape, (1, 2, 3))
    assert adjoint_mismatch(op) < 1e-6
    x = _noise(shape, 3)
    chain = op.adjoint(op.forward(x))
    assert np.linalg.norm(op.normal(x) - chain) / np.linalg.norm(chain) < 1e-5
    # the forward is the masked centred FFT
    expected = centred_fft(x, (1, 2, 3)) * mask
    assert np.abs(op.forward(x) - expected).max() < 1e-5


def test_sense_operator_is_sampling_after_coil_maps() -> None:
    shape = (4, 1, 8, 10)
    maps = _noise(shape, 4)
    mask = np.random.default_rng(5).random((1, 8, 1)) > 0.4
    op = sense_operator(maps, mask, (2,))
    assert op.ishape == shape[1:] and op.oshape == shape
    assert adjoint_mismatch(op) < 1e-6
    image = _noise(shape[1:], 6)
    expected = centred_fft(maps * image, (2,)) * mask
    assert np.abs(op.forward(image) - expected).max() < 1e-5
    chain = op.adjoint(op.forward(image))
    assert np.linalg.norm(op.normal(image) - chain) / np.linalg.norm(chain) < 1e-5


def test_sense_solve_takes_any_encoding_operator() -> None:
    """The solve is written for an operator, not for the FFT: a dense matrix operator (as a
    NUFFT would be) gives the Tikhonov solution numpy's dense solver gives."""
    rng = np.random.default_rng(7)
    matrix = rng.standard_normal((30, 12)) + 1j * rng.standard_normal((30, 12))
    operator = LinearOperator(
        (12,), (30,), lambda x: matrix @ x, lambda y: matrix.conj().T @ y, name="E"
    )
    data = rng.standard_normal(30) + 1j * rng.standard_normal(30)
    lam = 0.3
    result = sense_solve(operator, data, lam=lam, iterations=40)
    dense = np.linalg.solve(matrix.conj().T @ matrix + lam * np.eye(12), matrix.conj().T @ data)
    assert np.linalg.norm(result.x - dense) / np.linalg.norm(dense) < 1e-8
