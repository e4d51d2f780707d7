"""The NUFFT operator, its Toeplitz normal, density compensation and trajectory units.

Every numeric claim is checked against something built here from the definition: a dense DFT
matrix for the operator and its normal, an oversampled Cartesian grid (whose area per sample
is known) and the analytic ramp of radial sampling for the density weights, plain arithmetic for the
unit conventions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from parallel_recon.workers.cg import least_squares
from parallel_recon.workers.density import pipe_menon_weights
from parallel_recon.workers.linop import adjoint_mismatch, diagonal
from parallel_recon.workers.nufft import clear_caches, nufft_operator
from parallel_recon.workers.trajectory import (
    AxisScale,
    check_inside_grid,
    detect_units,
    radial_spoke,
    unit_scales,
)


def _dense(coords: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The DFT matrix of the operator's definition: ``exp(-2 pi i k . p) / sqrt(P)``."""
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    offsets = np.stack([g.ravel() for g in reversed(grids)], axis=1)  # x, y[, z] columns
    phase = coords.astype(np.float64) @ offsets.T.astype(np.float64)
    return np.exp(-2j * np.pi * phase) / math.sqrt(math.prod(shape))


def _random(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


@pytest.mark.parametrize("shape", [(12, 16), (6, 8, 10)])
def test_forward_adjoint_and_normal_match_the_dense_dft(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(3)
    coords = (rng.random((300, len(shape))) - 0.5).astype(np.float32)
    op = nufft_operator(coords, shape, batch=3)
    dense = _dense(coords, shape)
    x = _random((3, *shape), 4)
    y = _random((3, 300), 5)
    expected = x.reshape(3, -1) @ dense.T
    scale = np.abs(expected).max()
    assert np.abs(op(x) - expected).max() < 1e-3 * scale
    adjoint = (y @ dense.conj()).reshape(x.shape)
    assert np.abs(op.adjoint(y) - adjoint).max() < 1e-3 * np.abs(adjoint).max()
    normal = (expected @ dense.conj()).reshape(x.shape)
    assert np.abs(op.normal(x) - normal).max() < 1e-3 * np.abs(normal).max()
    assert adjoint_mismatch(op) < 1e-5


def test_on_the_cartesian_grid_the_operator_is_the_orthonormal_dft() -> None:
    n = 16
    axis = (np.arange(n) - n // 2) / n
    ky, kx = np.meshgrid(axis, axis, indexing="ij")
    coords = np.stack([kx.ravel(), ky.ravel()], axis=1).astype(np.float32)
    image = _random((1, n, n), 6)
    samples = nufft_operator(coords, (n, n))(image)[0].reshape(n, n)
    fft = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image[0]), norm="ortho"))
    np.testing.assert_allclose(samples, fft, atol=2e-4 * np.abs(fft).max())


def test_a_coil_map_diagonal_composes_in_front_of_a_batched_operator() -> None:
    """Non-Cartesian SENSE is ``nufft(batch=coils) @ diagonal(maps)``; the composition keeps
    the adjoint pair and uses the NUFFT's Toeplitz normal."""
    rng = np.random.default_rng(7)
    coords = (rng.random((200, 2)) - 0.5).astype(np.float32)
    maps = _random((4, 10, 12), 8)
    sense = nufft_operator(coords, (10, 12), batch=4) @ diagonal(maps, (10, 12), "S")
    assert sense.ishape == (10, 12) and sense.oshape == (4, 200)
    assert adjoint_mismatch(sense) < 1e-5
    x = _random((10, 12), 9)
    chain = sense.adjoint(sense(x))
    np.testing.assert_allclose(sense.normal(x), chain, atol=1e-3 * np.abs(chain).max())


def test_cached_and_fresh_plans_give_the_same_bits() -> None:
    rng = np.random.default_rng(10)
    coords = (rng.random((500, 2)) - 0.5).astype(np.float32)
    x = _random((2, 24, 24), 11)
    clear_caches()
    first = nufft_operator(coords, (24, 24), 2)
    fresh = (first(x), first.adjoint(first(x)), first.normal(x))
    again = nufft_operator(coords, (24, 24), 2)  # from the cache
    cached = (again(x), again.adjoint(again(x)), again.normal(x))
    clear_caches()
    rebuilt = nufft_operator(coords, (24, 24), 2)
    for a, b, c in zip(
        fresh, cached, (rebuilt(x), rebuilt.adjoint(rebuilt(x)), rebuilt.normal(x)), strict=True
    ):
        assert a.tobytes() == b.tobytes() == c.tobytes()


def test_least_squares_recovers_an_image_from_oversampled_points() -> None:
    rng = np.random.default_rng(12)
    coords = (rng.random((2000, 2)) - 0.5).astype(np.float32)
    op = nufft_operator(coords, (16, 16))
    truth = _random((1, 16, 16), 13)
    solution = least_squares(op, op(truth), iterations=60).x
    assert np.linalg.norm(solution - truth) < 1e-3 * np.linalg.norm(truth)


# ------------------------------------------------------------------ density
@pytest.mark.parametrize("density", [2, 3])
def test_an_oversampled_cartesian_grid_gets_the_area_of_its_cells(density: int) -> None:
    """Samples ``1/density`` grid unit apart stand for ``1/density**2`` each.  (At one grid
    unit apart, sparser than the 2-unit kernel can smooth, a grid gets 0.91: the weights are
    meant for trajectories, never used on Cartesian data.)"""
    n = 32
    axis = (np.arange(n * density) - n * density // 2) / (n * density)
    ky, kx = np.meshgrid(axis, axis, indexing="ij")
    coords = np.stack([kx.ravel(), ky.ravel()], axis=1).astype(np.float32)
    weights = pipe_menon_weights(coords, (n, n)).reshape(n * density, n * density)
    inner = weights[4 * density : -4 * density, 4 * density : -4 * density] * density**2
    assert abs(float(inner.mean()) - 1) < 0.01 and float(inner.std()) < 0.01


def test_radial_weights_follow_the_ramp() -> None:
    """Spokes ``s`` apart in angle, samples ``1/2`` grid unit apart along them: a sample at
    radius ``r`` grid units stands for ``r * pi / spokes * 1/2`` (Voronoi cell of a ring)."""
    n, spokes, samples = 64, 101, 128
    radius = (np.arange(samples) - samples / 2) / samples
    angles = np.pi * np.arange(spokes) / spokes
    coords = np.stack(
        [np.outer(np.cos(angles), radius).ravel(), np.outer(np.sin(angles), radius).ravel()], 1
    ).astype(np.float32)
    weights = pipe_menon_weights(coords, (n, n)).reshape(spokes, samples)
    r = np.abs(radius) * n
    ring = (r > 6) & (r < 24)  # away from the dense centre and the edge
    expected = r[ring] * np.pi / spokes * 0.5
    ratio = weights[:, ring].mean(axis=0) / expected
    assert np.all(np.abs(ratio - 1) < 0.05), ratio


def test_weights_are_deterministic() -> None:
    rng = np.random.default_rng(14)
    coords = (rng.random((3000, 2)) - 0.5).astype(np.float32)
    assert (
        pipe_menon_weights(coords, (32, 32)).tobytes()
        == pipe_menon_weights(coords, (32, 32)).tobytes()
    )


# -------------------------------------------------------------------- units
AXES = [AxisScale(220, 220.0), AxisScale(220, 220.0)]


def _spoke(edge: float) -> np.ndarray:
    """A spoke from ``-edge`` to ``edge`` along x (a first trajectory)."""
    return np.stack([np.linspace(-edge, edge, 101), np.zeros(101)], axis=1)


@pytest.mark.parametrize(
    ("units", "edge"),
    [
        ("cycles_per_pixel", 0.5),
        ("grid", 110.0),
        ("per_m", 220 / (2 * 0.220)),
        ("rad_per_m", math.pi * 220 / 0.220),
    ],
)
def test_each_convention_is_detected_and_converts_to_half_a_cycle(units: str, edge: float) -> None:
    assert detect_units(_spoke(edge * 0.98), AXES) == units
    scales = unit_scales(units, AXES)
    np.testing.assert_allclose(edge * scales, [0.5, 0.5], rtol=1e-12)


def test_an_ambiguous_or_unknown_range_names_the_radius_and_the_option() -> None:
    fov_one_metre = [AxisScale(256, 1000.0), AxisScale(256, 1000.0)]  # grid == per_m
    with pytest.raises(ValueError, match=r"fits grid and per_m .*traj_units="):
        detect_units(_spoke(128.0), fov_one_metre)
    with pytest.raises(ValueError, match=r"reaches 3\.142 .*reaches no convention's edge"):
        detect_units(_spoke(math.pi), AXES)


def test_grid_checks_name_the_sample() -> None:
    inside = np.array([[0.1, -0.5], [0.52, 0.0]], np.float32)
    assert check_inside_grid(inside) is None
    problem = check_inside_grid(np.array([[0.1, 0.2], [0.61, 0.0]], np.float32))
    assert problem is not None and "point 1 at (0.61, 0)" in problem
    problem = check_inside_grid(np.array([[0.1, np.nan]], np.float32))
    assert problem is not None and "non-finite" in problem and "sample 0" in problem


def test_radial_spokes_from_encode_steps() -> None:
    spoke = radial_spoke(8, 3, 12, golden=False)  # 3 * 15 degrees
    np.testing.assert_allclose(
        spoke[0], 0.5 * -np.array([math.cos(math.pi / 4), math.sin(math.pi / 4)]), atol=1e-7
    )
    assert spoke[4].tolist() == [0.0, 0.0]
    golden = radial_spoke(8, 2, 12, golden=True)
    angle = math.degrees(math.atan2(-golden[0, 1], -golden[0, 0])) % 360
    assert abs(angle - (2 * 111.24611797) % 360) < 1e-4


def test_the_cache_keeps_a_few_trajectories_per_kind() -> None:
    from parallel_recon.workers.nufft import _CACHE, cached

    clear_caches()
    made = [cached(("thing", n), lambda n=n: n * 10) for n in range(10)]
    assert made == [n * 10 for n in range(10)]
    kept = [key for key in _CACHE if key[0] == "thing"]
    assert kept == [("thing", n) for n in range(6, 10)]
    clear_caches()
