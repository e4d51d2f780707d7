"""The default kernel: GRAPPA for accelerated data with calibration, Cartesian FFT otherwise.

Per unit, from what the engine saw: the lines that were sampled (checked against the header's
``accelerationFactor``) and whether calibration lines reached this slice.  Accelerated data
with calibration goes to :mod:`.grappa` (adaptive coil combination by default), fully sampled
data to :mod:`.cartesian` (root-sum-of-squares by default), and accelerated data without any
calibration is an error that names the missing flags (``--recon cartesian`` zero-fills it
instead).  The choice and its reason go into the unit's notes, which ``--profile`` reports.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from parallel_recon.errors import ConfigurationError
from parallel_recon.protocol import Image
from parallel_recon.workers import cartesian, grappa
from parallel_recon.workers.api import ReconContext
from parallel_recon.workers.options import KernelOption, choice
from parallel_recon.workers.sampling import find_lattice

__all__ = ["OPTIONS", "WARM_IMPORTS", "calibration_cache_bytes", "reconstruct"]

OPTIONS: tuple[KernelOption, ...] = (
    *(o for o in grappa.OPTIONS if o.name != "combine"),
    KernelOption(
        "combine",
        "kernel",
        "coil combination: adaptive, rss, or kernel (adaptive for GRAPPA, rss for the "
        "Cartesian FFT)",
        choice("kernel", *cartesian.COMBINE_HISTORY),
    ),
)
"""Every option of the kernels it may choose; ``combine`` defaults per chosen kernel."""


WARM_IMPORTS = grappa.WARM_IMPORTS
"""What GRAPPA imports at its first calibration."""

calibration_cache_bytes = grappa.calibration_cache_bytes
"""Room for GRAPPA's shared weights and maps (the only kernel this one may choose that
derives arrays from the calibration)."""


def _with_combine(context: ReconContext, default: str) -> ReconContext:
    """The context with ``combine`` resolved for the chosen kernel (the plan is shared: copy)."""
    options = dict(context.plan.options)
    if options.get("combine", "kernel") == "kernel":
        options["combine"] = default
    plan = type(context.plan)(
        header_xml=context.plan.header_xml,
        spaces=context.plan.spaces,
        output=context.plan.output,
        series_index=context.plan.series_index,
        options=options,
    )
    return dataclasses.replace(context, plan=plan)


def reconstruct(kspace: np.ndarray, context: ReconContext) -> list[Image]:
    """GRAPPA or Cartesian, whichever the unit's sampling and calibration call for."""
    sampled = (
        context.sampled if context.sampled is not None else np.abs(kspace).sum(axis=(2, 3)) > 0
    )
    lattice = find_lattice(sampled, context.space)
    if lattice.accelerated and context.calibration is None:
        raise ConfigurationError(grappa.missing_calibration(context.space, lattice))
    if lattice.accelerated:
        return grappa.reconstruct(kspace, _with_combine(context, "adaptive"))
    return cartesian.reconstruct(kspace, _with_combine(context, "rss"))
