"""The XML header, reduced to what placement and reconstruction need.

Parsing goes through ``ismrmrd.xsd`` (the schema model ismrmrd-python ships) so that what we
accept is what the reference tools accept; every failure becomes one
:class:`~parallel_recon.errors.HeaderError` line that names the missing or malformed element.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Mapping
from typing import Any

import ismrmrd.xsd

from parallel_recon.workers.api import EncodingSpace, ReconPlan

from ..errors import HeaderError

__all__ = [
    "OUTPUTS",
    "calibration_keys",
    "encoding_spaces",
    "parse_header",
    "plan_from_header",
    "receiver_channels",
    "receiver_noise_bandwidth",
    "units_per_repetition",
]

OUTPUTS = ("magnitude", "phase", "complex")
"""Values of ``ReconPlan.output`` the bundled kernels understand."""

_COUNTERS_PER_REPETITION = ("slice", "contrast", "phase", "set")
"""Encoding-limit counters whose combinations can all be open inside one repetition."""

_MISSING = re.compile(r"^(\w+)\.__init__\(\) missing .*?arguments?: (.*)$")


def _missing_elements(exc: TypeError) -> str:
    """Turn the model's ``__init__() missing ... 'a', and 'b'`` into a readable phrase."""
    match = _MISSING.match(str(exc))
    if match is None:
        return str(exc)
    parent, names = match.groups()
    elements = [n for n in re.findall(r"'(\w+)'", names)]
    parent = parent[: -len("Type")] if parent.endswith("Type") else parent
    listed = ", ".join(f"<{name}>" for name in elements)
    noun = "element" if len(elements) == 1 else "elements"
    return f"required {noun} {listed} missing inside <{parent}>"


@functools.lru_cache(maxsize=4)  # one run asks for several parts of the same header
def parse_header(xml: str) -> Any:
    """The ``ismrmrd.xsd`` model of an XML header; HeaderError on malformed or incomplete XML.

    Cached: treat the model as read-only."""
    if not xml.strip():
        raise HeaderError("XML header: expected an <ismrmrdHeader> document, found empty text")
    try:
        with warnings.catch_warnings():
            # xsdata only warns about values it cannot convert (``<x>abc</x>``): make them fail
            warnings.simplefilter("error")
            return ismrmrd.xsd.CreateFromDocument(xml)
    except TypeError as exc:
        raise HeaderError(f"XML header: {_missing_elements(exc)}") from None
    except Exception as exc:  # xsdata raises ParserError, ConverterWarning subclasses, ...
        first = " ".join(str(exc).split()) or type(exc).__name__
        raise HeaderError(
            f"XML header: expected ismrmrd.xsd XML, found a parse error: {first}"
        ) from None


def _triple(space: Any, what: str, index: int) -> tuple[Any, Any]:
    """``(matrixSize, fieldOfView_mm)`` of an encodedSpace/reconSpace, checked."""
    matrix = getattr(space, "matrixSize", None)
    fov = getattr(space, "fieldOfView_mm", None)
    if matrix is None or fov is None:
        missing = "matrixSize" if matrix is None else "fieldOfView_mm"
        raise HeaderError(f"XML header: <encoding> {index} has no <{what}><{missing}>")
    return matrix, fov


def _limits(limits: Any, name: str, extent: int) -> tuple[int, int, int]:
    """(minimum, maximum, center) of one encoding limit, or the full extent when absent."""
    limit = getattr(limits, name, None) if limits is not None else None
    if limit is None:
        return (0, extent - 1, extent // 2)
    return (int(limit.minimum), int(limit.maximum), int(limit.center))


def _trajectory(encoding: Any) -> str:
    value = getattr(encoding, "trajectory", None)
    return str(getattr(value, "value", value) or "cartesian")


def _parallel_imaging(encoding: Any) -> tuple[tuple[int, int], str]:
    """(R along k1, R along k2) and the calibration mode of ``<parallelImaging>``."""
    imaging = getattr(encoding, "parallelImaging", None)
    if imaging is None:
        return (1, 1), ""
    factor = getattr(imaging, "accelerationFactor", None)
    r1 = int(getattr(factor, "kspace_encoding_step_1", 1) or 1) if factor is not None else 1
    r2 = int(getattr(factor, "kspace_encoding_step_2", 1) or 1) if factor is not None else 1
    mode = getattr(imaging, "calibrationMode", None)
    return (max(r1, 1), max(r2, 1)), str(getattr(mode, "value", mode) or "")


def _space(encoding: Any, index: int) -> EncodingSpace:
    enc_matrix, enc_fov = _triple(encoding.encodedSpace, "encodedSpace", index)
    rec_matrix, rec_fov = _triple(encoding.reconSpace, "reconSpace", index)
    encoded = (int(enc_matrix.x), int(enc_matrix.y), int(enc_matrix.z))
    recon = (int(rec_matrix.x), int(rec_matrix.y), int(rec_matrix.z))
    for what, matrix in (("encodedSpace", encoded), ("reconSpace", recon)):
        if min(matrix) < 1:
            raise HeaderError(
                f"XML header: <encoding> {index} <{what}><matrixSize>: expected positive "
                f"x, y, z, found {matrix}"
            )
    limits = encoding.encodingLimits
    acceleration, mode = _parallel_imaging(encoding)
    return EncodingSpace(
        encoded_matrix=encoded,
        recon_matrix=recon,
        encoded_fov=(float(enc_fov.x), float(enc_fov.y), float(enc_fov.z)),
        recon_fov=(float(rec_fov.x), float(rec_fov.y), float(rec_fov.z)),
        k1_limits=_limits(limits, "kspace_encoding_step_1", encoded[1]),
        k2_limits=_limits(limits, "kspace_encoding_step_2", encoded[2]),
        trajectory=_trajectory(encoding),
        acceleration=acceleration,
        calibration_mode=mode,
    )


def _encodings(header: Any) -> list[Any]:
    encodings = list(getattr(header, "encoding", None) or [])
    if not encodings:
        raise HeaderError("XML header: expected at least one <encoding>, found none")
    return encodings


def encoding_spaces(header: Any) -> tuple[EncodingSpace, ...]:
    """One :class:`EncodingSpace` per ``<encoding>`` of a parsed header."""
    return tuple(_space(encoding, index) for index, encoding in enumerate(_encodings(header)))


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
        Malformed XML, no ``<encoding>``, or a missing/invalid matrix size.
    """
    spaces = encoding_spaces(parse_header(xml))
    return ReconPlan(
        header_xml=xml,
        spaces=spaces,
        output=output,
        series_index=series_index,
        options=dict(options or {}),
    )


def _count(limits: Any, name: str) -> int:
    limit = getattr(limits, name, None) if limits is not None else None
    if limit is None:
        return 1
    return max(1, int(limit.maximum) + 1)


def units_per_repetition(xml: str) -> int:
    """How many units can be open at once inside one repetition.

    Summed over encodings of ``slices x contrasts x phases x sets`` (each ``maximum + 1`` of
    its encoding limit, 1 when absent): interleaved multi-slice data keeps them all open.
    """
    total = 0
    for encoding in _encodings(parse_header(xml)):
        product = 1
        for name in _COUNTERS_PER_REPETITION:
            product *= _count(encoding.encodingLimits, name)
        total += product
    return total


def receiver_channels(xml: str) -> int | None:
    """``<acquisitionSystemInformation><receiverChannels>``, or None when absent."""
    system = getattr(parse_header(xml), "acquisitionSystemInformation", None)
    channels = getattr(system, "receiverChannels", None) if system is not None else None
    return None if channels is None else int(channels)


def calibration_keys(xml: str) -> int:
    """How many (encoding space, slice, contrast) calibrations a stream can keep at once."""
    total = 0
    for encoding in _encodings(parse_header(xml)):
        limits = encoding.encodingLimits
        total += _count(limits, "slice") * _count(limits, "contrast")
    return total


def receiver_noise_bandwidth(xml: str, default: float) -> float:
    """``<acquisitionSystemInformation><relativeReceiverNoiseBandwidth>`` or ``default``."""
    system = getattr(parse_header(xml), "acquisitionSystemInformation", None)
    value = getattr(system, "relativeReceiverNoiseBandwidth", None) if system else None
    return default if value is None or float(value) <= 0 else float(value)
