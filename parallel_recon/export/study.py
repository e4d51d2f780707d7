"""Patient, study, equipment and sequence facts from the ISMRMRD XML header, for DICOM.

The header is read leniently (namespace-agnostic ElementTree, every field optional): an export
must not fail because a scanner left out a field, and a missing field gets a documented
placeholder instead.  Dates and times are converted from XML schema form (``2024-05-01``,
``13:45:10.5``) to DICOM form (``20240501``, ``134510.500000``).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from ..protocol.text import parse_xml

__all__ = ["PLACEHOLDERS", "StudyInfo", "dicom_date", "dicom_time", "study_info"]

PLACEHOLDERS: dict[str, str] = {
    "patient_name": "UNKNOWN^",
    "patient_id": "UNKNOWN",
}
"""Values used when the header does not say; every other missing field stays empty (DICOM
type 2) or absent (type 3), and missing UIDs are generated once per export."""

_TEXT_FIELDS: dict[str, str] = {
    "patient_name": "subjectInformation/patientName",
    "patient_id": "subjectInformation/patientID",
    "patient_birth_date": "subjectInformation/patientBirthdate",
    "patient_sex": "subjectInformation/patientGender",
    "patient_weight_kg": "subjectInformation/patientWeight_kg",
    "patient_height_m": "subjectInformation/patientHeight_m",
    "study_date": "studyInformation/studyDate",
    "study_time": "studyInformation/studyTime",
    "study_id": "studyInformation/studyID",
    "accession_number": "studyInformation/accessionNumber",
    "referring_physician": "studyInformation/referringPhysicianName",
    "study_description": "studyInformation/studyDescription",
    "study_uid": "studyInformation/studyInstanceUID",
    "body_part": "studyInformation/bodyPartExamined",
    "series_date": "measurementInformation/seriesDate",
    "series_time": "measurementInformation/seriesTime",
    "patient_position": "measurementInformation/patientPosition",
    "protocol_name": "measurementInformation/protocolName",
    "sequence_name": "measurementInformation/sequenceName",
    "series_description": "measurementInformation/seriesDescription",
    "frame_of_reference_uid": "measurementInformation/frameOfReferenceUID",
    "manufacturer": "acquisitionSystemInformation/systemVendor",
    "model": "acquisitionSystemInformation/systemModel",
    "field_strength_t": "acquisitionSystemInformation/systemFieldStrength_T",
    "institution": "acquisitionSystemInformation/institutionName",
    "station": "acquisitionSystemInformation/stationName",
    "device_serial": "acquisitionSystemInformation/deviceSerialNumber",
    "h1_frequency_hz": "experimentalConditions/H1resonanceFrequency_Hz",
    "sequence_type": "sequenceParameters/sequence_type",
}
"""StudyInfo field -> path below ``ismrmrdHeader`` (namespaces ignored)."""

_LIST_FIELDS: dict[str, str] = {
    "tr_ms": "sequenceParameters/TR",
    "te_ms": "sequenceParameters/TE",
    "ti_ms": "sequenceParameters/TI",
    "flip_angle_deg": "sequenceParameters/flipAngle_deg",
}

_UID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


def _floats(texts: list[str]) -> tuple[float, ...]:
    values = []
    for text in texts:
        try:
            values.append(float(text))
        except ValueError:
            continue
    return tuple(values)


@dataclass(frozen=True)
class StudyInfo:
    """What the XML header says about patient, study, series, equipment and sequence.

    Text fields are ``""`` when absent; numbers are kept as the header's text (DICOM DS/IS
    take text) and sequence parameters as float tuples in ms / degrees.
    """

    patient_name: str = ""
    patient_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    patient_weight_kg: str = ""
    patient_height_m: str = ""
    study_date: str = ""
    study_time: str = ""
    study_id: str = ""
    accession_number: str = ""
    referring_physician: str = ""
    study_description: str = ""
    study_uid: str = ""
    body_part: str = ""
    series_date: str = ""
    series_time: str = ""
    patient_position: str = ""
    protocol_name: str = ""
    sequence_name: str = ""
    series_description: str = ""
    frame_of_reference_uid: str = ""
    manufacturer: str = ""
    model: str = ""
    field_strength_t: str = ""
    institution: str = ""
    station: str = ""
    device_serial: str = ""
    h1_frequency_hz: str = ""
    sequence_type: str = ""
    tr_ms: tuple[float, ...] = field(default=())
    te_ms: tuple[float, ...] = field(default=())
    ti_ms: tuple[float, ...] = field(default=())
    flip_angle_deg: tuple[float, ...] = field(default=())

    def valid_uid(self, name: str) -> str:
        """The UID field ``name`` when it is a valid DICOM UID, else ``""`` (to generate one)."""
        value: str = getattr(self, name)
        return value if len(value) <= 64 and _UID.match(value) else ""

    def number(self, name: str) -> float | None:
        """Text field ``name`` as a finite number, or None when absent or not a number."""
        try:
            value = float(getattr(self, name))
        except ValueError:
            return None
        return value if math.isfinite(value) else None

    @property
    def acquisition_date(self) -> str:
        """DICOM date of the scan: the study date, else the series date, else ``""``."""
        return dicom_date(self.study_date or self.series_date)


def study_info(header_xml: str | None) -> StudyInfo:
    """Parse what the export needs from the XML header (None or unparsable: all empty)."""
    if not header_xml or not header_xml.strip():
        return StudyInfo()
    try:
        root = parse_xml(header_xml)
    except ET.ParseError:
        return StudyInfo()
    values: dict[str, Any] = {
        name: (root.findtext(path) or "").strip() for name, path in _TEXT_FIELDS.items()
    }
    for name, path in _LIST_FIELDS.items():
        values[name] = _floats([(node.text or "").strip() for node in root.findall(path)])
    return StudyInfo(**values)


def dicom_date(text: str) -> str:
    """``YYYY-MM-DD`` (xs:date) -> ``YYYYMMDD``; anything unparsable -> ``""``."""
    match = re.match(r"^(\d{4})-?(\d{2})-?(\d{2})", text.strip())
    return "".join(match.groups()) if match else ""


def dicom_time(text: str) -> str:
    """``HH:MM:SS[.f]`` (xs:time) -> ``HHMMSS.ffffff``; anything unparsable -> ``""``."""
    match = re.match(r"^(\d{2}):?(\d{2}):?(\d{2})(\.\d+)?", text.strip())
    if not match:
        return ""
    hours, minutes, seconds, fraction = match.groups()
    digits = ((fraction or ".")[1:] + "000000")[:6]
    return f"{hours}{minutes}{seconds}.{digits}"
