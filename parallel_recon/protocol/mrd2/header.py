"""The ISMRMRD XML header (MRD v1) <-> the MRD v2 ``Header`` model.

Both describe the same things with the same structure (the v2 model was made from the
ISMRMRD schema), so one walk over the v2 schema's ``Header`` record maps either way; only
names (``fieldOfView_mm`` / ``fieldOfViewMm``) and enum spellings (``HFS`` / ``hFS``)
differ, and those are tables here.

:func:`header_from_xml` reads everything the XML says; :func:`as_converted` then applies
what the MRD project's ``ismrmrd_to_mrd.py`` leaves out (some sections, and optional values
that are empty or zero), so that converted streams have exactly that script's bytes.
"""

from __future__ import annotations

import datetime
import math
import re
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

from ...errors import HeaderError
from ..text import parse_xml
from .schema import EnumType, OptionalType, Primitive, RecordType, Type, VectorType, named

__all__ = ["as_converted", "header_from_xml", "header_to_xml"]

_NAMESPACE = "http://www.ismrm.org/ISMRMRD"

_XML_NAMES = {
    "patientWeightKg": "patientWeight_kg",
    "patientHeightM": "patientHeight_m",
    "systemFieldStrengthT": "systemFieldStrength_T",
    "h1resonanceFrequencyHz": "H1resonanceFrequency_Hz",
    "fieldOfViewMm": "fieldOfView_mm",
    "kspaceEncodingStep0": "kspace_encoding_step_0",
    "kspaceEncodingStep1": "kspace_encoding_step_1",
    "kspaceEncodingStep2": "kspace_encoding_step_2",
    **{f"user{i}": f"user_{i}" for i in range(8)},
    "tR": "TR",
    "tE": "TE",
    "tI": "TI",
    "flipAngleDeg": "flipAngle_deg",
    "sequenceType": "sequence_type",
    "echoSpacing": "echo_spacing",
    "multibandFactor": "multiband_factor",
    "calibrationEncoding": "calibration_encoding",
}
"""v2 field name -> ISMRMRD XML element name, where they differ."""


def _enum_spelling(kind: str, symbol: str) -> str:
    """How the ISMRMRD XML spells a v2 enum symbol."""
    if kind in ("PatientPosition", "PatientGender"):
        return symbol.upper()
    if kind == "DiffusionDimension":
        return re.sub(r"user(\d)", r"user_\1", symbol)
    return symbol


_CONVERTER_LEAVES_OUT = frozenset(
    {
        "measurementInformation.relativeTablePosition",
        "measurementInformation.sequenceName",
        "measurementInformation.measurementDependency",
        *(f"encoding.encodingLimits.user{i}" for i in range(8)),
        "encoding.trajectoryDescription.userParameterLong",
        "encoding.trajectoryDescription.userParameterDouble",
        "encoding.trajectoryDescription.userParameterString",
        "encoding.trajectoryDescription.comment",
        "encoding.parallelImaging.multiband",
        "sequenceParameters.diffusionDimension",
        "sequenceParameters.diffusion",
        "sequenceParameters.diffusionScheme",
        "waveformInformation",
    }
)
"""Header paths ``ismrmrd_to_mrd.py`` does not copy."""

_CONVERTER_NEEDS_TRUTH = frozenset(
    {
        "version",
        *(
            f"subjectInformation.{name}"
            for name in ("patientName", "patientWeightKg", "patientHeightM", "patientID")
        ),
        "subjectInformation.patientGender",
        *(
            f"studyInformation.{name}"
            for name in (
                "studyID",
                "accessionNumber",
                "referringPhysicianName",
                "studyDescription",
                "studyInstanceUID",
                "bodyPartExamined",
            )
        ),
        *(
            f"measurementInformation.{name}"
            for name in (
                "measurementID",
                "initialSeriesNumber",
                "protocolName",
                "seriesDescription",
                "seriesInstanceUIDRoot",
                "frameOfReferenceUID",
            )
        ),
        *(
            f"acquisitionSystemInformation.{name}"
            for name in (
                "systemVendor",
                "systemModel",
                "systemFieldStrengthT",
                "relativeReceiverNoiseBandwidth",
                "receiverChannels",
                "institutionName",
                "stationName",
                "deviceID",
                "deviceSerialNumber",
            )
        ),
        "encoding.echoTrainLength",
        "sequenceParameters.sequenceType",
    }
)
"""Optional values ``ismrmrd_to_mrd.py`` copies only when they are not empty or zero."""


# ------------------------------------------------------------ XML -> model
def default_value(kind: Type) -> Any:
    """What a field holds when nothing sets it (as mrd-python's constructors do)."""
    if isinstance(kind, OptionalType):
        return None
    if isinstance(kind, VectorType):
        return []
    if isinstance(kind, RecordType):
        return {name: default_value(item) for name, item in kind.fields}
    if isinstance(kind, EnumType):
        return kind.values[0][1]
    assert isinstance(kind, Primitive)
    return {"string": "", "float32": 0.0, "float64": 0.0}.get(kind.name, 0)


_DATE = re.compile(r"\s*(-?\d{4,})-(\d{2})-(\d{2})")
_TIME = re.compile(r"\s*(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?")
_EPOCH = datetime.date(1970, 1, 1)


def _parse_float(text: str) -> float:
    special = {"INF": math.inf, "-INF": -math.inf, "NaN": math.nan}
    stripped = text.strip()
    return special[stripped] if stripped in special else float(stripped)


def _parse_primitive(name: str, text: str) -> Any:
    if name == "string":
        return text
    if name in ("float32", "float64"):
        value = _parse_float(text)
        return float(np.float32(value)) if name == "float32" else value
    if name == "date":
        match = _DATE.match(text)
        if match is None:
            raise ValueError(f"expected a date YYYY-MM-DD, found {text!r}")
        day = datetime.date(*(int(part) for part in match.groups()))
        return (day - _EPOCH).days
    if name == "time":
        match = _TIME.match(text)
        if match is None:
            raise ValueError(f"expected a time HH:MM:SS, found {text!r}")
        hours, minutes, seconds, fraction = match.groups()
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        return ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 10**9 + micro * 1000
    return int(text.strip())


class _Reader:
    """One XML header read into the v2 model; ``left_out`` lists what had no place,
    ``filled`` what the model requires and the XML lacks (given its default)."""

    def __init__(self) -> None:
        self.left_out: list[str] = []
        self.filled: list[str] = []

    def record(self, node: ET.Element, kind: RecordType, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        known = set()
        for name, item in kind.fields:
            tag = _XML_NAMES.get(name, name)
            known.add(tag)
            where = f"{path}.{name}" if path else name
            children = node.findall(tag)
            if isinstance(item, VectorType):
                values = (self.value(child, item.item, where) for child in children)
                out[name] = [value for value in values if value is not None]
                continue
            inner = item.item if isinstance(item, OptionalType) else item
            value = self.value(children[0], inner, where) if children else None
            if value is None:
                value = default_value(item)
                if not isinstance(item, OptionalType):
                    self.filled.append(where)
            out[name] = value
        for child in node:
            if isinstance(child.tag, str) and child.tag not in known:
                self.left_out.append(f"{path}.{child.tag}" if path else child.tag)
        return out

    def value(self, node: ET.Element, kind: Type, path: str) -> Any:
        """The value of ``node``; None (recorded in ``left_out``) when it cannot be read."""
        if isinstance(kind, RecordType):
            return self.record(node, kind, path)
        text = node.text or ""
        if isinstance(kind, EnumType):
            for symbol, number in kind.values:
                if _enum_spelling(kind.name, symbol) == text.strip():
                    return number
            self.left_out.append(f"{path} ({text.strip()!r} is not a {kind.name})")
            return None
        assert isinstance(kind, Primitive)
        try:
            return _parse_primitive(kind.name, text)
        except ValueError:
            self.left_out.append(f"{path} ({text.strip()!r} is not a {kind.name})")
            return None


def header_from_xml(xml: str) -> tuple[dict[str, Any], list[str], list[str]]:
    """The v2 ``Header`` model of an ISMRMRD XML header, the elements left out (no place
    in the model, or unreadable) and the fields the model requires but the XML lacks.

    Raises
    ------
    HeaderError
        When the text is not XML or its root is not ``ismrmrdHeader``.
    """
    try:
        root = parse_xml(xml)
    except ET.ParseError as exc:
        raise HeaderError(
            f"expected ISMRMRD header XML, found text that does not parse: {exc}"
        ) from None
    if root.tag != "ismrmrdHeader":
        raise HeaderError(f"expected an <ismrmrdHeader> XML header, found <{root.tag}>")
    header = named("Header")
    assert isinstance(header, RecordType)
    reader = _Reader()
    return reader.record(root, header, ""), reader.left_out, reader.filled


def _converted(value: Any, kind: Type, path: str, left_out: list[str]) -> Any:
    if path in _CONVERTER_LEAVES_OUT:
        if value != default_value(kind) and value is not None:
            left_out.append(path)
        return default_value(kind)
    if path in _CONVERTER_NEEDS_TRUTH and value is not None and not value:
        left_out.append(f"{path} (empty or zero)")
        return None
    inner = kind.item if isinstance(kind, (OptionalType, VectorType)) else kind
    if not isinstance(inner, RecordType) or value is None:
        return value
    if isinstance(kind, VectorType):
        return [_converted(item, inner, path, left_out) for item in value]
    return {
        name: _converted(value[name], item, f"{path}.{name}" if path else name, left_out)
        for name, item in inner.fields
    }


def as_converted(model: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``model`` as the MRD project's converter would write it, and what that leaves out."""
    left_out: list[str] = []
    return _converted(model, named("Header"), "", left_out), left_out


# ------------------------------------------------------------ model -> XML
def _format(kind: Type, value: Any) -> str:
    if isinstance(kind, EnumType):
        for symbol, code in kind.values:
            if code == value:
                return _enum_spelling(kind.name, symbol)
        return str(value)
    assert isinstance(kind, Primitive)
    name = kind.name
    if name in ("float32", "float64"):
        number = float(value)
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "INF" if number > 0 else "-INF"
        text = str(np.float32(number)) if name == "float32" else repr(number)
        return text[:-2] if text.endswith(".0") else text
    if name == "date":
        return (_EPOCH + datetime.timedelta(days=int(value))).isoformat()
    if name == "time":
        seconds, nanos = divmod(int(value), 10**9)
        minutes, second = divmod(seconds, 60)
        hour, minute = divmod(minutes, 60)
        text = f"{hour:02d}:{minute:02d}:{second:02d}"
        return text + f".{nanos // 1000:06d}" if nanos // 1000 else text
    return str(value)


def _append(parent: ET.Element, name: str, kind: Type, value: Any) -> None:
    if isinstance(kind, OptionalType):
        if value is not None:
            _append(parent, name, kind.item, value)
        return
    if isinstance(kind, VectorType):
        for item in value:
            _append(parent, name, kind.item, item)
        return
    node = ET.SubElement(parent, _XML_NAMES.get(name, name))
    if isinstance(kind, RecordType):
        for field, item in kind.fields:
            _append(node, field, item, value[field])
    else:
        node.text = _format(kind, value)


def header_to_xml(model: dict[str, Any]) -> str:
    """ISMRMRD XML text of a v2 ``Header`` model (elements in the schema's order)."""
    root = ET.Element("ismrmrdHeader", {"xmlns": _NAMESPACE})
    header = named("Header")
    assert isinstance(header, RecordType)
    for name, item in header.fields:
        _append(root, name, item, model[name])
    ET.indent(root, space="\t")
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
