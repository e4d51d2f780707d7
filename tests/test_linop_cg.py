"""The shared operator algebra and the conjugate-gradient solver, by invariant.

Operators: every adjoint pair passes the dot-product test, compositions chain shapes and
adjoints, a deliberately wrong adjoint fails the test.  CG: against numpy's dense solver on
small systems built here (not with the product's operators), with and without Tikhonov.
"""

from __future__ import annotations

import numpy as np
import pytest

from parallel_recon.workers.cg import conjugate_gradient, least_squares
from parallel_recon.workers.linop import LinearOperator, adjoint_mismatch, diagonal, identity


def _matrix_operator(matrix: np.ndarray) -> LinearOperator:
    return LinearOperator(
        (matrix.shape[1],),
        (matrix.shape[0],),
        lambda x: matrix @ x,
        lambda y: matrix.conj().T @ y,
        name="M",
    )


def _random_matrix(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, cols)) + 1j * rng.standard_normal((rows, cols))


def test_a_correct_adjoint_passes_and_a_wrong_one_fails() -> None:
    matrix = _random_matrix(7, 5, 1)
    assert adjoint_mismatch(_matrix_operator(matrix)) < 1e-12
    wrong = LinearOperator((5,), (7,), lambda x: matrix @ x, lambda y: matrix.T @ y)
    assert adjoint_mismatch(wrong) > 1e-2


def test_composition_chains_forward_adjoint_and_normal() -> None:
    a, b = _random_matrix(6, 4, 2), _random_matrix(4, 3, 3)
    chain = _matrix_operator(a) @ _matrix_operator(b)
    assert chain.ishape == (3,) and chain.oshape == (6,)
    x = _random_matrix(3, 1, 4)[:, 0]
    np.testing.assert_allclose(chain(x), a @ (b @ x), rtol=1e-12)
    np.testing.assert_allclose(chain.normal(x), (a @ b).conj().T @ (a @ b) @ x, rtol=1e-12)
    assert adjoint_mismatch(chain) < 1e-12
    assert adjoint_mismatch(chain.H) < 1e-12
    with pytest.raises(ValueError, match="cannot compose"):
        _ = _matrix_operator(b) @ _matrix_operator(b)


def test_a_fast_normal_is_used_through_a_composition() -> None:
    a = _random_matrix(5, 5, 5)
    calls: list[int] = []

    def fast(x: np.ndarray) -> np.ndarray:
        calls.append(1)
        return a.conj().T @ (a @ x)

    outer = LinearOperator((5,), (5,), lambda x: a @ x, lambda y: a.conj().T @ y, fast)
    inner = identity((5,))
    x = np.arange(5) + 1j
    np.testing.assert_allclose((outer @ inner).normal(x), a.conj().T @ a @ x, rtol=1e-12)
    assert calls == [1]


def test_diagonal_broadcasts_over_coils_and_sums_in_its_adjoint() -> None:
    rng = np.random.default_rng(6)
    maps = rng.standard_normal((3, 4, 5)) + 1j * rng.standard_normal((3, 4, 5))
    op = diagonal(maps, (4, 5), "maps")
    assert op.oshape == (3, 4, 5)
    image = rng.standard_normal((4, 5)) + 0j
    np.testing.assert_allclose(op(image), maps * image[None])
    y = rng.standard_normal((3, 4, 5)) + 0j
    np.testing.assert_allclose(op.adjoint(y), (maps.conj() * y).sum(axis=0))
    assert adjoint_mismatch(op) < 1e-12


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_cg_matches_the_dense_least_squares_solution(lam: float) -> None:
    matrix = _random_matrix(40, 12, 7)
    y = _random_matrix(40, 1, 8)[:, 0]
    expected = np.linalg.solve(matrix.conj().T @ matrix + lam * np.eye(12), matrix.conj().T @ y)
    result = least_squares(_matrix_operator(matrix), y, iterations=60, lam=lam)
    assert np.linalg.norm(result.x - expected) / np.linalg.norm(expected) < 1e-8
    assert result.residuals[0] == pytest.approx(1.0)
    assert result.residuals[-1] < 1e-8


def test_cg_stops_at_the_tolerance_and_reports_its_iterations() -> None:
    matrix = _random_matrix(30, 10, 9)
    normal = matrix.conj().T @ matrix
    rhs = _random_matrix(10, 1, 10)[:, 0]
    result = conjugate_gradient(lambda v: normal @ v, rhs, iterations=100, tolerance=1e-3)
    assert 0 < result.iterations < 100
    assert result.residuals[-1] <= 1e-3 < result.residuals[-2]
    assert len(result.residuals) == result.iterations + 1


def test_cg_is_deterministic_and_starts_from_x0() -> None:
    matrix = _random_matrix(20, 8, 11)
    normal = matrix.conj().T @ matrix
    rhs = _random_matrix(8, 1, 12)[:, 0]
    first = conjugate_gradient(lambda v: normal @ v, rhs, iterations=5)
    again = conjugate_gradient(lambda v: normal @ v, rhs, iterations=5)
    assert first.x.tobytes() == again.x.tobytes()
    exact = np.linalg.solve(normal, rhs)
    warm = conjugate_gradient(lambda v: normal @ v, rhs, iterations=0, x0=exact)
    np.testing.assert_array_equal(warm.x, exact)
    with pytest.raises(ValueError):
        conjugate_gradient(lambda v: v, rhs, iterations=-1)
