"""The parts of non-Cartesian SENSE, by invariant: the undersampling measure against the
trajectories' designed spacing, the gridded k-space centre against the phantom's analytic
spectrum, the encoding operator's adjoint for every layout, and the solve against numpy's
dense Tikhonov solution.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from noncartesian_helpers import nrmse

from parallel_recon.phantom import PhantomSpec
from parallel_recon.phantom.analytic import coil_spectrum
from parallel_recon.phantom.noncartesian import readout_trajectories
from parallel_recon.workers.api import EncodingSpace, ReconContext, ReconPlan, UnitInfo, UnitKey
from parallel_recon.workers.linop import adjoint_mismatch, reshape
from parallel_recon.workers.noncartesian_maps import gridded_centre
from parallel_recon.workers.noncartesian_sense import readout_encoding
from parallel_recon.workers.readout_problem import readout_problem
from parallel_recon.workers.sense import sense_solve
from parallel_recon.workers.undersampling import edge_gap


def _trajectory(trajectory: str, matrix: int, readouts: int) -> np.ndarray:
    spec = PhantomSpec(matrix=matrix, trajectory=trajectory, spokes=readouts)
    return readout_trajectories(spec).astype(np.float32)


@pytest.mark.parametrize("spokes", [202, 101, 51])
def test_the_gap_between_spokes_is_pi_r_over_n(spokes: int) -> None:
    """Spokes through the centre are ``pi r / n`` grid units apart at radius ``r``; the
    measure is taken in the annulus 0.8 .. 1 of the edge (0.5 cycles per pixel), whose mean
    radius is 0.45 N."""
    n = 128
    expected = math.pi * 0.45 * n / spokes
    for kind in ("radial", "goldenangle"):
        found = edge_gap(_trajectory(kind, n, spokes), None, (n, n))
        assert found == pytest.approx(expected, rel=0.02), kind


@pytest.mark.parametrize("interleaves", [16, 8, 4])
def test_the_gap_between_spiral_arms_is_their_designed_spacing(interleaves: int) -> None:
    """The phantom's full spiral (N / 8 interleaves) has arms ``1 / (sqrt 2 FOV)`` apart;
    fewer interleaves keep the arms' shape, so the spacing grows as ``16 / interleaves``."""
    found = edge_gap(_trajectory("spiral", 128, interleaves), None, (128, 128))
    assert found == pytest.approx(16 / interleaves / math.sqrt(2), rel=0.03)


def test_repeated_readouts_and_partitions_count_once() -> None:
    """Averages repeat readouts; a stack repeats one plane: neither samples more finely."""
    trajectory = _trajectory("radial", 64, 50)
    single = edge_gap(trajectory, None, (64, 64))
    assert edge_gap(np.concatenate([trajectory, trajectory]), None, (64, 64)) == single
    stack = np.concatenate([trajectory] * 4)
    partitions = np.repeat(np.arange(4, dtype=np.int32), trajectory.shape[0])
    assert edge_gap(stack, partitions, (64, 64)) == single


def test_twice_the_3d_spokes_are_sqrt_2_closer() -> None:
    rng = np.random.default_rng(1)
    radius = (np.arange(32) - 16) / 32

    def spokes(count: int) -> np.ndarray:
        directions = rng.standard_normal((count, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        return (radius[None, :, None] * directions[:, None, :]).astype(np.float32)

    sparse, dense = (edge_gap(spokes(c), None, (16, 16, 16)) for c in (400, 800))
    assert sparse / dense == pytest.approx(math.sqrt(2), rel=0.05)


# --------------------------------------------------------------- contexts
def _context(
    trajectory: np.ndarray,
    matrix: int,
    partitions: np.ndarray | None = None,
    depth: int = 1,
    coils: int = 2,
) -> ReconContext:
    kind = "radial"
    space = EncodingSpace(
        (matrix, matrix, depth), (matrix, matrix, depth), (300.0, 300.0, 10.0),
        (300.0, 300.0, 10.0), (0, 0, 0), (0, depth - 1, depth // 2), kind,
    )  # fmt: skip
    unit = UnitInfo(UnitKey(0, 0, 0, 0, 0, 0), 0, bytes(340), coils, trajectory.shape[0])
    if partitions is None:
        partitions = np.zeros(trajectory.shape[0], np.int32)
    return ReconContext(
        plan=ReconPlan("", (space,)), unit=unit, trajectory=trajectory,
        readout_partitions=partitions,
    )  # fmt: skip


def _samples(trajectory: np.ndarray, matrix: int, coils: int) -> np.ndarray:
    """complex64 ``[readouts, coils, samples]``: the phantom's exact spectrum."""
    k = trajectory.reshape(-1, 2).astype(np.float64)
    spectrum = coil_spectrum(k[:, 0], k[:, 1], matrix, coils)
    return spectrum.reshape(coils, *trajectory.shape[:2]).transpose(1, 0, 2).astype(np.complex64)


@pytest.mark.parametrize("trajectory, readouts", [("radial", 101), ("radial", 50), ("spiral", 8)])
def test_the_gridded_centre_is_the_spectrum_on_the_grid(trajectory: str, readouts: int) -> None:
    """Fully sampled radial and spiral, and half of the radial spokes (whose centre is
    still sampled finely enough): the central 24 x 24 points of the phantom's analytic coil
    spectra, up to one scale (1.000 measured), within 3% (Pipe-Menon's weights and the box's
    truncation: 1% at the centre, 5% at the region's edge)."""
    matrix, coils = 64, 4
    points = _trajectory(trajectory, matrix, readouts)
    context = _context(points, matrix, coils=coils)
    centre = gridded_centre(_samples(points, matrix, coils), context, 24)
    assert not centre.least_squares
    assert centre.kspace.shape == (coils, 1, 24, 24)
    grid = (np.arange(24) - 12) / matrix
    ky, kx = np.meshgrid(grid, grid, indexing="ij")
    exact = coil_spectrum(kx.ravel(), ky.ravel(), matrix, coils).reshape(coils, 1, 24, 24)
    error = nrmse(centre.kspace, exact)
    print(f"{trajectory} {readouts}: gridded centre vs analytic spectrum {error:.4f}")
    assert error <= 0.03


def test_a_spiral_below_nyquist_has_its_centre_solved_for() -> None:
    """Half the interleaves: arms 1.4 / FOV apart at the centre too, so the calibration image
    is the least-squares fit on the small grid rather than the (aliased) adjoint."""
    matrix, coils = 64, 4
    points = _trajectory("spiral", matrix, 4)
    centre = gridded_centre(
        _samples(points, matrix, coils), _context(points, matrix, coils=coils), 24
    )
    assert centre.least_squares


# --------------------------------------------------------------- the operator
def _layouts() -> dict[str, tuple[np.ndarray, ReconContext]]:
    matrix, coils = 16, 3
    plane = _trajectory("radial", matrix, 12)
    stack = np.concatenate([plane] * 4)
    stacked = np.repeat(np.arange(4, dtype=np.int32), plane.shape[0])
    turning = np.concatenate([_trajectory("goldenangle", matrix, 12 + p)[p:] for p in range(4)])
    rng = np.random.default_rng(5)
    directions = rng.standard_normal((60, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    radius = (np.arange(32) - 16) / 32
    volume = (radius[None, :, None] * directions[:, None, :]).astype(np.float32)
    contexts = {
        "plane": _context(plane, matrix, coils=coils),
        "stack": _context(stack, matrix, stacked, depth=4, coils=coils),
        "turning": _context(turning, matrix, stacked, depth=4, coils=coils),
        "volume": _context(volume, matrix, depth=matrix, coils=coils),
    }
    return {
        name: (np.zeros((c.trajectory.shape[0], coils, c.trajectory.shape[1]), np.complex64), c)  # type: ignore[union-attr]
        for name, c in contexts.items()
    }


@pytest.mark.parametrize("layout", ["plane", "stack", "turning", "volume"])
def test_the_encoding_is_the_adjoint_pair_of_its_layout(layout: str) -> None:
    kspace, context = _layouts()[layout]
    problem = readout_problem(kspace, context)
    assert problem.layout == layout
    rng = np.random.default_rng(2)
    shape = (problem.coils, *problem.grid)
    maps = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    op = readout_encoding(problem, maps)
    assert op.ishape == problem.grid and op.oshape == problem.data.shape
    assert adjoint_mismatch(op) < 1e-5
    x = rng.standard_normal(problem.grid).astype(np.complex64)
    chain = op.adjoint(op.forward(x))
    assert np.linalg.norm(op.normal(x) - chain) <= 1e-3 * np.linalg.norm(chain)  # Toeplitz


def test_reshape_is_its_own_adjoint_and_checks_sizes() -> None:
    op = reshape((2, 3, 4), (6, 4))
    assert adjoint_mismatch(op) < 1e-12
    with pytest.raises(ValueError, match="cannot reshape"):
        reshape((2, 3), (7,))


def test_the_solve_is_the_dense_tikhonov_solution() -> None:
    """A 12 x 12 plane, 2 coils, 8 spokes: CG through the NUFFT encoding converges to
    ``(A^H A + lambda I)^-1 A^H y`` solved by numpy on the dense matrix of ``A``."""
    matrix = 12
    points = _trajectory("radial", matrix, 8)
    kspace = _samples(points, matrix, 2)
    context = _context(points, matrix)
    problem = readout_problem(kspace, context)
    rng = np.random.default_rng(4)
    maps = (rng.standard_normal((2, *problem.grid))
            + 1j * rng.standard_normal((2, *problem.grid))).astype(np.complex64) / 2  # fmt: skip
    op = readout_encoding(problem, maps)
    pixels = int(np.prod(problem.grid))
    columns = [op.forward(np.eye(pixels, dtype=np.complex64)[i].reshape(problem.grid)).ravel()
               for i in range(pixels)]  # fmt: skip
    dense = np.stack(columns, axis=1).astype(np.complex128)
    lam = 0.05
    y = problem.data.ravel().astype(np.complex128)
    normal = dense.conj().T @ dense + lam * np.eye(pixels)
    expected = np.linalg.solve(normal, dense.conj().T @ y).reshape(problem.grid)
    found = sense_solve(op, problem.data, lam=lam, iterations=300).x
    assert nrmse(found, expected) <= 2e-3, nrmse(found, expected)
