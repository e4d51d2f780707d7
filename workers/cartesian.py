"""The default kernel: Cartesian 2D/3D reconstruction by inverse FFT and coil combination.

The steps are small public functions so that user kernels (see
``workers/example_user_kernel.py``) can reuse them and change only the step they care about:

1. :func:`to_image_space` - centred, orthonormal inverse FFT along k0, k1 and k2 (one
   thread: the engine runs one worker process per core), fitting each axis to the
   recon-space matrix: the centre of the field of view is cropped out in image space where
   the encoded matrix is larger (readout oversampling), the k-space is zero-padded around its
   centre where the recon matrix is larger (interpolation).  The readout is transformed and
   cropped first, so 2x oversampling halves the work of the other axes; the shifts cost no
   pass of their own (:mod:`.fourier`), so the step costs about what its FFTs cost.
2. :func:`combine_coils` - root-sum-of-squares magnitude; the phase, when wanted, is the
   coil-power-weighted mean of the coil phases (the ISMRMRD C++ tool's choice), so one
   complex channel carries the RSS magnitude.  ``--recon-option combine=adaptive`` uses
   coil sensitivities instead (:mod:`.coils`: SNR-optimal, keeps the object's phase);
   ``--recon-option coils=channels`` keeps the coils as image channels.
3. :func:`outputs` - the table from ``plan.output`` to the pixel transform and image type:
   ``magnitude`` float32 (type 1), ``phase`` float32 radians (type 2), ``complex`` complex64
   (type 5).

A unit gives one image ``[channels, z, y, x]``: z = 1 for 2D, z = the recon-space partitions
for 3D (one 3D volume per unit, not one image per partition).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from parallel_recon.errors import ConfigurationError
from parallel_recon.protocol import Image, ImageType
from parallel_recon.workers.api import EncodingSpace, ReconContext
from parallel_recon.workers.coil_maps import MAPS_OPTIONS, MapGrid, estimate_maps, maps_image
from parallel_recon.workers.coils import adaptive_combine
from parallel_recon.workers.fourier import centred_ifft_axis, unordered_images
from parallel_recon.workers.image_header import make_image
from parallel_recon.workers.options import (
    COMMON_OPTIONS,
    KernelOption,
    choice,
    option_table,
    parse_options,
)
from parallel_recon.workers.partial_fourier import (
    PARTIAL_FOURIER_OPTIONS,
    describe,
    detect,
    recover,
    recoverable,
)
from parallel_recon.workers.sampling import find_lattice

__all__ = [
    "COIL_MODES",
    "COMBINE_HISTORY",
    "HISTORY",
    "MAPS_HISTORY",
    "OPTIONS",
    "OUTPUTS",
    "Output",
    "centred_ifft_axis",
    "choose",
    "combination",
    "combine_coils",
    "images_from_coils",
    "reconstruct",
    "recover_partial_fourier",
    "setting",
    "to_image_space",
    "map_settings",
    "unit_maps",
    "wants_maps",
]

HISTORY = ("FFT", "RSS")
"""ImageProcessingHistory of this kernel's images."""


def to_image_space(
    kspace: np.ndarray, space: EncodingSpace, *, overwrite: bool = False
) -> np.ndarray:
    """Coil images of one unit.

    Parameters
    ----------
    kspace:
        complex64 ``[k2, k1, coils, k0]`` with the k-space centre at ``[k2//2, k1//2, :, k0//2]``.
    space:
        The unit's encoding space; its recon matrix ``(x, y, z)`` sets the output size.
    overwrite:
        Let the readout transform happen in ``kspace`` itself (which then holds garbage);
        by default ``kspace`` is left unchanged.

    Returns
    -------
    np.ndarray
        complex64 ``[z, y, coils, x]`` (recon-space matrix), a new array.
    """
    return unordered_images(kspace, space.recon_matrix, overwrite=overwrite).ordered()


def _power(images: np.ndarray) -> np.ndarray:
    return images.real * images.real + images.imag * images.imag


def _coil_power_sum(images: np.ndarray) -> np.ndarray:
    """float32 ``[z, y, x]``: sum over coils of ``|c|**2`` without a temporary per coil."""
    re, im = images.real, images.imag
    return np.einsum("zycx,zycx->zyx", re, re) + np.einsum("zycx,zycx->zyx", im, im)


def combine_coils(images: np.ndarray, *, with_phase: bool) -> np.ndarray:
    """Root-sum-of-squares over the coil axis 2 of ``[z, y, coils, x]``.

    Returns float32 ``[z, y, x]`` RSS magnitude, or with ``with_phase`` complex64 with that
    magnitude and the coil-power-weighted mean phase (0 where every coil is exactly 0).
    """
    if not with_phase:
        return np.sqrt(_coil_power_sum(images))
    power = _power(images)
    total = power.sum(axis=2, dtype=np.float32)
    magnitude = np.sqrt(total)
    weighted = (np.angle(images) * power).sum(axis=2, dtype=np.float32)
    phase = np.divide(weighted, total, out=np.zeros_like(total), where=total > 0)
    return (magnitude * np.exp(1j * phase)).astype(np.complex64)


class Output(NamedTuple):
    """How one ``plan.output`` value turns complex pixels into image data."""

    image_type: ImageType
    convert: Callable[[np.ndarray], np.ndarray]
    needs_phase: bool


OUTPUTS: dict[str, Output] = {
    "magnitude": Output(ImageType.MAGNITUDE, lambda d: np.abs(d).astype(np.float32), False),
    "phase": Output(ImageType.PHASE, lambda d: np.angle(d).astype(np.float32), True),
    "complex": Output(ImageType.COMPLEX, lambda d: d.astype(np.complex64), True),
}
"""``plan.output`` -> image type and pixel conversion."""


def _combined(images: np.ndarray, output: Output) -> np.ndarray:
    return combine_coils(images, with_phase=output.needs_phase)[np.newaxis]


def _channels(images: np.ndarray, output: Output) -> np.ndarray:
    return np.ascontiguousarray(images.transpose(2, 0, 1, 3))


COIL_MODES: dict[str, Callable[[np.ndarray, Output], np.ndarray]] = {
    "rss": _combined,
    "channels": _channels,
}
"""``--recon-option coils=...`` -> ``[z, y, coils, x]`` to ``[channels, z, y, x]``."""

COMBINE_HISTORY = {"rss": "RSS", "adaptive": "ADAPTIVE"}
"""``combine=`` -> the ImageProcessingHistory entry of the coil combination."""

MAPS_HISTORY = {"adaptive": "ADAPTIVE", "espirit": "ESPIRIT"}
"""``maps=`` -> the history entry of a combination with those maps."""

OPTIONS: tuple[KernelOption, ...] = (
    KernelOption(
        "coils",
        "rss",
        "rss: one combined image; channels: one image channel per coil",
        choice(*COIL_MODES),
    ),
    KernelOption(
        "combine",
        "rss",
        "coil combination: rss (root sum of squares) or adaptive (sensitivity-weighted, "
        "SNR-optimal, keeps the phase)",
        choice(*COMBINE_HISTORY),
    ),
    *MAPS_OPTIONS,
    *PARTIAL_FOURIER_OPTIONS,
)
"""The options of this kernel (``--recon-option``), with the engine's common ones."""

_TABLE = option_table(COMMON_OPTIONS, OPTIONS)


def setting(context: ReconContext, name: str, kernel: str = "cartesian") -> Any:
    """The typed value of one of this kernel's options (its default when not given).

    Only the named option is read, so user kernels that reuse these steps may have options
    of their own.
    """
    option = _TABLE[name]
    given = {name: context.plan.options[name]} if name in context.plan.options else {}
    return parse_options(given, {name: option}, kernel)[name]


def choose(context: ReconContext) -> tuple[Output, Callable[[np.ndarray, Output], np.ndarray]]:
    """The output conversion and coil handling the plan asks for; ConfigurationError if unknown."""
    plan = context.plan
    output = OUTPUTS.get(plan.output)
    if output is None:
        raise ConfigurationError(
            f"cartesian recon: expected output {', '.join(OUTPUTS)}, found {plan.output!r}"
        )
    return output, COIL_MODES[setting(context, "coils")]


def map_settings(context: ReconContext) -> dict[str, Any]:
    """The typed ``maps=`` option and the ESPIRiT parameters of the unit's plan."""
    return {o.name: setting(context, o.name) for o in MAPS_OPTIONS}


def unit_maps(kspace: np.ndarray, context: ReconContext) -> np.ndarray:
    """Coil sensitivities ``[z, y, coils, x]`` on the recon grid by the ``maps=`` method
    (adaptive or espirit): from the calibration lines when the unit has them, else from the
    central lines of its own k-space."""
    values = map_settings(context)
    return estimate_maps(kspace, context, values["maps"], MapGrid.recon(context.space), values)


def combination(context: ReconContext, default: str = "rss") -> str:
    """The ``combine=`` method: as given, else adaptive when ``maps=`` is given (maps are
    only used by the adaptive combination), else ``default``."""
    options = context.plan.options
    if "combine" in options:
        return str(setting(context, "combine"))
    return "adaptive" if "maps" in options else default


def wants_maps(context: ReconContext, combine: str) -> bool:
    """Whether the kernel must estimate coil maps: to combine with them, or to save them."""
    return combine == "adaptive" or bool(setting(context, "save_maps"))


def recover_partial_fourier(coil_images: np.ndarray, context: ReconContext) -> np.ndarray:
    """Coil images ``[z, y, coils, x]`` with the partial Fourier recovery the header calls for
    (``partial_fourier=pocs|homodyne|zero``; unchanged when the scan is symmetric)."""
    z, y, _, x = coil_images.shape
    found = detect(context.space, context.reference_head, context.space.kspace_shape, (z, y, x))
    extents, warning = recoverable(found)
    if warning:
        context.notes["warning"] = warning
    if not extents:
        return coil_images
    method = setting(context, "partial_fourier")
    why = context.notes.get("why", "")
    context.notes["why"] = (why + ", " if why else "") + (
        f"partial Fourier {describe(extents)} ({method})"
    )
    return recover(coil_images, extents, method, setting(context, "pocs_iterations"))


def images_from_coils(
    coil_images: np.ndarray,
    context: ReconContext,
    history: tuple[str, ...] = HISTORY,
    maps: np.ndarray | None = None,
    combine: str | None = None,
) -> list[Image]:
    """Combine ``[z, y, coils, x]`` coil images as the plan asks and wrap them as one Image.

    ``combine`` overrides the ``combine=`` option (kernels with another default pass their
    own); ``combine=adaptive`` needs ``maps`` (:func:`unit_maps`).  ``history`` ends with the
    combination's name, which is replaced by the one actually used.
    """
    output, coil_mode = choose(context)
    method = combine or combination(context)
    if coil_mode is _channels:
        data = coil_mode(coil_images, output)
        history = history[:-1] if history and history[-1] in COMBINE_HISTORY.values() else history
    elif method == "adaptive":
        if maps is None:
            raise ConfigurationError("combine=adaptive: this kernel passed no coil maps")
        data = adaptive_combine(coil_images, maps)[np.newaxis]
        history = (*history[:-1], MAPS_HISTORY[setting(context, "maps")])
    else:
        data = coil_mode(coil_images, output)
    images = [make_image(output.convert(data), context, output.image_type, history)]
    if setting(context, "save_maps"):
        if maps is None:
            raise ConfigurationError("save_maps=on: this kernel passed no coil maps")
        images.append(maps_image(maps, context, setting(context, "maps")))
    return images


def reconstruct(kspace: np.ndarray, context: ReconContext) -> list[Image]:
    """One image ``[channels, z, y, x]`` per unit: inverse FFT, crop, coil combination.

    Parameters
    ----------
    kspace:
        complex64 ``[k2, k1, coils, k0]``, lines placed and averaged by the engine.
    context:
        Plan (output type, options, encoding spaces) and unit (reference acquisition).

    Accelerated data is zero-filled (aliased); the unit's notes carry a warning saying so.
    With ``context.overwrite_kspace`` the transforms use ``kspace`` as scratch space.
    """
    context.notes["kernel"] = "cartesian"
    accelerated = _undersampled(context)
    context.notes["why"] = "zero-filled, accelerated data" if accelerated else "fully sampled"
    if accelerated:
        context.notes["warning"] = (
            "the cartesian kernel zero-fills accelerated data: the images are aliased "
            "(use --recon grappa or auto with calibration lines)"
        )
    output, coil_mode = choose(context)
    combine = combination(context)
    overwrite = context.overwrite_kspace
    space = context.space
    plain = not wants_maps(context, combine) and not _recovers(context)
    if plain and coil_mode is _combined and combine == "rss" and not output.needs_phase:
        # the common case: the magnitude sees no sign, so the coils need no ordering pass
        unordered = unordered_images(kspace, context.space.recon_matrix, overwrite=overwrite)
        data = unordered.root_sum_of_squares()[np.newaxis]
        return [make_image(output.convert(data), context, output.image_type, HISTORY)]
    maps = unit_maps(kspace, context) if wants_maps(context, combine) else None
    coil_images = recover_partial_fourier(
        to_image_space(kspace, space, overwrite=overwrite), context
    )
    return images_from_coils(coil_images, context, maps=maps, combine=combine)


def _recovers(context: ReconContext) -> bool:
    """Whether the unit's images need the partial Fourier step (also when it is too
    asymmetric to recover: the step warns about that)."""
    if setting(context, "partial_fourier") == "zero":
        return False
    x, y, z = context.space.recon_matrix
    space = context.space
    return bool(detect(space, context.reference_head, space.kspace_shape, (z, y, x)))


def _undersampled(context: ReconContext) -> bool:
    if context.sampled is None:
        return max(context.space.acceleration) > 1
    if context.sampled.all():
        return False  # every line there: no lattice to find (the common case, per unit)
    try:
        return find_lattice(context.sampled, context.space).accelerated
    except ConfigurationError:
        return True
