"""GRAPPA: fill the skipped k-space lines of uniformly undersampled data, then FFT and combine.

Every skipped line is a linear combination of the acquired lines around it, across all coils
(Griswold et al. 2002).  The weights are learned on the fully sampled calibration block by
regularised least squares and applied to the unit's acquired lattice.

Geometry.  The acquired lines form a lattice ``(o2 + R2 a2, o1 + R1 a1)`` (:mod:`.sampling`).
A missing line at lattice offset ``(m2, m1)`` (``0 <= m < R``, not both 0) is predicted from
``kz x ky`` lattice lines around it (lattice steps ``j`` in ``-(k-1)//2 .. k//2``) and ``kx``
neighbouring readout points, of every coil.  The same ``S`` (sources) and ``T`` (targets)
arrangement is cut from the calibration block at every position where it fits, and
``W = (S^H S + lambda * tr(S^H S) / n I)^-1 S^H T`` (Tikhonov, ``lambda`` relative to the mean
eigenvalue, so it does not depend on the data's scale).

Application in hybrid space.  A kernel along the readout is a convolution in k0, i.e. a
multiplication in x.  So the readout is transformed (and cropped to the recon matrix: the
oversampling removal of the Cartesian kernel) first, and each x column is filled with its own
``(kz ky coils) x coils`` weights: one batched matrix product per unit instead of a
convolution, on half the points when the readout is 2x oversampled.  Weights (and the coil
maps of the adaptive combination) depend only on the calibration, so they are computed once
per (slice, calibration version) by the first worker that needs them and shared with the
others (``context.derived``): repetitions and other workers pay only the apply step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from parallel_recon.errors import ConfigurationError
from parallel_recon.protocol import Image
from parallel_recon.workers.api import (
    Calibration,
    DerivedArrays,
    EncodingSpace,
    ReconContext,
    ReconPlan,
)
from parallel_recon.workers.cartesian import (
    COMBINE_HISTORY,
    centred_ifft_axis,
    choose,
    combination,
    images_from_coils,
    map_settings,
    recover_partial_fourier,
    unit_maps,
    wants_maps,
)
from parallel_recon.workers.cartesian import (
    OPTIONS as CARTESIAN_OPTIONS,
)
from parallel_recon.workers.coil_maps import MapGrid, compute_maps, maps_tag
from parallel_recon.workers.fourier import readout_images
from parallel_recon.workers.options import (
    COMMON_OPTIONS,
    KernelOption,
    choice,
    non_negative_float,
    option_table,
    parse_options,
    positive_int,
)
from parallel_recon.workers.sampling import Lattice, fill_range, find_lattice, longest_run

__all__ = [
    "OPTIONS",
    "WARM_IMPORTS",
    "GrappaSettings",
    "apply_weights",
    "calibrate",
    "calibration_cache_bytes",
    "hybrid_weights",
    "missing_calibration",
    "reconstruct",
    "settings",
]

OPTIONS: tuple[KernelOption, ...] = (
    *(o for o in CARTESIAN_OPTIONS if o.name != "combine"),
    KernelOption(
        "combine",
        "adaptive",
        "coil combination: adaptive (sensitivities from the calibration lines, SNR-optimal, "
        "keeps the phase) or rss",
        choice(*COMBINE_HISTORY),
    ),
    KernelOption(
        "lambda",
        "0.0005",
        "Tikhonov regularisation relative to the mean eigenvalue (Gadgetron's default)",
        non_negative_float,
    ),
    KernelOption("kx", "5", "kernel size along the readout (points)", positive_int),
    KernelOption("ky", "4", "kernel size along k1 (acquired lines)", positive_int),
    KernelOption("kz", "3", "kernel size along k2 in 3D (acquired partitions)", positive_int),
)
"""The options of this kernel (``--recon-option``)."""

_TABLE = option_table(COMMON_OPTIONS, OPTIONS)

WARM_IMPORTS = ("scipy.linalg", "scipy.linalg.blas")
"""Imported at the first calibration (see :func:`_regularised_solve`); a long-lived process
(``serve``'s ready engines) imports them ahead."""


@dataclass(frozen=True)
class GrappaSettings:
    """The typed options a unit is reconstructed with."""

    regularisation: float
    kernel: tuple[int, int, int]
    """(kz, ky, kx)."""
    combine: str


def settings(context: ReconContext) -> GrappaSettings:
    values = parse_options(context.plan.options, _TABLE, "grappa")
    kz = values["kz"] if context.space.kspace_shape[0] > 1 else 1
    combine = combination(context, "adaptive")
    return GrappaSettings(values["lambda"], (kz, values["ky"], values["kx"]), combine)


def _steps(size: int) -> range:
    """Lattice steps of a kernel of ``size`` lines: ``-(size-1)//2 .. size//2``."""
    start = -((size - 1) // 2)
    return range(start, start + size)


def _targets(factors: tuple[int, int]) -> list[tuple[int, int]]:
    r2, r1 = factors
    return [(m2, m1) for m2 in range(r2) for m1 in range(r1) if (m2, m1) != (0, 0)]


def missing_calibration(space: EncodingSpace, lattice: Lattice) -> str:
    """The one-line error for accelerated data that came without calibration lines."""
    r2, r1 = lattice.factors
    how = f"R={r1}" + (f"x{r2}" if r2 > 1 else "")
    return (
        f"the data is accelerated ({how}: every {r1}th k1 line"
        + (f", every {r2}th k2 partition" if r2 > 1 else "")
        + ") but has no calibration lines: expected acquisitions flagged "
        "IS_PARALLEL_CALIBRATION or IS_PARALLEL_CALIBRATION_AND_IMAGING for this slice "
        "(use --recon cartesian to zero-fill)"
    )


def _full_block(calibration: Calibration) -> np.ndarray:
    """The largest fully sampled part of the calibration block ``[k2c, k1c, coils, k0]``."""
    sampled = calibration.sampled
    if sampled.all():
        return calibration.kspace
    if sampled.shape[0] == 1:
        start, stop = longest_run(sampled[0])
        return calibration.kspace[:, start:stop]
    raise ConfigurationError(
        "the calibration block has holes (some lines inside the calibration region are "
        "missing): GRAPPA needs a fully sampled block"
    )


def calibrate(
    block: np.ndarray, factors: tuple[int, int], kernel: tuple[int, int, int], regularisation: float
) -> np.ndarray:
    """GRAPPA weights from a fully sampled calibration block.

    Parameters
    ----------
    block:
        complex64 ``[k2c, k1c, coils, k0]``, every line present.
    factors:
        (R2, R1).
    kernel:
        (kz, ky, kx): lattice lines along k2 and k1, readout points.
    regularisation:
        Tikhonov ``lambda`` relative to the mean eigenvalue of ``S^H S``.

    Returns
    -------
    complex64 ``[coils * kz * ky * kx, targets * coils]``: source order (coil, j2, j1, dx),
    target order (offset, coil) with offsets as :func:`_targets` lists them.
    """
    (r2, r1), (kz, ky, kx) = factors, kernel
    n2, n1, coils, n0 = block.shape
    steps2, steps1, steps0 = _steps(kz), _steps(ky), _steps(kx)
    low2, high2 = r2 * steps2[0], max(r2 * steps2[-1], r2 - 1)
    low1, high1 = r1 * steps1[0], max(r1 * steps1[-1], r1 - 1)
    low0, high0 = steps0[0], steps0[-1]
    anchors2 = np.arange(-low2, n2 - high2)
    anchors1 = np.arange(-low1, n1 - high1)
    anchors0 = np.arange(-low0, n0 - high0)
    if anchors2.size < 1 or anchors1.size < 1:
        needed = high1 - low1 + 1
        raise ConfigurationError(
            f"the calibration block ({n1} lines along k1, {n2} along k2) is too small for a "
            f"ky={ky} kernel at R={r1} (needs at least {needed} lines along k1 and "
            f"{high2 - low2 + 1} along k2): use a smaller --recon-option ky= or kz="
        )
    # Every kernel position's sources are contiguous ranges of the block (the anchors are a
    # range): slices, no gather.  The matrices are built transposed, [columns, rows] (the
    # rows are the anchors (a2, a1, a0)), so that S^H S is one Hermitian rank-k update.
    by_coil = np.ascontiguousarray(block.transpose(2, 0, 1, 3))  # [coils, k2c, k1c, k0]
    size2, size1, size0 = anchors2.size, anchors1.size, anchors0.size
    sources_t = np.empty((coils, kz, ky, kx, size2, size1, size0), np.complex64)
    for i2, j2 in enumerate(steps2):
        for i1, j1 in enumerate(steps1):
            for i0, d0 in enumerate(steps0):
                start2, start1, start0 = (
                    anchors2[0] + r2 * j2,
                    anchors1[0] + r1 * j1,
                    anchors0[0] + d0,
                )
                sources_t[:, i2, i1, i0] = by_coil[
                    :, start2 : start2 + size2, start1 : start1 + size1, start0 : start0 + size0
                ]
    rows = size2 * size1 * size0
    source_t = sources_t.reshape(coils * kz * ky * kx, rows)  # S^T, source order (coil, j2, j1, dx)
    target_t = np.concatenate(
        [
            by_coil[
                :,
                anchors2[0] + m2 : anchors2[0] + m2 + size2,
                anchors1[0] + m1 : anchors1[0] + m1 + size1,
                anchors0[0] : anchors0[0] + size0,
            ].reshape(coils, rows)
            for m2, m1 in _targets(factors)
        ]
    )  # T^T, target order (offset, coil)
    return _regularised_solve(source_t, target_t, regularisation).astype(np.complex64)


def _regularised_solve(
    source_t: np.ndarray, target_t: np.ndarray, regularisation: float
) -> np.ndarray:
    """``(S^H S + lambda tr(S^H S) / n I)^-1 S^H T`` from ``S^T`` and ``T^T`` (complex64).

    ``S^H S`` is a Hermitian rank-k update (BLAS ``cherk`` on ``S``, the Fortran-ordered view
    of ``S^T``: half the work of a general product, no copy; only its upper triangle is
    formed), solved by Cholesky in double precision.  With ``lambda = 0`` a singular matrix
    (e.g. two identical channels) gets the minimum-norm least-squares solution instead.
    Returns complex128 ``[n, targets]``.
    """
    # imported here, not at the top: --recon auto loads this module for every stream, and
    # scipy.linalg costs fully sampled data (which never calibrates) a quarter second
    import scipy.linalg
    import scipy.linalg.blas

    upper = scipy.linalg.blas.cherk(1.0, source_t.T, trans=2, lower=0)
    normal = upper.astype(np.complex128)
    loading = regularisation * float(np.real(np.trace(normal))) / normal.shape[0]
    normal[np.diag_indices_from(normal)] += loading
    rhs = np.conj(source_t @ target_t.conj().T).astype(np.complex128)  # S^H T
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(normal, lower=False), rhs)
    except np.linalg.LinAlgError:
        full = np.triu(normal) + np.triu(normal, 1).conj().T
        return np.linalg.lstsq(full, rhs, rcond=None)[0]


def _readout_phases(n0: int, x: int, kx: int) -> np.ndarray:
    """complex64 ``[kx, x]``: what a shift of the readout by ``dx`` does after the centred
    inverse FFT and crop of :func:`centred_ifft_axis` (a phase ramp per ``dx``)."""
    centre = np.zeros((1, n0), np.complex64)
    centre[0, n0 // 2] = 1
    reference = centred_ifft_axis(centre, 1, x)[0]
    ramps = []
    for d0 in _steps(kx):
        shifted = np.zeros((1, n0), np.complex64)
        shifted[0, (n0 // 2 - d0) % n0] = 1
        ramps.append(centred_ifft_axis(shifted, 1, x)[0] / reference)
    return np.asarray(ramps, np.complex64)


def hybrid_weights(
    weights: np.ndarray, coils: int, kernel: tuple[int, int, int], n0: int, x: int
) -> np.ndarray:
    """k-space weights -> one ``[kz * ky * coils, targets * coils]`` matrix per x column.

    The sources are reordered to (j2, j1, coil), coil fastest, which is the order
    :func:`apply_weights` gathers them in (each window of lattice lines is then read as
    whole rows of coils).

    Returns complex64 ``[x, kz * ky * coils, targets * coils]``.
    """
    kz, ky, kx = kernel
    per_dx = weights.reshape(coils, kz, ky, kx, weights.shape[1])
    phases = _readout_phases(n0, x, kx)  # [kx, x]
    hybrid = np.einsum("czydt,dx->xzyct", per_dx, phases)
    return np.ascontiguousarray(hybrid.reshape(x, kz * ky * coils, -1), dtype=np.complex64)


def _window_index(n: int, step: int, offset: int, kernel: int) -> tuple[np.ndarray, np.ndarray]:
    """Anchors along one axis of the lattice and the lattice lines their windows read.

    The anchors are the lattice positions whose following lines are predicted (one before
    the first lattice line too, so the lines before it are filled).  Anchor ``i`` reads the
    ``kernel`` consecutive entries ``index[i : i + kernel]``: lattice line numbers, or
    ``count`` (one past the last line: a line of zeros) for a source past an edge.  When the
    lattice repeats with the grid (``n % step == 0``) k-space is periodic as the discrete
    Fourier transform treats it, so sources past an edge wrap around instead.
    """
    count = len(range(offset, n, step))
    anchors = np.arange(-1 if offset > 0 else 0, count)
    steps = _steps(kernel)
    span = np.arange(anchors[0] + steps[0], anchors[-1] + steps[-1] + 1)
    if n % step == 0:
        return anchors, span % count
    return anchors, np.where((span >= 0) & (span < count), span, count)


def apply_weights(
    hybrid: np.ndarray,
    sampled: np.ndarray,
    lattice: Lattice,
    weights: np.ndarray,
    kernel: tuple[int, int, int],
    fill: tuple[tuple[int, int], tuple[int, int]],
) -> None:
    """Fill the missing lines of ``hybrid`` (``[k2, k1, coils, x]``, readout transformed) in place.

    ``sampled`` is the bool ``[k2, k1]`` mask of acquired lines (never overwritten); ``fill``
    the ``[first, last]`` grid range along k2 and k1 the header says was encoded; ``weights``
    come from :func:`hybrid_weights`.  The sources of every anchor are gathered with one
    copy (a sliding window over the lattice lines, x outermost so that each column's
    prediction is one matrix product).
    """
    (r2, r1), (o2, o1) = lattice.factors, lattice.offsets
    kz, ky, _ = kernel
    n2, n1, coils, x = hybrid.shape
    lines2, lines1 = np.arange(o2, n2, r2), np.arange(o1, n1, r1)
    anchors2, index2 = _window_index(n2, r2, o2, kz)
    anchors1, index1 = _window_index(n1, r1, o1, ky)
    # x-major lattice lines with a line of zeros after the last one along k2 and k1
    padded = np.zeros((x, lines2.size + 1, lines1.size + 1, coils), np.complex64)
    acquired = sampled[np.ix_(lines2, lines1)]
    padded[:, : lines2.size, : lines1.size] = (
        hybrid[np.ix_(lines2, lines1)].transpose(3, 0, 1, 2) * acquired[None, :, :, None]
    )
    rows = padded[:, index2[:, None], index1[None, :]]  # [x, P2, P1, coils]
    windows = np.lib.stride_tricks.sliding_window_view(rows, (kz, ky), axis=(1, 2))
    # [x, A2, A1, coils, kz, ky] -> [x, A2, A1, kz, ky, coils]: source order (j2, j1, coil)
    sources = np.ascontiguousarray(windows.transpose(0, 1, 2, 4, 5, 3)).reshape(
        x, anchors2.size * anchors1.size, kz * ky * coils
    )
    predicted = np.matmul(sources, weights).reshape(x, anchors2.size, anchors1.size, -1, coils)
    (first2, last2), (first1, last1) = fill
    for t, (m2, m1) in enumerate(_targets(lattice.factors)):
        p2, p1 = o2 + r2 * anchors2 + m2, o1 + r1 * anchors1 + m1
        inside2 = (p2 >= max(first2, 0)) & (p2 <= min(last2, n2 - 1))
        inside1 = (p1 >= max(first1, 0)) & (p1 <= min(last1, n1 - 1))
        rows2, cols = np.nonzero(inside2[:, None] & inside1[None, :])
        keep = ~sampled[p2[rows2], p1[cols]]
        rows2, cols = rows2[keep], cols[keep]
        if rows2.size == 0:
            continue
        values = predicted[:, rows2, cols, t, :]  # [x, n, coils]
        hybrid[p2[rows2], p1[cols]] = values.transpose(1, 2, 0)


def calibration_cache_bytes(plan: ReconPlan, coils: int) -> int:
    """The most bytes :func:`_derive` keeps for one calibration: hybrid weights
    ``[x, kz * ky * coils, targets * coils]`` and coil maps ``[z, y, coils, x]``, complex64.

    Sized from the header's acceleration factors (at least R=2) and the ``ky``/``kz``
    options; data accelerated more than its header says gets larger weights, which the
    engine then keeps per worker instead of sharing.
    """
    values = {option.name: option.default for option in OPTIONS} | dict(plan.options)
    try:
        ky, kz = positive_int(values["ky"]), positive_int(values["kz"])
    except (ValueError, ConfigurationError):
        return 0  # the options are refused with their own message before anything runs
    maps = values["combine"] != "rss"
    largest = 0
    for space in plan.spaces:
        x, y, z = space.recon_matrix
        depth = kz if space.kspace_shape[0] > 1 else 1
        r1, r2 = space.acceleration
        targets = max(r1 * r2 - 1, 1)
        weights = x * depth * ky * coils * targets * coils * 8
        planes = max(z, space.encoded_matrix[2])
        largest = max(largest, weights + (planes * y * x * coils * 8 if maps else 0))
    return largest


def _derive(
    kspace: np.ndarray,
    context: ReconContext,
    lattice: Lattice,
    options: GrappaSettings,
    maps: tuple[str, MapGrid, dict[str, Any]] | None,
) -> DerivedArrays:
    """Hybrid weights and (when the combination or ``save_maps`` wants them) coil maps of the
    unit's calibration."""
    calibration = context.calibration
    assert calibration is not None
    shape = kspace.shape
    coils, n0 = shape[2], shape[3]
    x = context.space.recon_matrix[0]
    weights = calibrate(
        _full_block(calibration), lattice.factors, options.kernel, options.regularisation
    )
    arrays = {"weights": hybrid_weights(weights, coils, options.kernel, n0, x)}
    if maps is not None:
        method, grid, values = maps
        arrays["maps"] = compute_maps(kspace, context, method, grid, values)
    return arrays


def _prepared(
    kspace: np.ndarray, context: ReconContext, lattice: Lattice, options: GrappaSettings
) -> tuple[np.ndarray, np.ndarray | None]:
    """Hybrid weights and coil maps of the unit's calibration, computed once per slice,
    calibration version and everything else they depend on (named in the tag), by the first
    worker that needs them, and shared (``context.derived``)."""
    tag = (
        f"grappa R={lattice.factors} kernel={options.kernel} lambda={options.regularisation!r} "
        f"grid={kspace.shape} x={context.space.recon_matrix[0]}"
    )
    maps = None
    if wants_maps(context, options.combine):
        values = map_settings(context)
        grid = MapGrid.recon(context.space)
        maps = (str(values["maps"]), grid, values)
        tag += " " + maps_tag(maps[0], grid, values, kspace.shape)
    arrays = context.derived(tag, lambda: _derive(kspace, context, lattice, options, maps))
    return arrays["weights"], arrays.get("maps")


def _phase_axes(hybrid: np.ndarray, space: EncodingSpace) -> np.ndarray:
    """``[k2, k1, coils, x]`` (readout already transformed) -> coil images ``[z, y, coils, x]``."""
    _, y, z = space.recon_matrix
    image = centred_ifft_axis(hybrid, 1, y)
    if image.shape[0] == z == 1:
        return image
    return centred_ifft_axis(image, 0, z)


def reconstruct(kspace: np.ndarray, context: ReconContext) -> list[Image]:
    """GRAPPA of one unit: fill the skipped lines, inverse FFT, crop, combine coils.

    Data that turns out fully sampled is reconstructed like the Cartesian kernel (with this
    kernel's combination).  Accelerated data without calibration is an error.
    """
    options = settings(context)
    choose(context)
    space = context.space
    sampled = (
        context.sampled if context.sampled is not None else np.abs(kspace).sum(axis=(2, 3)) > 0
    )
    lattice = find_lattice(sampled, space)
    context.notes["kernel"] = "grappa"
    if not lattice.accelerated:
        context.notes["why"] = "fully sampled: nothing to fill"
        maps = unit_maps(kspace, context) if wants_maps(context, options.combine) else None
        return images_from_coils(
            recover_partial_fourier(
                _phase_axes(centred_ifft_axis(kspace, 3, space.recon_matrix[0]), space), context
            ),
            context,
            ("FFT", "RSS"),
            maps=maps,
            combine=options.combine,
        )
    if context.calibration is None:
        raise ConfigurationError(missing_calibration(space, lattice))
    weights, maps = _prepared(kspace, context, lattice, options)
    r2, r1 = lattice.factors
    context.notes["why"] = (
        f"R={r1}" + (f"x{r2}" if r2 > 1 else "") + f", {int(context.calibration.sampled.sum())} "
        "calibration lines"
    )
    hybrid = readout_images(kspace, sampled, space.recon_matrix[0])
    fill = (fill_range(space, kspace.shape[0], 2), fill_range(space, kspace.shape[1], 1))
    apply_weights(hybrid, sampled, lattice, weights, options.kernel, fill)
    return images_from_coils(
        recover_partial_fourier(_phase_axes(hybrid, space), context),
        context,
        ("GRAPPA", "FFT", "RSS"),
        maps=maps,
        combine=options.combine,
    )
