"""ESPIRiT coil sensitivities from a fully sampled calibration block (Uecker et al. 2014).

Adaptive maps (:mod:`.coils`) are low-resolution coil images over their root sum of squares:
they follow the object into the signal-free background, where they are noise.  ESPIRiT finds
the sensitivities as what every k-space neighbourhood of the calibration data has in common:

1. **Calibration matrix.**  Every ``k2 x k1 x k0`` patch of the block (all coils) is one row;
   its right singular vectors with a singular value above ``sqrt(threshold)`` times the largest
   span the signal (the rest is the null space the data never enters).
2. **Image-space operator.**  With ``P = V V^H`` the projection onto that span, the operator
   ``G(x) = 1/K sum_{q, q'} P[(c, q), (c', q')] e^{2 pi i (q - q') . x}`` (K kernel positions)
   maps a coil vector at pixel ``x`` to a coil vector, and the sensitivities are its
   eigenvector of eigenvalue 1.  ``G`` is a trigonometric polynomial of degree ``k - 1`` in each
   direction, so its ``(2k - 1)^d`` coefficients (sums of ``P`` along kernel-offset diagonals)
   give it exactly at every pixel of any grid: separable DFT matrices, no FFT or interpolation.
3. **Per-pixel eigenvector** by subspace iteration (batched ``C x C`` products on two vectors,
   then the 2 x 2 Rayleigh-Ritz problem: the second eigenvalue can be close to the first, the
   third is not), then the eigenvalue threshold ``crop``: where the top eigenvalue is at most
   ``crop`` the maps are zero, which cuts the background away.
4. **Phase.**  An eigenvector is defined up to a phase per pixel; it is fixed so that the maps'
   projection onto the first principal component of the calibration data (itself made to have
   a real, positive largest entry) is real and positive.  So the maps do not depend on how
   LAPACK or the iteration happened to rotate them, and are smooth.

Conventions (the same as the kernels'): centred, orthonormal DFTs, k-space offsets in grid steps,
pixel ``j`` of an axis of ``n`` pixels at ``(j - n // 2) / period`` field-of-view units (the
``period`` is the k-space grid length, or ``n`` when the image is zero-filled to more pixels).
Maps are normalised per pixel (``sum_c |S_c|^2 = 1`` inside the crop mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parallel_recon.errors import ConfigurationError

from .cartesian_ops import centred_fft, unit_phase
from .fourier import centred_ifft_axis
from .options import KernelOption, non_negative_float, positive_int
from .sampling import longest_run

__all__ = [
    "ESPIRIT_OPTIONS",
    "EspiritMaps",
    "EspiritSettings",
    "calibration_region",
    "espirit_maps",
    "espirit_settings",
    "image_operator",
    "image_operator_coefficients",
    "principal_coil_vector",
    "signal_subspace",
]

_CHUNK_ELEMENTS = 1 << 22
"""Complex elements of the per-pixel operators evaluated at a time (32 MB)."""
_MAX_GRAM = 8192
"""Largest side of the calibration eigenproblem (a 512 MB complex64 matrix): a 3D region of
24^3 points with a 6^3 kernel stays below it up to 37 coils (6859 patches)."""


@dataclass(frozen=True)
class EspiritSettings:
    """ESPIRiT's parameters (BART's ``ecalib`` defaults)."""

    kernel: int = 6
    """Kernel width along every calibrated axis (points)."""
    region: int = 24
    """Most calibration points used per axis, around the k-space centre."""
    threshold: float = 0.001
    """Singular values kept: ``sigma / sigma_max > sqrt(threshold)``."""
    crop: float = 0.8
    """Maps are zero where the top eigenvalue is at most this."""
    iterations: int = 6
    """Subspace iterations per pixel (two vectors; see :func:`_top_eigenvectors`)."""


ESPIRIT_OPTIONS: tuple[KernelOption, ...] = (
    KernelOption(
        "crop", "0.8", "ESPIRiT: maps are zero where the eigenvalue is <= crop (0..1)",
        non_negative_float,
    ),
    KernelOption(
        "espirit_threshold", "0.001",
        "ESPIRiT: singular values kept above sqrt(threshold) x the largest", non_negative_float,
    ),
    KernelOption("espirit_kernel", "6", "ESPIRiT: kernel width (points per axis)", positive_int),
    KernelOption(
        "espirit_region", "24", "ESPIRiT: calibration points used per axis", positive_int
    ),
)  # fmt: skip
"""The ESPIRiT options every kernel that offers ``maps=espirit`` accepts."""


def espirit_settings(values: dict[str, object]) -> EspiritSettings:
    """Settings from parsed option values (those of :data:`ESPIRIT_OPTIONS`)."""
    crop = float(values["crop"])  # type: ignore[arg-type]
    if crop > 1:
        raise ConfigurationError(f"--recon-option crop={crop}: expected a number in [0, 1]")
    return EspiritSettings(
        kernel=int(values["espirit_kernel"]),  # type: ignore[call-overload]
        region=int(values["espirit_region"]),  # type: ignore[call-overload]
        threshold=float(values["espirit_threshold"]),  # type: ignore[arg-type]
        crop=crop,
    )


@dataclass(frozen=True)
class EspiritMaps:
    """The result of :func:`espirit_maps`."""

    maps: np.ndarray
    """complex64 ``[z, y, coils, x]`` (the kernels' image layout); zero outside the crop."""
    eigenvalues: np.ndarray
    """float32 ``[z, y, x]``: the top eigenvalue of ``G`` at each pixel (about 1 in the object)."""
    kernels: int
    """How many calibration singular vectors were kept."""


def _largest_full_block(
    kspace: np.ndarray, sampled: np.ndarray
) -> tuple[np.ndarray, tuple[int, int]]:
    """The largest fully sampled ``[k2, k1]`` rectangle of a calibration block and its offset:
    the longest run of k1 columns sampled in every k2 row, else of k2 rows sampled along
    every k1 column."""
    if sampled.all():
        return kspace, (0, 0)
    start, stop = longest_run(np.asarray(sampled.all(axis=0)))
    if stop - start > 1:
        return kspace[:, start:stop], (0, start)
    start, stop = longest_run(np.asarray(sampled.all(axis=1)))
    if stop - start > 0:
        return kspace[start:stop], (start, 0)
    raise ConfigurationError(
        "the calibration block has no fully sampled part: ESPIRiT needs a fully sampled "
        "region of calibration lines"
    )


def _central_window(extent: int, origin: int, grid: int, size: int) -> slice:
    """The ``size`` points of a block (grid ``origin .. origin + extent``) nearest the centre."""
    size = min(size, extent)
    start = grid // 2 - size // 2 - origin
    start = min(max(start, 0), extent - size)
    return slice(start, start + size)


def calibration_region(
    block: np.ndarray,
    sampled: np.ndarray,
    origin: tuple[int, int],
    grid: tuple[int, int],
    recon_x: int,
    region: int,
) -> np.ndarray:
    """Calibration k-space for ESPIRiT: fully sampled, on the image grid's readout spacing.

    Parameters
    ----------
    block:
        complex64 ``[k2c, k1c, coils, k0]`` calibration lines (full, oversampled readout).
    sampled:
        bool ``[k2c, k1c]``: which lines of the block hold data.
    origin:
        Grid ``(k2, k1)`` of ``block[0, 0]``.
    grid:
        ``(k2, k1)`` extent of the unit's k-space (its centre is ``grid // 2``).
    recon_x:
        Readout points of the image grid: the oversampled field of view is cropped to it (in
        image space), so the k-space steps along k0 are those of the recon grid.
    region:
        Most points per axis, around the k-space centre.

    Returns
    -------
    complex64 ``[coils, n2, n1, n0]``.
    """
    full, (row, column) = _largest_full_block(block, sampled)
    offset = (origin[0] + row, origin[1] + column)
    rows = _central_window(full.shape[0], offset[0], grid[0], region)
    columns = _central_window(full.shape[1], offset[1], grid[1], region)
    lines = np.asarray(full[rows, columns], np.complex64)
    readout = centred_fft(centred_ifft_axis(lines, 3, recon_x), (3,))
    points = _central_window(recon_x, 0, recon_x, region)
    return np.ascontiguousarray(readout[..., points].transpose(2, 0, 1, 3))


def _kernel_shape(cal: np.ndarray, width: int) -> tuple[int, int, int]:
    """``width`` along every axis the calibration region extends along (1 elsewhere)."""
    shape = tuple(min(width, n) if n > 1 else 1 for n in cal.shape[1:])
    return shape  # type: ignore[return-value]


def _calibration_matrix(cal: np.ndarray, kernel: tuple[int, int, int]) -> np.ndarray:
    """complex64 ``[rows, coils * k2 * k1 * k0]``: every patch of ``cal``, columns in (coil,
    k2, k1, k0) order."""
    windows = np.lib.stride_tricks.sliding_window_view(cal, kernel, axis=(1, 2, 3))
    columns = cal.shape[0] * int(np.prod(kernel))
    # [coils, r2, r1, r0, k2, k1, k0] -> rows (r2, r1, r0), columns (coil, k2, k1, k0)
    matrix = windows.transpose(1, 2, 3, 0, 4, 5, 6).reshape(-1, columns)
    if matrix.shape[0] < 1:
        raise ConfigurationError("the calibration region is smaller than the ESPIRiT kernel")
    return np.asarray(matrix, np.complex64)


def _top_eigenpairs(gram: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of a Hermitian ``gram`` (upper triangle) with eigenvalue above
    ``threshold`` x the largest, largest first: LAPACK's MRRR (``cheevr``) finds only those,
    which costs much less than a full decomposition when few are kept."""
    import scipy.linalg  # here: --recon auto need not pay its import for every stream

    largest = _largest_eigenvalue(gram)
    values, vectors = scipy.linalg.eigh(
        gram,
        lower=False,
        driver="evr",
        subset_by_value=(0.5 * threshold * largest, np.inf),
        overwrite_a=True,
        check_finite=False,
    )
    if values.size == 0:
        raise ConfigurationError("the calibration region holds no signal (all zeros)")
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    kept = int(np.count_nonzero(values > threshold * values[0]))
    return values[: max(kept, 1)], vectors[:, : max(kept, 1)]


def _largest_eigenvalue(gram: np.ndarray, iterations: int = 50) -> float:
    """Power-iteration estimate of the largest eigenvalue of a Hermitian PSD complex64 matrix
    given by its upper triangle (BLAS ``chemv``: no full copy of a large matrix)."""
    import scipy.linalg.blas

    vector = np.ones(gram.shape[0], np.complex64)
    value = 0.0
    for _ in range(iterations):
        product = scipy.linalg.blas.chemv(1.0, gram, vector, lower=0)
        value = float(np.linalg.norm(product))
        if value == 0:
            raise ConfigurationError("the calibration region holds no signal (all zeros)")
        vector = product / value
    return value


def signal_subspace(cal: np.ndarray, kernel: tuple[int, int, int], threshold: float) -> np.ndarray:
    """Right singular vectors of the calibration matrix above the threshold.

    Parameters
    ----------
    cal:
        complex ``[coils, n2, n1, n0]`` fully sampled calibration k-space.
    kernel:
        ``(k2, k1, k0)`` patch size.
    threshold:
        Kept: ``sigma / sigma_max > sqrt(threshold)``, i.e. eigenvalues of ``A^H A`` above
        ``threshold`` x the largest.

    Returns
    -------
    complex64 ``[coils * k2 * k1 * k0, kept]`` (rows in (coil, k2, k1, k0) order).

    The eigenproblem is solved on the smaller of ``A^H A`` and ``A A^H`` (a 2D region of 24 x 24
    points has 361 patches, fewer than the 36 x coils columns): ``V = A^H U / sigma``.
    """
    import scipy.linalg.blas

    rows = int(np.prod([n - k + 1 for n, k in zip(cal.shape[1:], kernel, strict=True)]))
    columns = cal.shape[0] * int(np.prod(kernel))
    if min(rows, columns) > _MAX_GRAM:
        raise ConfigurationError(
            f"ESPIRiT's calibration matrix would need a {min(rows, columns)} x "
            f"{min(rows, columns)} eigenproblem ({cal.shape[0]} coils, a "
            f"{'x'.join(map(str, kernel))} kernel, {rows} patches), more than "
            f"{_MAX_GRAM}: use a smaller --recon-option espirit_kernel= or espirit_region=, "
            "or maps=adaptive"
        )
    matrix = _calibration_matrix(cal, kernel)
    if columns <= rows:  # A^H A: a Hermitian rank-k update of the columns
        gram = scipy.linalg.blas.cherk(1.0, matrix, trans=2, lower=0)
        return _top_eigenpairs(gram, threshold)[1].astype(np.complex64)
    # (A^T)^H A^T = conj(A A^H): the same eigenvalues, conjugate eigenvectors
    gram = scipy.linalg.blas.cherk(1.0, matrix.T, trans=2, lower=0)
    values, left = _top_eigenpairs(gram, threshold)
    vectors = matrix.conj().T @ left.conj() / np.sqrt(values)[None, :]
    return vectors.astype(np.complex64)


def image_operator_coefficients(
    vectors: np.ndarray, coils: int, kernel: tuple[int, int, int]
) -> np.ndarray:
    """The Fourier coefficients of ``G``: complex128 ``[coils, coils, 2k2-1, 2k1-1, 2k0-1]``.

    ``G(x)[c, c'] = sum_d coefficients[c, c', d + k - 1] e^{2 pi i d . x}``.  The rows of the
    calibration matrix lie in the span of ``conj(V)`` (``A = U S V^H``), so with
    ``h_n(x)[c] = sum_q conj(V)[(c, q), n] e^{2 pi i q . x}``,
    ``G(x) = 1/K sum_n h_n(x) h_n(x)^H``: a trigonometric polynomial of degree ``k - 1``, which
    its values on ``2k - 1`` points per axis determine exactly (one small FFT each way).
    """
    span = tuple(2 * k - 1 for k in kernel)
    count = vectors.shape[1]
    padded = np.zeros((count, coils, *span), np.complex128)
    k2, k1, k0 = kernel
    padded[:, :, :k2, :k1, :k0] = vectors.conj().T.reshape(count, coils, *kernel)
    points = int(np.prod(span))
    samples = np.fft.ifftn(padded, axes=(2, 3, 4)) * points  # h_n at x = j / span
    by_point = samples.reshape(count, coils, points).transpose(2, 1, 0)  # [points, C, n]
    values = np.matmul(by_point, by_point.conj().transpose(0, 2, 1)) / int(np.prod(kernel))
    values = values.transpose(1, 2, 0).reshape(coils, coils, *span)
    coefficients = np.fft.fftn(values, axes=(2, 3, 4)) / points
    return np.fft.fftshift(coefficients, axes=(2, 3, 4))


def _exponentials(size: int, period: int, half: int) -> np.ndarray:
    """complex64 ``[size, 2 half + 1]``: ``e^{2 pi i d (j - size // 2) / period}``."""
    position = (np.arange(size) - size // 2) / period
    offsets = np.arange(-half, half + 1)
    return np.exp(2j * np.pi * position[:, None] * offsets[None, :]).astype(np.complex64)


def image_operator(
    coefficients: np.ndarray,
    grid: tuple[int, int, int],
    periods: tuple[int, int, int],
    planes: slice,
) -> np.ndarray:
    """``G`` at the pixels of ``planes``: a range of the ``z * y`` rows of the image grid.

    The rows' k2 and k1 exponentials contract the small coefficient array first, then the
    readout's give every pixel's matrix in pixel-major order (the layout the batched
    eigenvector products want, with no transpose of the big array).

    Returns complex64 ``[rows, x, coils, coils]``.
    """
    coils = coefficients.shape[0]
    span2, span1, span0 = coefficients.shape[2:]
    nz, ny, nx = grid
    rows = np.arange(nz * ny)[planes]
    e2 = _exponentials(nz, periods[0], span2 // 2)[rows // ny]  # [R, d2]
    e1 = _exponentials(ny, periods[1], span1 // 2)[rows % ny]  # [R, d1]
    e0 = _exponentials(nx, periods[2], span0 // 2)  # [x, d0]
    # coefficients [c, c', d2, d1, d0] -> [d2 d1, d0 c c']
    table = coefficients.transpose(2, 3, 4, 0, 1).reshape(span2 * span1, -1)
    both = (e2[:, :, None] * e1[:, None, :]).reshape(rows.size, -1)  # [R, d2 d1]
    along_rows = (both @ table.astype(np.complex64)).reshape(rows.size, span0, -1)
    out = np.matmul(e0, along_rows)  # [R, x, c c']
    return out.reshape(rows.size, nx, coils, coils)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norm = np.sqrt(np.einsum("pc,pc->p", vectors.real, vectors.real)
                   + np.einsum("pc,pc->p", vectors.imag, vectors.imag))  # fmt: skip
    return vectors / np.where(norm > 0, norm, 1)[:, None]


def _top_of_two_by_two(a: np.ndarray, b: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, ...]:
    """Top eigenpair of ``[[a, b], [conj(b), d]]`` (a, d real), batched, in closed form:
    ``(value, u1, u2)`` with ``(u1, u2)`` of unit norm."""
    value = 0.5 * (a + d) + np.sqrt((0.5 * (a - d)) ** 2 + np.abs(b) ** 2)
    first = a >= d  # the stable one of the two forms of the eigenvector
    u1 = np.where(first, value - d, b)
    u2 = np.where(first, b.conj(), value - a)
    norm = np.sqrt(np.abs(u1) ** 2 + np.abs(u2) ** 2)
    degenerate = norm == 0
    norm = np.where(degenerate, 1, norm)
    return value, np.where(degenerate, 1, u1 / norm), u2 / norm


def _top_eigenvectors(operators: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Top eigenpair of every ``[..., C, C]`` Hermitian matrix: (vectors ``[..., C]``, values).

    Subspace iteration with two vectors per pixel, then the exact top eigenpair of the 2 x 2
    projected matrix (Rayleigh-Ritz).  Its error shrinks like ``(l3 / l1)^k`` instead of the
    ``(l2 / l1)^k`` of a plain power iteration: ESPIRiT's second eigenvalue is close to the
    first at some pixels (0.93 against 0.99 on the phantom, where 30 power iterations leave
    errors of 0.4), its third is not (about 0.06), so a few iterations give the eigenvector
    to float precision.  Starts from the two columns of largest diagonal entry, the same for
    any worker.
    """
    shape = operators.shape[:-2]
    matrices = operators.reshape(-1, *operators.shape[-2:])
    coils = matrices.shape[-1]
    if coils == 1:  # a 1 x 1 matrix is its own eigenvalue
        return np.ones((*shape, 1), np.complex64), matrices[:, 0, 0].real.reshape(shape)
    diagonal = np.einsum("pii->pi", matrices).real
    start = np.argsort(-diagonal, axis=1, kind="stable")[:, :2]
    block = np.take_along_axis(matrices, start[:, None, :], axis=2)  # [P, C, 2]
    for step in range(iterations + 1):
        first = _normalised(block[:, :, 0])
        second = (
            block[:, :, 1] - first * np.einsum("pc,pc->p", first.conj(), block[:, :, 1])[:, None]
        )
        second = _normalised(second)
        basis = np.stack((first, second), axis=2)
        block = np.matmul(matrices, basis)
        if step == iterations:
            break
    # Rayleigh-Ritz: basis^H G basis, with G basis already in block
    a = np.einsum("pc,pc->p", first.conj(), block[:, :, 0]).real
    b = np.einsum("pc,pc->p", first.conj(), block[:, :, 1])
    d = np.einsum("pc,pc->p", second.conj(), block[:, :, 1]).real
    value, u1, u2 = _top_of_two_by_two(a, b, d)
    top = first * u1[:, None] + second * u2[:, None]
    return top.reshape(*shape, coils).astype(np.complex64), value.reshape(shape)


def principal_coil_vector(cal: np.ndarray) -> np.ndarray:
    """complex128 ``[coils]``: the first principal component of the calibration data over the
    coils, with its largest entry made real and positive (a reproducible phase reference)."""
    samples = cal.reshape(cal.shape[0], -1).astype(np.complex128)
    _, vectors = np.linalg.eigh(samples @ samples.conj().T)
    first = vectors[:, -1]
    biggest = first[np.argmax(np.abs(first))]
    return first * (np.conj(biggest) / abs(biggest)) if abs(biggest) > 0 else first


def espirit_maps(
    cal: np.ndarray,
    grid: tuple[int, int, int],
    periods: tuple[int, int, int] | None = None,
    settings: EspiritSettings = EspiritSettings(),
) -> EspiritMaps:
    """ESPIRiT maps of one calibration region on an image grid.

    Parameters
    ----------
    cal:
        complex ``[coils, n2, n1, n0]`` fully sampled calibration k-space
        (:func:`calibration_region`), centred DFT conventions.
    grid:
        ``(z, y, x)`` pixels of the maps.
    periods:
        ``(z, y, x)`` k-space grid lengths the pixels divide (default: ``grid``; see the
        module docstring).
    settings:
        Kernel width, threshold, crop, subspace iterations.
    """
    periods = periods or grid
    coils = cal.shape[0]
    kernel = _kernel_shape(cal, settings.kernel)
    vectors = signal_subspace(cal, kernel, settings.threshold)
    coefficients = image_operator_coefficients(vectors, coils, kernel)
    reference = principal_coil_vector(cal)
    nz, ny, nx = grid
    maps = np.empty((nz, ny, coils, nx), np.complex64)
    eigenvalues = np.empty((nz, ny, nx), np.float32)
    step = max(1, _CHUNK_ELEMENTS // max(1, nx * coils * coils))
    flat_maps = maps.reshape(nz * ny, coils, nx)
    flat_values = eigenvalues.reshape(nz * ny, nx)
    for first in range(0, nz * ny, step):
        planes = slice(first, min(first + step, nz * ny))
        operators = image_operator(coefficients, grid, periods, planes)
        vector, value = _top_eigenvectors(operators, settings.iterations)
        projection = np.einsum("c,rxc->rx", reference.conj(), vector)
        vector = vector * unit_phase(projection.conj())[..., None]
        vector[value <= settings.crop] = 0
        flat_maps[planes] = vector.transpose(0, 2, 1)
        flat_values[planes] = value
    return EspiritMaps(maps=maps, eigenvalues=eigenvalues, kernels=vectors.shape[1])
