"""Conjugate gradients on the normal equations: the one solver every iterative kernel uses.

Least squares ``min |A x - y|^2 + lambda |x|^2`` is solved through the normal equations
``(A^H A + lambda I) x = A^H y`` (CGNE), the way CG-SENSE and iterative NUFFT reconstructions
do: the normal operator is Hermitian positive (semi)definite, so plain CG applies, and an
operator with a fast ``A^H A`` (Toeplitz) pays one application per iteration.

The iteration is deterministic (same inputs, same bits), so images do not depend on which
worker process ran a unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .linop import Apply, LinearOperator

__all__ = ["CGResult", "conjugate_gradient", "least_squares"]


@dataclass(frozen=True)
class CGResult:
    """Solution and how the iteration went."""

    x: np.ndarray
    iterations: int
    """Iterations run (fewer than asked when the residual fell below the tolerance)."""
    residuals: tuple[float, ...]
    """``|r_k| / |b|`` before each iteration and after the last (length iterations + 1)."""


def conjugate_gradient(
    normal: Apply,
    rhs: np.ndarray,
    *,
    iterations: int,
    lam: float = 0.0,
    x0: np.ndarray | None = None,
    tolerance: float = 0.0,
) -> CGResult:
    """Solve ``(N + lam I) x = rhs`` for a Hermitian positive semidefinite ``N``.

    Parameters
    ----------
    normal:
        ``x -> N x`` (typically ``A^H A``), on arrays of ``rhs``'s shape.
    rhs:
        Right-hand side (typically ``A^H y``); its dtype is the working dtype.
    iterations:
        Most iterations to run (>= 0).
    lam:
        Tikhonov weight (>= 0).
    x0:
        Starting point (zeros when None).
    tolerance:
        Stop early once ``|r| <= tolerance * |rhs|`` (0: run every iteration).

    Returns
    -------
    CGResult
    """
    if iterations < 0 or lam < 0:
        raise ValueError("iterations and lam must be >= 0")

    def system(v: np.ndarray) -> np.ndarray:
        out = normal(v)
        return out + lam * v if lam else out

    b_norm = float(np.linalg.norm(rhs))
    if x0 is None:
        x = np.zeros_like(rhs)
        r = np.array(rhs, copy=True)
    else:
        x = np.array(x0, dtype=rhs.dtype, copy=True)
        r = rhs - system(x)
    scale = b_norm if b_norm > 0 else 1.0
    p = r.copy()
    rr = float(np.vdot(r, r).real)
    residuals = [np.sqrt(rr) / scale]
    done = 0
    for _ in range(iterations):
        if rr == 0.0 or np.sqrt(rr) <= tolerance * scale:
            break
        ap = system(p)
        pap = float(np.vdot(p, ap).real)
        if pap <= 0.0:  # p in the null space of a semidefinite N: nothing left to gain
            break
        alpha = rr / pap
        x += alpha * p
        r -= alpha * ap
        rr_new = float(np.vdot(r, r).real)
        p *= rr_new / rr
        p += r
        rr = rr_new
        done += 1
        residuals.append(np.sqrt(rr) / scale)
    return CGResult(x=x, iterations=done, residuals=tuple(residuals))


def least_squares(
    op: LinearOperator,
    y: np.ndarray,
    *,
    iterations: int,
    lam: float = 0.0,
    x0: np.ndarray | None = None,
    tolerance: float = 0.0,
) -> CGResult:
    """``argmin |A x - y|^2 + lam |x|^2`` by CG on the normal equations of ``op``."""
    return conjugate_gradient(
        op.normal, op.adjoint(y), iterations=iterations, lam=lam, x0=x0, tolerance=tolerance
    )
