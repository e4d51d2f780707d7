"""The default kernel: gridding or SENSE for non-Cartesian units, GRAPPA for accelerated data
with calibration, Cartesian FFT otherwise.

A unit whose readouts carry trajectories (radial, spiral: ``context.trajectory``) goes to
:mod:`.noncartesian` (gridding) when it is fully sampled and to :mod:`.sense` (NUFFT CG-SENSE
with ESPIRiT maps from the gridded k-space centre) when it is undersampled: when neighbouring
readouts are more than ``1.05 / FOV`` apart in the outer fifth of the disc the trajectory
covers (:mod:`.undersampling`: fewer than about ``0.9 x pi/2 x N`` radial spokes, spiral arms
more than Nyquist apart).  Options that only the NUFFT kernel has (``method=``, ``combine=``,
``coils=channels``) keep such a unit on :mod:`.noncartesian`.

Per Cartesian unit, from what the engine saw: the lines that were sampled (checked against
the header's ``accelerationFactor``) and whether calibration lines reached this slice.
Accelerated data with calibration goes to :mod:`.grappa` (adaptive coil combination by
default), fully sampled data to :mod:`.cartesian` (root-sum-of-squares by default), and
accelerated data without any calibration is an error that names the missing flags (``--recon
cartesian`` zero-fills it instead). Calibrated data whose lines form no regular lattice
(CAIPIRINHA, variable density) goes to :mod:`.sense`, which GRAPPA's lattice cannot
describe. Every Cartesian kernel recovers partial Fourier data (``partial_fourier=pocs`` by
default). The choice and its reason go into the unit's notes, which ``--profile`` reports.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from parallel_recon.errors import ConfigurationError
from parallel_recon.protocol import Image
from parallel_recon.workers import cartesian, grappa, noncartesian, sense
from parallel_recon.workers.api import ReconContext, ReconPlan
from parallel_recon.workers.options import KernelOption, choice, positive_int
from parallel_recon.workers.sampling import IrregularSampling, find_lattice
from parallel_recon.workers.undersampling import NYQUIST_GAP, describe_gap, edge_gap

__all__ = ["DATA", "OPTIONS", "WARM_IMPORTS", "calibration_cache_bytes", "reconstruct"]

DATA = ("cartesian", "noncartesian")
"""Grid units and readouts with trajectories alike."""

_OWN = {"combine", "coils", "lambda", "iterations", *noncartesian.CARTESIAN_ONLY}
"""Options whose entry comes from another kernel's table (or this one's)."""

_NONCARTESIAN = tuple(o for o in noncartesian.OPTIONS if o.name not in _OWN)

_NUFFT_ONLY = {"method", "combine", "coils"}
"""Options that ask for what only the NUFFT kernel does (keep non-Cartesian units there)."""


def _iterations(text: str) -> int:
    """``kernel`` (0: the chosen kernel's default) or a positive number."""
    return 0 if text == "kernel" else positive_int(text)


OPTIONS: tuple[KernelOption, ...] = (
    *_NONCARTESIAN,
    *(o for o in grappa.OPTIONS if o.name not in {"combine", *(n.name for n in _NONCARTESIAN)}),
    KernelOption(
        "iterations",
        "kernel",
        "conjugate-gradient iterations: kernel (20 for the nufft kernel's method=cg, 30 for "
        "SENSE) or a number",
        _iterations,
    ),
    KernelOption(
        "combine",
        "kernel",
        "coil combination: adaptive, rss, or kernel (adaptive for GRAPPA, rss for the "
        "Cartesian FFT)",
        choice("kernel", *cartesian.COMBINE_HISTORY),
    ),
)
"""Every option of the kernels it may choose; ``combine`` defaults per chosen kernel
(``lambda`` is GRAPPA's regularisation for Cartesian units, the CG's Tikhonov weight for
non-Cartesian ones)."""


def _with_options(context: ReconContext, options: dict[str, str]) -> ReconContext:
    """The context with other kernel options (the plan is shared: copy)."""
    return replace(context, plan=replace(context.plan, options=options))


WARM_IMPORTS = grappa.WARM_IMPORTS
"""What GRAPPA imports at its first calibration."""


def calibration_cache_bytes(plan: ReconPlan, coils: int) -> int:
    """Room for the arrays shared per calibration by the kernel this one chooses: GRAPPA's
    weights and maps, or SENSE's maps (for a lattice GRAPPA cannot fill)."""
    return max(
        grappa.calibration_cache_bytes(plan, coils), sense.calibration_cache_bytes(plan, coils)
    )


def _with_combine(context: ReconContext, default: str) -> ReconContext:
    """The context with ``combine`` resolved for the chosen kernel (adaptive when ``maps=``
    is given: only the adaptive combination uses maps)."""
    options = dict(context.plan.options)
    if options.get("combine", "kernel") == "kernel":
        options["combine"] = "adaptive" if "maps" in options else default
    return _with_options(context, options)


def _for_sense(context: ReconContext) -> ReconContext:
    """The options SENSE shares with the others (maps, partial Fourier, output); GRAPPA's
    ``lambda`` means something else there and stays behind."""
    known = {o.name for o in sense.OPTIONS} - {"lambda"}
    options = {k: v for k, v in context.plan.options.items() if k in known}
    return _with_options(context, options)


def _readouts(kspace: np.ndarray, context: ReconContext) -> list[Image]:
    """Gridding for fully sampled readouts, SENSE for undersampled ones."""
    assert context.trajectory is not None
    x, y, z = context.space.recon_matrix
    gap = edge_gap(context.trajectory, context.readout_partitions, (x, y, z))
    options = dict(context.plan.options)
    if gap > NYQUIST_GAP and not _NUFFT_ONLY & set(options):
        known = {o.name for o in sense.OPTIONS}
        return sense.reconstruct(
            kspace, _with_options(context, {k: v for k, v in options.items() if k in known})
        )
    images = noncartesian.reconstruct(kspace, _with_combine(context, "rss"))
    context.notes["why"] += f", {describe_gap(gap)}"
    return images


def reconstruct(kspace: np.ndarray, context: ReconContext) -> list[Image]:
    """NUFFT, GRAPPA, SENSE or Cartesian, whichever the unit's data, sampling and
    calibration call for."""
    if context.plan.options.get("iterations") == "kernel":
        options = {k: v for k, v in context.plan.options.items() if k != "iterations"}
        context = _with_options(context, options)
    if context.trajectory is not None:
        return _readouts(kspace, context)
    sampled = (
        context.sampled if context.sampled is not None else np.abs(kspace).sum(axis=(2, 3)) > 0
    )
    try:
        lattice = find_lattice(sampled, context.space)
    except IrregularSampling:
        if context.calibration is None:
            raise
        return sense.reconstruct(kspace, _for_sense(context))
    if lattice.accelerated and context.calibration is None:
        raise ConfigurationError(grappa.missing_calibration(context.space, lattice))
    if lattice.accelerated:
        return grappa.reconstruct(kspace, _with_combine(context, "adaptive"))
    return cartesian.reconstruct(kspace, _with_combine(context, "rss"))
