"""The XML header, reduced to what placement and reconstruction need.

Headers written by other tools often bend ismrmrd.xsd: capitalised enumeration values
(``<trajectory>Cartesian</trajectory>``), a missing ``<reconSpace>`` or ``<encodingLimits>``,
no namespace, an empty optional number.  A reconstruction needs only a few facts (the
encoded matrix above all), so the header is read leniently with ElementTree: each fact
that is missing or malformed falls back to what the data implies (recon space = encoded
space, encoding limits = the whole encoded matrix centred, trajectory Cartesian) and is
noted, and the notes reach the user as one warning line (:attr:`HeaderFacts.notes`).  Only
what makes a reconstruction impossible is a :class:`~parallel_recon.errors.HeaderError`: no
XML, no ``<encoding>``, no encoded matrix, a matrix that is not a positive integer.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from parallel_recon.workers.api import EncodingSpace, ReconPlan

from ..errors import HeaderError
from ..protocol.text import parse_xml

__all__ = [
    "OUTPUTS",
    "TRAJECTORIES",
    "HeaderFacts",
    "calibration_keys",
    "plan_from_header",
    "read_header",
    "receiver_channels",
    "receiver_noise_bandwidth",
    "units_per_repetition",
]

OUTPUTS = ("magnitude", "phase", "complex")
"""Values of ``ReconPlan.output`` the bundled kernels understand."""

TRAJECTORIES = ("cartesian", "epi", "radial", "goldenangle", "spiral", "other")
"""ismrmrd.xsd's ``trajectoryType`` values."""

CALIBRATION_MODES = ("embedded", "interleaved", "separate", "external", "other")
"""ismrmrd.xsd's ``calibrationModeType`` values."""

_COUNTERS_PER_REPETITION = ("slice", "contrast", "phase", "set")
"""Encoding-limit counters whose combinations can all be open inside one repetition."""

_T = TypeVar("_T")


@dataclass(frozen=True)
class HeaderFacts:
    """What the engine takes from an XML header."""

    spaces: tuple[EncodingSpace, ...]
    units_per_repetition: int
    """Units one repetition can keep open: sum over encodings of slices x contrasts x phases
    x sets (each ``maximum + 1`` of its encoding limit, 1 when absent)."""
    calibration_keys: int
    """(encoding space, slice, contrast) calibrations a stream can keep at once."""
    receiver_channels: int | None
    noise_bandwidth: float | None
    """``relativeReceiverNoiseBandwidth`` when present and positive."""
    notes: tuple[str, ...]
    """How the header bends ismrmrd.xsd and what was assumed instead (for one warning)."""
    averages: int = 1
    """Most averages of any encoding (``maximum + 1`` of its average limit, 1 when absent)."""

    def warning(self) -> str | None:
        """One warning line for the notes, or None when the header follows the schema."""
        if not self.notes:
            return None
        return "XML header bends ismrmrd.xsd, reconstructing anyway: " + "; ".join(self.notes)


# ----------------------------------------------------------------- reading
def _child(node: ET.Element | None, name: str) -> ET.Element | None:
    return None if node is None else node.find(name)


def _text(node: ET.Element | None) -> str | None:
    if node is None or node.text is None or not node.text.strip():
        return None
    return node.text.strip()


class _Reader:
    """Reads one header, collecting notes about every fallback it takes."""

    def __init__(self, root: ET.Element):
        self.root = root
        self.notes: list[str] = []

    def number(
        self, node: ET.Element | None, name: str, convert: Callable[[str], _T], where: str
    ) -> _T | None:
        """``node/name`` converted, or None when absent, empty or malformed (noted)."""
        element = _child(node, name)
        if element is None:
            return None
        text = _text(element)
        try:
            if text is None:
                raise ValueError
            return convert(text)
        except ValueError:
            self.notes.append(f"{where}<{name}> {text or 'empty'!r} ignored (not a number)")
            return None

    def enumeration(self, node: ET.Element | None, values: tuple[str, ...], where: str) -> str:
        """An enumeration value matched without regard to case ('' when absent)."""
        text = _text(node)
        if text is None:
            return ""
        for value in values:
            if text.lower() == value.lower():
                if text != value:
                    self.notes.append(f"{where} {text!r} read as {value!r}")
                return value
        self.notes.append(f"{where} {text!r} is not one of {', '.join(values)}")
        return text

    def matrix(self, space: ET.Element, where: str) -> tuple[int, int, int] | None:
        """``matrixSize`` x, y, z (absent axes are 1, as in the schema); None if missing."""
        node = _child(space, "matrixSize")
        if node is None:
            return None
        axes = []
        for axis in ("x", "y", "z"):
            element = _child(node, axis)
            if element is None:
                axes.append(1)
                continue
            text = _text(element) or ""
            try:
                value = int(text)
            except ValueError:
                value = 0
            if value < 1:
                raise HeaderError(
                    f"XML header: {where}<matrixSize><{axis}>: expected a positive integer, "
                    f"found {text!r}"
                )
            axes.append(value)
        return (axes[0], axes[1], axes[2])

    def fov(self, space: ET.Element | None, where: str) -> tuple[float, float, float] | None:
        node = _child(space, "fieldOfView_mm")
        if node is None:
            return None
        values = [self.number(node, axis, float, f"{where}<fieldOfView_mm>") for axis in "xyz"]
        return tuple(v or 0.0 for v in values)  # type: ignore[return-value]

    def limits(
        self, limits: ET.Element | None, name: str, extent: int, where: str
    ) -> tuple[int, int, int]:
        """(minimum, maximum, center) of one limit; the full extent, centred, when absent."""
        full = (0, extent - 1, extent // 2)
        node = _child(limits, name)
        if node is None:
            return full
        values = [self.number(node, key, int, f"{where}<{name}>") for key in _LIMIT_KEYS]
        if any(v is None for v in values):
            self.notes.append(f"{where}<{name}> incomplete: the whole encoded matrix is used")
            return full
        low, high, centre = (int(v or 0) for v in values)
        return (low, high, centre)

    def count(self, limits: ET.Element | None, name: str, where: str) -> int:
        maximum = self.number(_child(limits, name), "maximum", int, f"{where}<{name}>")
        return max(1, (maximum or 0) + 1)

    def space(self, encoding: ET.Element, index: int) -> EncodingSpace:
        where = f"<encoding> {index} "
        encoded_node = _child(encoding, "encodedSpace")
        encoded = (
            None if encoded_node is None else self.matrix(encoded_node, f"{where}<encodedSpace>")
        )
        if encoded_node is None or encoded is None:
            missing = "<encodedSpace>" if encoded_node is None else "<encodedSpace><matrixSize>"
            raise HeaderError(
                f"XML header: {where}has no {missing}: the encoded matrix sizes the k-space "
                "grid, so the data cannot be placed"
            )
        recon_node = _child(encoding, "reconSpace")
        try:
            recon = None if recon_node is None else self.matrix(recon_node, f"{where}<reconSpace>")
        except HeaderError as exc:
            self.notes.append(
                f"{str(exc).removeprefix('XML header: ')}: recon space = encoded space"
            )
            recon = encoded
        if recon is None:
            missing = "<reconSpace>" if recon_node is None else "<reconSpace><matrixSize>"
            self.notes.append(f"{where}has no {missing}: recon space = encoded space")
            recon = encoded
        encoded_fov = self.fov(encoded_node, f"{where}<encodedSpace>")
        recon_fov = self.fov(recon_node, f"{where}<reconSpace>")
        if recon_fov is None and recon_node is not None:
            self.notes.append(f"{where}<reconSpace> has no <fieldOfView_mm>: the encoded one")
        if encoded_fov is None:
            self.notes.append(f"{where}<encodedSpace> has no <fieldOfView_mm>")
        recon_fov = recon_fov or encoded_fov or (0.0, 0.0, 0.0)
        encoded_fov = encoded_fov or recon_fov
        limits = _child(encoding, "encodingLimits")
        if limits is None:
            self.notes.append(f"{where}has no <encodingLimits>: the whole encoded matrix, centred")
        trajectory_node = _child(encoding, "trajectory")
        trajectory = self.enumeration(trajectory_node, TRAJECTORIES, f"{where}<trajectory>")
        if not trajectory:
            self.notes.append(f"{where}has no <trajectory>: Cartesian assumed")
            trajectory = "cartesian"
        acceleration, mode = self.parallel_imaging(encoding, where)
        return EncodingSpace(
            encoded_matrix=encoded,
            recon_matrix=recon,
            encoded_fov=encoded_fov,
            recon_fov=recon_fov,
            k1_limits=self.limits(limits, "kspace_encoding_step_1", encoded[1], where),
            k2_limits=self.limits(limits, "kspace_encoding_step_2", encoded[2], where),
            trajectory=trajectory,
            acceleration=acceleration,
            calibration_mode=mode,
        )

    def parallel_imaging(self, encoding: ET.Element, where: str) -> tuple[tuple[int, int], str]:
        """(R along k1, R along k2) and the calibration mode of ``<parallelImaging>``."""
        imaging = _child(encoding, "parallelImaging")
        if imaging is None:
            return (1, 1), ""
        factor = _child(imaging, "accelerationFactor")
        inside = f"{where}<accelerationFactor>"
        r1 = self.number(factor, "kspace_encoding_step_1", int, inside) or 1
        r2 = self.number(factor, "kspace_encoding_step_2", int, inside) or 1
        mode = self.enumeration(
            _child(imaging, "calibrationMode"), CALIBRATION_MODES, f"{where}<calibrationMode>"
        )
        return (max(r1, 1), max(r2, 1)), mode if mode in CALIBRATION_MODES else ""

    def facts(self) -> HeaderFacts:
        encodings = self.root.findall("encoding")
        if not encodings:
            raise HeaderError("XML header: expected at least one <encoding>, found none")
        spaces = tuple(self.space(encoding, i) for i, encoding in enumerate(encodings))
        units = calibrations = 0
        averages = 1
        for index, encoding in enumerate(encodings):
            limits = _child(encoding, "encodingLimits")
            where = f"<encoding> {index} "
            counts = {name: self.count(limits, name, where) for name in _COUNTERS_PER_REPETITION}
            product = 1
            for value in counts.values():
                product *= value
            units += product
            calibrations += counts["slice"] * counts["contrast"]
            averages = max(averages, self.count(limits, "average", where))
        system = _child(self.root, "acquisitionSystemInformation")
        inside = "<acquisitionSystemInformation>"
        channels = self.number(system, "receiverChannels", int, inside)
        bandwidth = self.number(system, "relativeReceiverNoiseBandwidth", float, inside)
        return HeaderFacts(
            spaces=spaces,
            units_per_repetition=units,
            calibration_keys=calibrations,
            receiver_channels=channels if channels is None or channels > 0 else None,
            noise_bandwidth=bandwidth if bandwidth is not None and bandwidth > 0 else None,
            notes=tuple(dict.fromkeys(self.notes)),
            averages=averages,
        )


_LIMIT_KEYS = ("minimum", "maximum", "center")


@functools.lru_cache(maxsize=4)
def read_header(xml: str) -> HeaderFacts:
    """The facts of an XML header (cached: the supervisor asks several times per stream).

    Raises
    ------
    HeaderError
        Empty or unparsable XML, no ``<encoding>``, no encoded matrix, or a matrix size that
        is not a positive integer.
    """
    if not xml.strip():
        raise HeaderError("XML header: expected an <ismrmrdHeader> document, found empty text")
    try:
        root = parse_xml(xml)
    except ET.ParseError as exc:
        first = " ".join(str(exc).split())
        raise HeaderError(
            f"XML header: expected ismrmrd.xsd XML, found a parse error: {first}"
        ) from None
    reader = _Reader(root)
    if root.tag != "ismrmrdHeader":
        reader.notes.append(f"the root element is <{root.tag}>, not <ismrmrdHeader>")
    return reader.facts()


def plan_from_header(
    xml: str,
    *,
    output: str = "magnitude",
    series_index: int = 1,
    options: Mapping[str, str] | None = None,
) -> ReconPlan:
    """The :class:`ReconPlan` shared by all units of a stream.

    ``output`` and ``options`` are passed through unchecked: user kernels may define their
    own values, and the kernel that runs says which it understands.

    Raises
    ------
    HeaderError
        See :func:`read_header`.
    """
    return ReconPlan(
        header_xml=xml,
        spaces=read_header(xml).spaces,
        output=output,
        series_index=series_index,
        options=dict(options or {}),
    )


def units_per_repetition(xml: str) -> int:
    """How many units can be open at once inside one repetition (see :class:`HeaderFacts`)."""
    return read_header(xml).units_per_repetition


def receiver_channels(xml: str) -> int | None:
    """``<acquisitionSystemInformation><receiverChannels>``, or None when absent."""
    return read_header(xml).receiver_channels


def calibration_keys(xml: str) -> int:
    """How many (encoding space, slice, contrast) calibrations a stream can keep at once."""
    return read_header(xml).calibration_keys


def receiver_noise_bandwidth(xml: str, default: float) -> float:
    """``<acquisitionSystemInformation><relativeReceiverNoiseBandwidth>`` or ``default``."""
    value = read_header(xml).noise_bandwidth
    return default if value is None else value
