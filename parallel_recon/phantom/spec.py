"""What a simulated scan looks like: the phantom generator's parameters and their limits.

The spec is checked once, when it is made, so that every later stage (header, k-space,
acquisition loop) can trust it and a user gets one clear line naming the bad option.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigurationError
from .geometry import marker_voxel, orientation_problem

__all__ = [
    "CALIBRATION_MODES",
    "TRAJECTORIES",
    "NOISE_BANDWIDTH",
    "PhantomSpec",
    "acquired_lines",
    "calibration_range",
    "first_line",
    "partition_lines",
    "readout_window",
]

CALIBRATION_MODES = ("embedded", "first", "separate")
"""Where calibration lines go: in every repetition, in the first only, or in a reference
block (every slice's calibration region, flagged calibration-only) before the imaging."""

TRAJECTORIES = ("cartesian", "radial", "goldenangle", "spiral")
"""How k-space is covered: Cartesian lines, radial spokes (uniform over 180 degrees or turning
by the golden angle), or spiral interleaves (see :mod:`.noncartesian`)."""

NOISE_BANDWIDTH = 0.793
"""relativeReceiverNoiseBandwidth the simulated receiver has (written into the header)."""

_MAX_COUNTER = 65535
_MAX_COILS = 1024  # the acquisition header's channel mask has 1024 bits


@dataclass(frozen=True)
class PhantomSpec:
    """Parameters of a simulated Cartesian multi-coil Shepp-Logan scan.

    ``matrix`` is the recon-space size in x and y; the readout has ``matrix * oversampling``
    samples.  ``partitions > 1`` makes it a 3D scan (encode step 2).  ``acceleration`` keeps
    every R-th ky line (those with ``(ky - matrix // 2) % R == 0``) plus ``calibration_width``
    lines around the centre; ``partial_fourier`` is the fraction of ky lines acquired (the
    first ones are skipped).  ``noise_level`` is explained in :func:`.phantom.ground_truth`.

    Geometry (see :mod:`.geometry`): ``orientation`` names the read/phase/slice directions
    (``axial``, ``coronal``, ``sagittal``, ``oblique`` or rotation angles ``"L,P,S"`` in
    degrees), ``position`` is the centre of the imaged volume in LPS mm, and ``marker`` (LPS
    mm) puts one voxel of intensity :data:`.geometry.MARKER_VALUE` at the voxel nearest it.
    """

    matrix: int = 256
    coils: int = 8
    oversampling: int = 2
    repetitions: int = 1
    acceleration: int = 1
    calibration_width: int = 0
    noise_level: float = 0.05
    noise_calibration: bool = False
    kspace_coordinates: bool = False
    slices: int = 1
    contrasts: int = 1
    partitions: int = 1
    averages: int = 1
    partial_fourier: float = 1.0
    seed: int = 0
    orientation: str = "axial"
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    marker: tuple[float, float, float] | None = None
    noise_correlation: float = 0.0
    """Correlation of the noise of neighbouring coils (ring order); also makes the coils'
    noise powers differ (0.7..1.3 relative std). 0 keeps white, equal-power noise."""
    noise_lines: int = 1
    """Lines of the noise scan (``noise_calibration``)."""
    noise_dwell_time_us: float = 5.0
    """Sample time of the noise scan; the imaging lines use 5 us."""
    calibration: str = "embedded"
    acceleration_2: int = 1
    """Acceleration along k2 (3D): keeps every R2-th partition (plus the calibration ones)."""
    caipi_shift: int = 0
    """CAIPIRINHA (3D with k2 acceleration): each acquired partition's k1 pattern moves by this
    many lines from the previous one (0..R-1), so the lines form a sheared lattice."""
    asymmetric_echo: float = 1.0
    """Fraction of the readout acquired (0.5..1]: the first samples are skipped, as in an
    asymmetric echo; ``center_sample`` says where the k-space centre lies in what remains."""
    trajectory: str = "cartesian"
    """One of :data:`TRAJECTORIES`; non-Cartesian scans store their trajectory in every
    acquisition and are simulated from the phantom's analytic spectrum."""
    spokes: int = 0
    """Radial spokes or spiral interleaves per slice (partition); 0: fully sampled."""

    def __post_init__(self) -> None:
        for check in _CHECKS:
            problem = check(self)
            if problem:
                raise ConfigurationError(problem)

    @property
    def readout(self) -> int:
        """Samples per readout (``matrix * oversampling``)."""
        return self.matrix * self.oversampling

    @property
    def is_3d(self) -> bool:
        return self.partitions > 1

    @property
    def is_cartesian(self) -> bool:
        return self.trajectory == "cartesian"


def _count(name: str, low: int, high: int) -> Callable[[PhantomSpec], str | None]:
    def check(spec: PhantomSpec) -> str | None:
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"{name} must be an integer in [{low}, {high}], got {value!r}"
        return None

    return check


def _matrix_even(spec: PhantomSpec) -> str | None:
    if spec.matrix % 2:
        return f"matrix must be even, got {spec.matrix}"
    return None


def _readout_fits(spec: PhantomSpec) -> str | None:
    if spec.readout > _MAX_COUNTER:
        return (
            f"matrix * oversampling must be <= {_MAX_COUNTER} samples "
            f"(the header's number_of_samples), got {spec.readout}"
        )
    return None


def _acceleration(spec: PhantomSpec) -> str | None:
    if spec.acceleration > spec.matrix // 2:
        return f"acceleration must be <= matrix / 2 = {spec.matrix // 2}, got {spec.acceleration}"
    return None


def _noise(spec: PhantomSpec) -> str | None:
    if not math.isfinite(spec.noise_level) or spec.noise_level < 0:
        return f"noise_level must be a finite number >= 0, got {spec.noise_level!r}"
    return None


def _in_range(name: str, value: float, low: float, high: float) -> str | None:
    if not (math.isfinite(value) and low <= value <= high):
        return f"{name} must be a number in [{low}, {high}], got {value!r}"
    return None


def _asymmetric_echo(spec: PhantomSpec) -> str | None:
    value = spec.asymmetric_echo
    if not (math.isfinite(value) and 0.5 < value <= 1.0):
        return f"asymmetric_echo must be in (0.5, 1], got {value!r}"
    return None


def _caipi_shift(spec: PhantomSpec) -> str | None:
    if spec.caipi_shift and spec.acceleration_2 < 2:
        return "caipi_shift needs acceleration_2 >= 2 (a 3D scan accelerated along k2)"
    if not 0 <= spec.caipi_shift < spec.acceleration:
        return f"caipi_shift must be in [0, acceleration - 1], got {spec.caipi_shift}"
    return None


def _partial_fourier(spec: PhantomSpec) -> str | None:
    if not 0.5 <= spec.partial_fourier <= 1.0:
        return f"partial_fourier must be in [0.5, 1], got {spec.partial_fourier!r}"
    return None


def _orientation(spec: PhantomSpec) -> str | None:
    return orientation_problem(spec.orientation)


def _point(name: str) -> Callable[[PhantomSpec], str | None]:
    def check(spec: PhantomSpec) -> str | None:
        value = getattr(spec, name)
        if value is None and name == "marker":
            return None
        try:
            ok = len(value) == 3 and all(math.isfinite(float(v)) for v in value)
        except (TypeError, ValueError):
            ok = False
        return None if ok else f"{name} must be three finite numbers (LPS mm), got {value!r}"

    return check


def _marker_inside(spec: PhantomSpec) -> str | None:
    try:
        marker_voxel(spec)
    except ConfigurationError as exc:
        return str(exc)
    return None


def _non_cartesian(spec: PhantomSpec) -> str | None:
    """Options that make sense only for Cartesian lines are refused with a trajectory."""
    if spec.trajectory not in TRAJECTORIES:
        return f"trajectory must be one of {', '.join(TRAJECTORIES)}, got {spec.trajectory!r}"
    if spec.is_cartesian:
        return "spokes applies to radial and spiral trajectories" if spec.spokes else None
    cartesian_only = {
        "acceleration": spec.acceleration != 1,
        "acceleration_2": spec.acceleration_2 != 1,
        "calibration_width": spec.calibration_width != 0,
        "partial_fourier": spec.partial_fourier != 1.0,
        "asymmetric_echo": spec.asymmetric_echo != 1.0,
        "caipi_shift": spec.caipi_shift != 0,
    }
    for name, given in cartesian_only.items():
        if given:
            return f"{name} applies to Cartesian scans only (trajectory {spec.trajectory})"
    return None


_CHECKS: tuple[Callable[[PhantomSpec], str | None], ...] = (
    _count("matrix", 8, 16384),
    _matrix_even,
    _count("coils", 1, _MAX_COILS),
    _count("oversampling", 1, 8),
    _readout_fits,
    _count("repetitions", 1, _MAX_COUNTER + 1),
    _count("acceleration", 1, _MAX_COUNTER),
    _acceleration,
    _count("calibration_width", 0, 16384),
    _noise,
    _count("slices", 1, _MAX_COUNTER + 1),
    _count("contrasts", 1, 64),
    _count("partitions", 1, 4096),
    _count("averages", 1, _MAX_COUNTER + 1),
    _partial_fourier,
    _asymmetric_echo,
    _caipi_shift,
    _count("seed", 0, 2**63 - 1),
    _orientation,
    _point("position"),
    _point("marker"),
    _marker_inside,
    _count("noise_lines", 1, 65536),
    _count("acceleration_2", 1, _MAX_COUNTER),
    lambda s: _in_range("noise_correlation", s.noise_correlation, 0.0, 0.95),
    lambda s: _in_range("noise_dwell_time_us", s.noise_dwell_time_us, 0.01, 1e6),
    lambda s: (
        None
        if s.calibration in CALIBRATION_MODES
        else f"calibration must be one of {', '.join(CALIBRATION_MODES)}, got {s.calibration!r}"
    ),
    lambda s: (
        None
        if s.acceleration_2 <= max(1, s.partitions // 2)
        else f"acceleration_2 must be <= partitions / 2, got {s.acceleration_2}"
    ),
    _count("spokes", 0, _MAX_COUNTER),
    _non_cartesian,
)


def first_line(spec: PhantomSpec) -> int:
    """The first ky line acquired: partial Fourier skips ``(1 - partial_fourier) * matrix``."""
    return round((1.0 - spec.partial_fourier) * spec.matrix)


def readout_window(spec: PhantomSpec) -> tuple[int, int]:
    """``(first, center_sample)``: the readout samples kept start at ``first`` (the asymmetric
    echo skips the ones before) and the k-space centre is sample ``center_sample`` of them."""
    first = spec.readout - round(spec.asymmetric_echo * spec.readout)
    return first, spec.readout // 2 - first


def calibration_range(spec: PhantomSpec) -> range:
    """ky lines of the fully sampled calibration region (empty when the width is 0)."""
    start = spec.matrix // 2 - spec.calibration_width // 2
    start = max(start, 0)
    return range(start, min(start + spec.calibration_width, spec.matrix))


def acquired_lines(
    spec: PhantomSpec, calibrated: bool = True, shift: int = 0
) -> list[tuple[int, bool, bool]]:
    """Every acquired ky line in order, as ``(ky, in_pattern, in_calibration)``.

    ``in_pattern``: part of the R-fold undersampled imaging pattern (moved by ``shift``
    lines); ``in_calibration``: part of the calibration region.  A line is acquired when
    either holds; with ``calibrated`` False (a repetition without calibration lines) only the
    pattern is.
    """
    centre = spec.matrix // 2 + shift
    calibration = calibration_range(spec) if calibrated else range(0)
    lines = []
    for ky in range(first_line(spec), spec.matrix):
        in_pattern = (ky - centre) % spec.acceleration == 0
        in_calibration = ky in calibration
        if in_pattern or in_calibration:
            lines.append((ky, in_pattern, in_calibration))
    return lines


def _partition_calibration(spec: PhantomSpec) -> range:
    width = min(spec.calibration_width, spec.partitions) if spec.acceleration_2 > 1 else 0
    start = max(spec.partitions // 2 - width // 2, 0)
    return range(start, start + width)


def partition_lines(
    spec: PhantomSpec, kz: int, calibrated: bool = True
) -> list[tuple[int, bool, bool]]:
    """The ky lines of partition ``kz`` (3D with k2 acceleration: the partition's own pattern).

    A partition outside every R2-th one keeps only its calibration lines (when it lies in the
    k2 calibration region); in 2D, or without k2 acceleration, it is :func:`acquired_lines`.
    With a CAIPIRINHA shift the k1 pattern of the n-th acquired partition from the centre
    moves by ``n * caipi_shift`` lines.
    """
    if spec.acceleration_2 == 1:
        return acquired_lines(spec, calibrated)
    in_pattern_z = (kz - spec.partitions // 2) % spec.acceleration_2 == 0
    in_calibration_z = calibrated and kz in _partition_calibration(spec)
    shift = spec.caipi_shift * ((kz - spec.partitions // 2) // spec.acceleration_2)
    lines = []
    for ky, pattern, calibration in acquired_lines(spec, calibrated, shift):
        both_pattern = pattern and in_pattern_z
        both_calibration = calibration and in_calibration_z
        if both_pattern or both_calibration:
            lines.append((ky, both_pattern, both_calibration))
    return lines


def default_readouts(spec: PhantomSpec) -> int:
    """Spokes or interleaves of a fully sampled slice."""
    if spec.trajectory == "spiral":
        return math.ceil(spec.matrix / 8)
    return math.ceil(math.pi / 2 * spec.matrix)


def readout_count(spec: PhantomSpec) -> int:
    """Spokes or interleaves per slice (per partition)."""
    return spec.spokes or default_readouts(spec)
