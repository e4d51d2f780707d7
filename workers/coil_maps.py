"""Coil maps for combination and SENSE, by method: adaptive or ESPIRiT; saved as an image series.

Both methods start from the same fully sampled central k-space: the calibration lines the
engine delivers for the unit's slice, or, when there are none, the central lines of the unit's
own k-space.  ``adaptive`` (:mod:`.coils`) divides low-resolution coil images by their root sum
of squares; ``espirit`` (:mod:`.espirit`) takes the eigenvector of the calibration's
image-space operator and is zero in the signal-free background.

Maps depend only on the calibration (a version number per calibration the stream gave), so
they are computed once per slice and calibration, by the first worker that needs them, and
shared with the others and the slice's later units (``ReconContext.derived``: shared memory
in the engine); maps from a unit's own centre are made for that unit alone.  With
``save_maps=on`` a kernel also returns the maps as one complex image ``[coils, z, y, x]`` in
the series after its images' (meta ``DataRole`` = ``CoilMaps``), which ``stream_to_mrdhdf5``
stores as its own ``image_<series>`` group and ``parallel-recon view -s <series>`` shows coil
by coil.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from parallel_recon.errors import ConfigurationError
from parallel_recon.protocol import Image, ImageType

from .api import EncodingSpace, ReconContext, ReconPlan
from .coils import centre_block, sensitivity_maps
from .espirit import ESPIRIT_OPTIONS, calibration_region, espirit_maps, espirit_settings
from .fourier import to_image_space
from .image_header import make_image
from .options import KernelOption, choice, switch

__all__ = [
    "MAP_METHODS",
    "MAPS_OPTIONS",
    "MapGrid",
    "MapSource",
    "compute_maps",
    "estimate_maps",
    "map_source",
    "maps_image",
    "maps_options",
    "maps_tag",
    "shared_maps_bytes",
]


@dataclass(frozen=True)
class MapSource:
    """Central k-space to estimate maps from, and where it lies in the unit's grid."""

    block: np.ndarray
    """complex64 ``[k2c, k1c, coils, k0]``."""
    sampled: np.ndarray
    """bool ``[k2c, k1c]``."""
    origin: tuple[int, int]
    """Grid ``(k2, k1)`` of ``block[0, 0]``."""


@dataclass(frozen=True)
class MapGrid:
    """The image grid the maps are made for: ``recon`` (the combination's images) or
    ``encoded`` along k1/k2 (the grid a SENSE solve works on); the readout is always the
    recon-space x (oversampling removed)."""

    shape: tuple[int, int, int]
    """``(z, y, x)`` pixels."""
    periods: tuple[int, int, int]
    """k-space grid lengths the pixels divide (see :mod:`.espirit`)."""

    @classmethod
    def recon(cls, space: EncodingSpace) -> MapGrid:
        x, y, z = space.recon_matrix
        k2, k1, _ = space.kspace_shape
        return cls((z, y, x), (max(k2, z), max(k1, y), x))

    @classmethod
    def encoded(cls, space: EncodingSpace) -> MapGrid:
        k2, k1, _ = space.kspace_shape
        x = space.recon_matrix[0]
        return cls((k2, k1, x), (k2, k1, x))


def map_source(kspace: np.ndarray, context: ReconContext) -> MapSource:
    """The calibration block of the unit's slice, else the central lines of its own k-space."""
    calibration = context.calibration
    if calibration is not None:
        return MapSource(calibration.kspace, calibration.sampled, calibration.origin)
    block, origin = centre_block(kspace, context.sampled)
    sampled = np.abs(block).sum(axis=(2, 3)) > 0
    return MapSource(block, sampled, origin)


def _transform(kspace: np.ndarray, space: EncodingSpace) -> np.ndarray:
    return to_image_space(kspace, space.recon_matrix)


def _adaptive(
    source: MapSource, grid: MapGrid, context: ReconContext, values: dict[str, Any]
) -> np.ndarray:
    del values
    z, y, x = grid.shape
    target = replace(context.space, recon_matrix=(x, y, z))
    return sensitivity_maps(
        source.block, source.origin, context.space.kspace_shape, _transform, target
    )


_MIN_LINES = 3
"""Fewest fully sampled calibration points along k1 for ESPIRiT."""


def _espirit(
    source: MapSource, grid: MapGrid, context: ReconContext, values: dict[str, Any]
) -> np.ndarray:
    settings = espirit_settings(values)
    k2, k1, _ = context.space.kspace_shape
    cal = calibration_region(
        source.block, source.sampled, source.origin, (k2, k1), grid.shape[2], settings.region
    )
    if cal.shape[2] < _MIN_LINES:
        raise ConfigurationError(
            f"maps=espirit needs at least {_MIN_LINES} fully sampled calibration lines along "
            f"k1; found {cal.shape[2]}"
        )
    return espirit_maps(cal, grid.shape, grid.periods, settings).maps


MAP_METHODS: dict[str, Callable[[MapSource, MapGrid, ReconContext, dict[str, Any]], np.ndarray]] = {
    "adaptive": _adaptive,
    "espirit": _espirit,
}
"""``maps=`` -> estimator of complex64 ``[z, y, coils, x]`` maps."""


def maps_options(default: str) -> tuple[KernelOption, ...]:
    """``maps=`` (with a kernel's default), the ESPIRiT parameters and ``save_maps=``."""
    return (
        KernelOption(
            "maps",
            default,
            "coil maps: adaptive (low-resolution coil images over their RSS) or espirit "
            "(ESPIRiT eigenvector maps, zero in the background)",
            choice(*MAP_METHODS),
        ),
        *ESPIRIT_OPTIONS,
        KernelOption(
            "save_maps",
            "off",
            "on: also return the coil maps as a complex image series (series index + 1, "
            "DataRole CoilMaps)",
            switch,
        ),
    )


MAPS_OPTIONS = maps_options("adaptive")
"""The map options of the Cartesian and GRAPPA kernels (adaptive by default)."""


def maps_tag(method: str, grid: MapGrid, values: dict[str, Any], shape: tuple[int, ...]) -> str:
    """Everything besides the calibration that maps depend on, as a cache tag."""
    espirit = tuple(values.get(o.name) for o in ESPIRIT_OPTIONS) if method == "espirit" else ()
    return f"maps method={method} grid={grid.shape}/{grid.periods} espirit={espirit} k={shape}"


def shared_maps_bytes(plan: ReconPlan, coils: int, grid: Callable[[EncodingSpace], MapGrid]) -> int:
    """The largest complex64 maps ``[z, y, coils, x]`` of the plan's encoding spaces on
    ``grid``: the room a kernel declares (``calibration_cache_bytes``) so that a slice's maps
    are made by one worker for all, not once per worker."""
    sizes = (np.prod(grid(space).shape, dtype=np.int64) * coils * 8 for space in plan.spaces)
    return int(max(sizes, default=0))


def compute_maps(
    kspace: np.ndarray, context: ReconContext, method: str, grid: MapGrid, values: dict[str, Any]
) -> np.ndarray:
    """complex64 ``[z, y, coils, x]`` maps of the unit by ``method`` on ``grid``, computed now
    (for a kernel that derives them together with other arrays of the calibration)."""
    return MAP_METHODS[method](map_source(kspace, context), grid, context, values)


def estimate_maps(
    kspace: np.ndarray, context: ReconContext, method: str, grid: MapGrid, values: dict[str, Any]
) -> np.ndarray:
    """complex64 ``[z, y, coils, x]`` maps of the unit by ``method`` on ``grid``.

    ``values`` are the kernel's parsed options (the ESPIRiT ones are read for ``espirit``).
    Maps of a calibration are computed once and shared (``context.derived``); the arrays may
    be read-only views of shared memory.
    """
    if context.calibration is None:
        return compute_maps(kspace, context, method, grid, values)
    tag = maps_tag(method, grid, values, kspace.shape)
    arrays = context.derived(
        tag, lambda: {"maps": compute_maps(kspace, context, method, grid, values)}
    )
    return arrays["maps"]


def maps_image(maps: np.ndarray, context: ReconContext, method: str) -> Image:
    """The maps ``[z, y, coils, x]`` as one complex image ``[coils, z, y, x]`` in the series
    after the unit's images (``--series-index`` + 1)."""
    series = context.plan.series_index + 1
    if series > 0xFFFF:
        raise ConfigurationError(
            "save_maps=on puts the maps in series --series-index + 1: use a series index "
            "below 65535"
        )
    data = np.ascontiguousarray(maps.transpose(2, 0, 1, 3), dtype=np.complex64)
    image = make_image(
        data, context, ImageType.COMPLEX, (method.upper(),), {"DataRole": "CoilMaps"}
    )
    image.head["image_series_index"] = series
    return image
