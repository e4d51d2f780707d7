"""Linear operators: the one vocabulary every iterative kernel is written in.

A reconstruction that solves ``y = A x`` needs ``A`` (forward), ``A^H`` (adjoint) and, for
the normal equations, ``A^H A``.  Writing each kernel's operator as a
:class:`LinearOperator` (a pair of callables with shapes) lets the kernels share one solver
(:mod:`.cg`), one adjoint test and one way of composing: a SENSE operator is
``sampling @ fourier @ coil_maps``, a gridding operator ``nufft``, and both go to the same
conjugate-gradient solver.

An operator may carry its own ``normal`` (``A^H A`` applied faster than adjoint(forward), e.g.
a Toeplitz embedding of a NUFFT); compositions fall back to the chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Apply", "LinearOperator", "adjoint_mismatch", "diagonal", "identity", "reshape"]

Apply = Callable[[np.ndarray], np.ndarray]
"""One application of a linear map to an array of the operator's input (or output) shape."""


@dataclass(frozen=True)
class LinearOperator:
    """A linear map ``ishape -> oshape`` given by its forward and adjoint applications.

    Parameters
    ----------
    ishape, oshape:
        Shapes of the arrays ``forward`` takes and returns.
    forward, adjoint:
        ``A x`` and ``A^H y``.  They must not keep or modify their argument.
    normal_apply:
        ``A^H A x`` when the operator has a faster way than ``adjoint(forward(x))``
        (e.g. a Toeplitz embedding); None to use the chain.
    name:
        For error messages and profiles.
    """

    ishape: tuple[int, ...]
    oshape: tuple[int, ...]
    forward: Apply
    adjoint: Apply
    normal_apply: Apply | None = None
    name: str = "A"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def normal(self, x: np.ndarray) -> np.ndarray:
        """``A^H A x``: the operator's own fast path when it has one."""
        if self.normal_apply is not None:
            return self.normal_apply(x)
        return self.adjoint(self.forward(x))

    @property
    def H(self) -> LinearOperator:
        """The adjoint operator (its normal is ``A A^H``, applied as the chain)."""
        return LinearOperator(
            self.oshape, self.ishape, self.adjoint, self.forward, None, f"{self.name}^H"
        )

    def __matmul__(self, inner: LinearOperator) -> LinearOperator:
        """``self @ inner``: apply ``inner`` first (shapes must chain)."""
        if inner.oshape != self.ishape:
            raise ValueError(
                f"cannot compose {self.name} (input {self.ishape}) after {inner.name} "
                f"(output {inner.oshape})"
            )
        outer = self

        def forward(x: np.ndarray) -> np.ndarray:
            return outer.forward(inner.forward(x))

        def adjoint(y: np.ndarray) -> np.ndarray:
            return inner.adjoint(outer.adjoint(y))

        normal = None
        if outer.normal_apply is not None:
            fast = outer.normal_apply

            def normal(x: np.ndarray) -> np.ndarray:
                return inner.adjoint(fast(inner.forward(x)))

        return LinearOperator(
            inner.ishape, self.oshape, forward, adjoint, normal, f"{self.name}*{inner.name}"
        )


def identity(shape: tuple[int, ...]) -> LinearOperator:
    """``I`` on arrays of ``shape`` (returns copies, so callers may modify the result)."""

    def copy(x: np.ndarray) -> np.ndarray:
        return np.array(x, copy=True)

    return LinearOperator(shape, shape, copy, copy, copy, "I")


def diagonal(weights: np.ndarray, ishape: tuple[int, ...], name: str = "D") -> LinearOperator:
    """Element-wise multiplication by ``weights``, broadcast against inputs of ``ishape``.

    ``weights`` may have more leading axes than ``ishape`` (coil sensitivities ``[coils, ...]``
    times one image ``[...]`` gives ``[coils, ...]``); the adjoint then sums over them.
    """
    oshape = tuple(np.broadcast_shapes(weights.shape, ishape))
    conj = np.conj(weights)
    extra = tuple(range(len(oshape) - len(ishape)))

    def forward(x: np.ndarray) -> np.ndarray:
        return weights * x

    def adjoint(y: np.ndarray) -> np.ndarray:
        out = conj * y
        return out.sum(axis=extra) if extra else out

    return LinearOperator(tuple(ishape), oshape, forward, adjoint, None, name)


def reshape(ishape: tuple[int, ...], oshape: tuple[int, ...]) -> LinearOperator:
    """The same elements seen with another shape (C order): it joins operators whose axes
    are grouped differently, e.g. coil maps ``[coils, z, y, x]`` in front of a 2D NUFFT that
    transforms ``coils * z`` planes at once.  Unitary: its adjoint is the reshape back."""
    if int(np.prod(ishape)) != int(np.prod(oshape)):
        raise ValueError(f"cannot reshape {ishape} to {oshape}")

    def forward(x: np.ndarray) -> np.ndarray:
        return np.reshape(x, oshape)

    def adjoint(y: np.ndarray) -> np.ndarray:
        return np.reshape(y, ishape)

    return LinearOperator(tuple(ishape), tuple(oshape), forward, adjoint, None, "reshape")


def adjoint_mismatch(op: LinearOperator, seed: int = 0) -> float:
    """``|<A x, y> - <x, A^H y>| / (|A x| |y|)`` for random complex ``x``, ``y``.

    Zero (to rounding) for a correct adjoint pair: the check every operator's test makes.
    """
    rng = np.random.default_rng(seed)

    def noise(shape: tuple[int, ...]) -> np.ndarray:
        return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)

    x, y = noise(op.ishape), noise(op.oshape)
    ax = op.forward(x)
    lhs = np.vdot(y, ax)
    rhs = np.vdot(op.adjoint(y), x)
    return float(abs(lhs - rhs) / (np.linalg.norm(ax) * np.linalg.norm(y)))
