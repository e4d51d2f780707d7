"""Gadgetron-style configuration names -> our kernels.

Gadgetron runs a reconstruction chosen by name (``gadgetron --from_stream -c default.xml``,
or a CONFIG_FILE message naming ``Generic_Cartesian_Grappa.xml``), and clients written for it
send those names.  The standard configurations that reconstruct Cartesian data map to the
kernel doing the same work here; our own kernel names work too; any other name runs the
default kernel after one warning that says so.
"""

from __future__ import annotations

from .kernels import KERNELS

__all__ = ["DEFAULT_KERNEL", "GADGETRON_CONFIGS", "kernel_for_config"]

DEFAULT_KERNEL = "auto"

GADGETRON_CONFIGS: dict[str, str] = {
    # FFT per repetition and slice, coil combination, magnitude (mri_core config/)
    "default": "cartesian",
    "default_optimized": "cartesian",
    "default_short": "cartesian",
    "Generic_Cartesian_FFT": "cartesian",
    "Generic_Cartesian_Image_Chain_FFT": "cartesian",
    # GRAPPA with its calibration lines (generic_recon_gadgets config/)
    "Generic_Cartesian_Grappa": "grappa",
    "Generic_Cartesian_Grappa_SNR": "grappa",
    "Generic_Cartesian_Grappa_T2W": "grappa",
    "Generic_Cartesian_Grappa_Complex": "grappa",
    "Generic_Cartesian_Grappa_RealTimeCine": "grappa",
    "grappa": "grappa",
    "grappa_float": "grappa",
    "grappa_cpu": "grappa",
    "grappa_float_cpu": "grappa",
}
"""Gadgetron configuration name (with or without ``.xml``) -> kernel."""


def kernel_for_config(name: str) -> tuple[str, str | None]:
    """The kernel for a configuration name, and a warning when the name is not known.

    Returns
    -------
    kernel:
        A name of :data:`~parallel_recon.engine.kernels.KERNELS`.
    warning:
        None for a known name; otherwise one sentence saying which kernel runs instead.
    """
    plain = name.strip()
    stem = plain[:-4] if plain.lower().endswith(".xml") else plain
    if stem in KERNELS:
        return stem, None
    if stem in GADGETRON_CONFIGS:
        return GADGETRON_CONFIGS[stem], None
    known = ", ".join(f"{n}.xml" for n in list(GADGETRON_CONFIGS)[:5])
    return DEFAULT_KERNEL, (
        f"unknown configuration {plain!r}: running the {DEFAULT_KERNEL} kernel (NUFFT for "
        "radial and spiral data, GRAPPA or SENSE for accelerated data with calibration lines, "
        f"else FFT) instead; known names include "
        f"{known} and the kernels {', '.join(KERNELS)}"
    )
