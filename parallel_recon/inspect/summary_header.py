"""Summarise an ISMRMRD XML header without trusting it to follow the schema.

``info`` must describe odd files too (simulator output, hand-written headers), so this reads
the XML with ElementTree, ignores namespaces, and picks out the fields people ask about first.
A header that does not parse becomes a warning, never an exception.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from ..protocol.text import parse_xml

__all__ = ["LIMIT_NAMES", "summarize_header"]

LIMIT_NAMES = (
    "kspace_encoding_step_0",
    "kspace_encoding_step_1",
    "kspace_encoding_step_2",
    "average",
    "slice",
    "contrast",
    "phase",
    "repetition",
    "set",
    "segment",
)
"""Encoding-limit elements of ismrmrd.xsd, in schema order."""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(node: ET.Element | None, *path: str) -> ET.Element | None:
    for name in path:
        if node is None:
            return None
        node = next((c for c in node if _local(c.tag) == name), None)
    return node


def _children(node: ET.Element | None, name: str) -> list[ET.Element]:
    return [] if node is None else [c for c in node if _local(c.tag) == name]


def _text(node: ET.Element | None, *path: str) -> str | None:
    found = _child(node, *path)
    if found is None or found.text is None:
        return None
    return found.text.strip()


def _number(node: ET.Element | None, *path: str) -> float | int | None:
    text = _text(node, *path)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() and "." not in text else value


def _xyz(node: ET.Element | None) -> list[float | int | None] | None:
    if node is None:
        return None
    return [_number(node, axis) for axis in ("x", "y", "z")]


def _space(node: ET.Element | None) -> dict[str, Any] | None:
    if node is None:
        return None
    return {
        "matrix": _xyz(_child(node, "matrixSize")),
        "fov_mm": _xyz(_child(node, "fieldOfView_mm")),
    }


def _limits(node: ET.Element | None) -> dict[str, dict[str, int | float | None]]:
    limits = {}
    for name in LIMIT_NAMES:
        limit = _child(node, name)
        if limit is not None:
            limits[name] = {key: _number(limit, key) for key in ("minimum", "maximum", "center")}
    return limits


def _encoding(node: ET.Element) -> dict[str, Any]:
    parallel = _child(node, "parallelImaging")
    factor = _child(parallel, "accelerationFactor")
    return {
        "encoded_space": _space(_child(node, "encodedSpace")),
        "recon_space": _space(_child(node, "reconSpace")),
        "limits": _limits(_child(node, "encodingLimits")),
        "trajectory": _text(node, "trajectory"),
        "acceleration": None
        if factor is None
        else [_number(factor, "kspace_encoding_step_1"), _number(factor, "kspace_encoding_step_2")],
        "calibration_mode": _text(parallel, "calibrationMode"),
    }


def _sequence(root: ET.Element) -> dict[str, list[float | int | None]]:
    node = _child(root, "sequenceParameters")
    names = {"TR": "TR_ms", "TE": "TE_ms", "TI": "TI_ms", "flipAngle_deg": "flip_angle_deg"}
    result: dict[str, list[float | int | None]] = {}
    for tag, key in names.items():
        values = [_number(c) for c in _children(node, tag)]
        if values:
            result[key] = values
    return result


def summarize_header(xml: str) -> tuple[dict[str, Any], list[str]]:
    """The fields of an ISMRMRD header that ``info`` shows, plus warnings about it.

    Returns
    -------
    summary:
        JSON-ready dict: ``system`` (vendor, model, field_strength_T, receiver_channels,
        h1_resonance_frequency_Hz, protocol_name), ``encodings`` (one dict per ``<encoding>``
        with ``encoded_space`` / ``recon_space`` (``matrix`` [x, y, z], ``fov_mm`` [x, y, z]),
        ``limits`` {name: {minimum, maximum, center}}, ``trajectory``, ``acceleration``
        [e1, e2], ``calibration_mode``) and ``sequence`` (TR_ms, TE_ms, TI_ms,
        flip_angle_deg lists).
    warnings:
        Human-readable problems (unparsable XML, missing encoding or recon space).
    """
    try:
        root = parse_xml(xml)
    except ET.ParseError as exc:
        return {"parse_error": str(exc)}, [f"header XML does not parse: {exc}"]
    system = _child(root, "acquisitionSystemInformation")
    summary: dict[str, Any] = {
        "system": {
            "vendor": _text(system, "systemVendor"),
            "model": _text(system, "systemModel"),
            "field_strength_T": _number(system, "systemFieldStrength_T"),
            "receiver_channels": _number(system, "receiverChannels"),
            "h1_resonance_frequency_Hz": _number(
                root, "experimentalConditions", "H1resonanceFrequency_Hz"
            ),
            "protocol_name": _text(root, "measurementInformation", "protocolName"),
        },
        "encodings": [_encoding(node) for node in _children(root, "encoding")],
        "sequence": _sequence(root),
    }
    warnings = []
    if not summary["encodings"]:
        warnings.append("header has no <encoding> section")
    for number, encoding in enumerate(summary["encodings"]):
        for key, tag in (("encoded_space", "encodedSpace"), ("recon_space", "reconSpace")):
            if encoding[key] is None:
                warnings.append(f"header encoding {number} has no <{tag}>")
        for name, limit in encoding["limits"].items():
            low, high, centre = limit["minimum"], limit["maximum"], limit["center"]
            if None not in (low, high, centre) and not low <= centre <= high:
                warnings.append(
                    f"header encoding {number}: {name} centre {centre} lies outside its "
                    f"limits {low}..{high}"
                )
    return summary, warnings
