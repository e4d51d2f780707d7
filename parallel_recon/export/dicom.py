"""DICOM export (pydicom): one MR Image Storage file per 2D plane.

Layout: ``OUT/<SeriesNumber>_<name>/<InstanceNumber>.dcm``, one folder per DICOM series.  A
DICOM series is one MRD image series, or one part of it when the series has several channels
or complex pixels (:mod:`.pixels`).  Study, Series and SOP Instance UIDs are generated once
per export (the header's studyInstanceUID and frameOfReferenceUID are used when valid), so
files of one export always belong together and two exports never collide.

Numbering: SeriesNumber is the MRD ``image_series_index`` (``index * 100 + part`` for the
parts of a multi-part series; all series are numbered 1, 2, ... in export order instead if
that would repeat a number); InstanceNumber counts the planes of the DICOM series from 1,
volume by volume (volumes as in NIfTI: images that differ only by slice, in first-seen order)
and along the slice normal within a volume, as scanners number them.

Geometry comes from :mod:`.geometry` (first-pixel ImagePositionPatient, LPS); acquisition
counters map to EchoNumbers (contrast + 1) and TemporalPositionIdentifier (repetition + 1),
time stamps (2.5 ms ticks since midnight, the ISMRMRD convention) to AcquisitionTime /
ContentTime, and, for series with cardiac phases (ScanOptions CG), physiology_time_stamp[0]
to TriggerTime; the counters are also listed in ImageComments.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from ..files import pending_folder
from .geometry import ImageGeometry, Plane
from .inputs import TICK_MS, ExportInput, ImageSeries
from .pixels import Part, Scaling, choose_scaling, image_parts, meta_rescale
from .study import PLACEHOLDERS, StudyInfo, dicom_date, dicom_time, study_info

__all__ = ["DicomSeries", "plan_series", "write_dicom"]

_SCANNING_SEQUENCE = {
    "flash": "GR",
    "gre": "GR",
    "ssfp": "GR",
    "truefisp": "GR",
    "spgr": "GR",
    "epi": "EP",
    "se": "SE",
    "spinecho": "SE",
    "tse": "SE",
    "ir": "IR",
}
"""ISMRMRD ``sequence_type`` (lower case) -> DICOM ScanningSequence; others are RM (research)."""

_DS_DIGITS = 10
_RADIANS_AT_MOST = 4.0
"""Phase whose real values stay within this is in radians (else scanner units)."""


@dataclass
class _PlaneSource:
    image: int
    """Index of the image in its MRD series."""
    z: int
    plane: Plane
    values: np.ndarray
    """``[y, x]`` real values of the part."""


@dataclass
class DicomSeries:
    """The planes of one DICOM series, with its number and description."""

    mrd: ImageSeries
    part: str
    letter: str
    number: int = 0
    planes: list[_PlaneSource] = field(default_factory=list)
    geometries: list[ImageGeometry] = field(default_factory=list)

    @property
    def gated(self) -> bool:
        """Cardiac phases (MRD ``phase`` counter > 0) imply ECG gating: then, and only then,
        DICOM allows TriggerTime (physiology_time_stamp[0] in ticks)."""
        return any(int(image.head["phase"]) > 0 for image in self.mrd.images)

    @property
    def label(self) -> str:
        return self.mrd.name + (f"_{self.part}" if self.part else "")


def plan_series(source: ExportInput) -> list[DicomSeries]:
    """Split the input into DICOM series and number them (see the module text)."""
    planned: list[DicomSeries] = []
    for mrd in source.series:
        geometries = [
            ImageGeometry.from_header(image.head, mrd.meta(i), f"{source.source}: {mrd.name} {i}")
            for i, image in enumerate(mrd.images)
        ]
        by_part: dict[str, DicomSeries] = {}
        for members in mrd.volumes():
            volume: dict[str, list[_PlaneSource]] = {}
            for i in members:
                for part in image_parts(mrd.images[i]):
                    by_part.setdefault(part.key, DicomSeries(mrd, part.key, part.letter))
                    volume.setdefault(part.key, []).extend(_planes(i, geometries[i], part))
            for key, planes in volume.items():
                # instances run along the slice normal within each volume, as scanners number
                # them (dcm2niix takes the first two instances' distance as the slice spacing)
                planes.sort(key=lambda p: p.plane.location)
                by_part[key].planes += planes
        parts = list(by_part.values())
        for n, target in enumerate(parts, start=1):
            target.geometries = geometries
            target.number = mrd.index if len(parts) == 1 else mrd.index * 100 + n
        planned += parts
    numbers = [s.number for s in planned]
    if len(set(numbers)) != len(numbers):
        for n, target in enumerate(planned, start=1):
            target.number = n
    return planned


def _planes(image: int, geometry: ImageGeometry, part: Part) -> list[_PlaneSource]:
    return [
        _PlaneSource(image, z, geometry.plane(z), part.data[z]) for z in range(part.data.shape[0])
    ]


def _ds(value: float) -> str:
    """A DICOM DS string (at most 16 characters) for ``value``."""
    for digits in range(_DS_DIGITS + 6, 5, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot write {value!r} as a DICOM decimal string")


def _ds_list(values: Sequence[float] | np.ndarray) -> list[str]:
    return [_ds(float(v) + 0.0) for v in values]


def _time_of_day(ticks: int) -> str:
    """DICOM TM of a time stamp in 2.5 ms ticks since midnight."""
    milliseconds = (int(ticks) * TICK_MS) % 86_400_000
    seconds, ms = divmod(milliseconds, 1000)
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}{minutes:02d}{secs:02d}.{round(ms * 1000):06d}"


def _sequence_code(info: StudyInfo) -> str:
    return _SCANNING_SEQUENCE.get(info.sequence_type.strip().lower(), "RM")


def _study_level(info: StudyInfo, uids: dict[str, str]) -> Dataset:
    """Attributes shared by every file of the export (patient, study, equipment, frame)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = MRImageStorage
    ds.PatientName = info.patient_name or PLACEHOLDERS["patient_name"]
    ds.PatientID = info.patient_id or PLACEHOLDERS["patient_id"]
    ds.PatientBirthDate = dicom_date(info.patient_birth_date)
    ds.PatientSex = info.patient_sex[:1].upper() if info.patient_sex else ""
    for keyword, number in (
        ("PatientWeight", info.number("patient_weight_kg")),
        ("PatientSize", info.number("patient_height_m")),
    ):
        if number is not None:
            setattr(ds, keyword, _ds(number))
    ds.StudyInstanceUID = uids["study"]
    ds.StudyDate = info.acquisition_date
    ds.StudyTime = dicom_time(info.study_time or info.series_time)
    ds.ReferringPhysicianName = info.referring_physician
    ds.StudyID = info.study_id[:16]
    ds.AccessionNumber = info.accession_number[:16]
    if info.study_description:
        ds.StudyDescription = info.study_description[:64]
    ds.Modality = "MR"
    ds.Laterality = ""  # type 2C: the header never says which side of a paired organ
    ds.PatientPosition = info.patient_position[:16]
    if info.body_part:
        ds.BodyPartExamined = info.body_part[:16]
    if info.protocol_name:
        ds.ProtocolName = info.protocol_name[:64]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = info.manufacturer[:64]
    for keyword, value in (
        ("InstitutionName", info.institution),
        ("StationName", info.station[:16]),
        ("ManufacturerModelName", info.model),
        ("DeviceSerialNumber", info.device_serial),
    ):
        if value:
            setattr(ds, keyword, value[:64])
    ds.SoftwareVersions = f"parallel-recon {_software_version()}"
    _sequence_level(ds, info)
    return ds


def _sequence_level(ds: Dataset, info: StudyInfo) -> None:
    """MR Image module attributes that the header gives once for the whole scan."""
    ds.ScanningSequence = _sequence_code(info)
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.RepetitionTime = _ds(info.tr_ms[0]) if info.tr_ms else ""
    ds.EchoTrainLength = ""
    if info.ti_ms:
        ds.InversionTime = _ds(info.ti_ms[0])
    if info.flip_angle_deg:
        ds.FlipAngle = _ds(info.flip_angle_deg[0])
    if info.sequence_name:
        ds.SequenceName = info.sequence_name[:64]
    field_strength, frequency = info.number("field_strength_t"), info.number("h1_frequency_hz")
    if field_strength is not None:
        ds.MagneticFieldStrength = _ds(field_strength)
    if frequency is not None:
        ds.ImagingFrequency = _ds(frequency / 1e6)
        ds.ImagedNucleus = "1H"


def _description(series: DicomSeries, info: StudyInfo) -> str:
    meta = series.mrd.meta(0)
    text = "_".join(meta.get("SeriesDescription", [])) or info.series_description
    text = text or info.protocol_name or series.mrd.name
    extra = meta.get("SeriesDescriptionAdditional", [])
    text = "_".join([text, *extra])
    return (text + (f"_{series.part}" if series.part else ""))[:64]


def _slice_spacing(series: DicomSeries) -> float | None:
    """Distance between neighbouring plane locations when it is one value (else None)."""
    locations = np.unique(np.round([p.plane.location for p in series.planes], 3))
    if len(locations) < 2:
        return series.planes[0].plane.thickness if series.planes else None
    gaps = np.diff(locations)
    return float(gaps.mean()) if np.ptp(gaps) <= 2e-3 else None


def _series_level(base: Dataset, series: DicomSeries, info: StudyInfo, scaling: Scaling) -> Dataset:
    ds = Dataset()
    ds.update(base)
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series.number
    ds.SeriesDescription = _description(series, info)
    if info.series_date or info.study_date:
        ds.SeriesDate = info.acquisition_date
    if info.series_time:
        ds.SeriesTime = dicom_time(info.series_time)
    depth = max(g.matrix[2] for g in series.geometries)
    ds.MRAcquisitionType = "3D" if depth > 1 else "2D"
    spacing = _slice_spacing(series)
    if spacing is not None:
        ds.SpacingBetweenSlices = _ds(spacing)
    repetitions = {int(image.head["repetition"]) for image in series.mrd.images}
    ds.NumberOfTemporalPositions = len(repetitions)
    if series.gated:
        ds.ScanOptions = "CG"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = int(scaling.signed)
    if not scaling.identity:
        ds.RescaleIntercept = _ds(scaling.intercept)
        ds.RescaleSlope = _ds(scaling.slope)
    return ds


def _window(
    series: DicomSeries, values: Sequence[np.ndarray], scaling: Scaling
) -> tuple[float, float]:
    """WindowCenter/Width in real units: -pi..pi for phase in radians (real values within
    +-4, not scanner units); else the images' own (unless the series is a part derived from
    them, such as the magnitude of complex pixels); else the value range."""
    finite = [np.nan_to_num(v.astype(np.float64), nan=0, posinf=0, neginf=0) for v in values]
    low = scaling.real(min(float(v.min()) for v in finite))
    high = scaling.real(max(float(v.max()) for v in finite))
    if series.letter == "P" and max(abs(low), abs(high)) <= _RADIANS_AT_MOST:
        return 0.0, 2 * math.pi
    meta = series.mrd.meta(0)
    if not series.part:
        try:
            return float(meta["WindowCenter"][0]), float(meta["WindowWidth"][0])
        except (KeyError, IndexError, ValueError):
            pass
    return (low + high) / 2, max(high - low, 1.0)


def _phase_along_rows(head: np.void, plane: Plane) -> bool:
    """True when phase encoding runs along the rows (images turned after recon: ISMRMRD keeps
    phase_dir as acquired and says where the rows point in ImageRowDir)."""
    phase = np.asarray(head["phase_dir"], dtype=np.float64)
    return abs(float(phase @ plane.row_dir)) > abs(float(phase @ plane.column_dir))


def _counters_comment(head: np.void, z: int, depth: int) -> str:
    text = ", ".join(
        f"{name} {int(head[name])}"
        for name in ("slice", "contrast", "phase", "repetition", "set", "average")
    )
    return text + (f", plane {z + 1} of {depth}" if depth > 1 else "")


def _image_level(
    ds: Dataset,
    series: DicomSeries,
    source: _PlaneSource,
    info: StudyInfo,
) -> None:
    image = series.mrd.images[source.image]
    head = image.head
    meta = series.mrd.meta(source.image)
    plane = source.plane
    ds.ImageType = ["ORIGINAL", "PRIMARY", series.letter, *meta.get("ImageType", [])]
    ds.ImagePositionPatient = _ds_list(plane.position)
    ds.ImageOrientationPatient = _ds_list([*plane.row_dir, *plane.column_dir])
    ds.PixelSpacing = _ds_list([plane.spacing[1], plane.spacing[0]])
    ds.SliceThickness = _ds(plane.thickness)
    ds.SliceLocation = _ds(plane.location)
    rows, columns = plane.shape
    ds.Rows, ds.Columns = rows, columns
    phase_along_rows = _phase_along_rows(head, plane)
    ds.InPlanePhaseEncodingDirection = "ROW" if phase_along_rows else "COL"
    # frequency rows, frequency columns, phase rows, phase columns (recon-space sizes)
    ds.AcquisitionMatrix = [rows, 0, 0, columns] if phase_along_rows else [0, columns, rows, 0]
    contrast = int(head["contrast"])
    ds.EchoNumbers = contrast + 1
    echo = meta.get("EchoTime")
    te = info.te_ms[contrast] if contrast < len(info.te_ms) else None
    ds.EchoTime = _ds(float(echo[0])) if echo else (_ds(te) if te is not None else "")
    inversion = meta.get("InversionTime")
    if inversion:
        ds.InversionTime = _ds(float(inversion[0]))
    ds.TemporalPositionIdentifier = int(head["repetition"]) + 1
    stamp = int(head["acquisition_time_stamp"])
    if stamp:
        ds.AcquisitionTime = _time_of_day(stamp)
        ds.ContentTime = ds.AcquisitionTime
    date = info.acquisition_date
    if date:
        ds.AcquisitionDate = date
        ds.ContentDate = date
    if series.gated:
        ds.TriggerTime = _ds(int(head["physiology_time_stamp"][0]) * TICK_MS)
    depth = int(head["matrix_size"][2])
    comments = [_counters_comment(head, source.z, depth)]
    if meta.get("ImageComments"):
        comments.append("_".join(meta["ImageComments"]))  # ISMRMRD: values joined by "_"
    ds.ImageComments = "; ".join(comments)[:10240]


def _file_meta(sop_uid: UID) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _folder_name(series: DicomSeries) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in series.label)
    return f"{series.number:03d}_{safe}"


def write_dicom(
    source: ExportInput,
    path: str | Path,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write every plane of every series as an MR Image Storage file under directory ``path``.

    ``path`` must not exist or be empty; the files are written to a temporary sibling
    directory that is renamed to ``path`` when everything is written.  Returns the files.
    """
    info = study_info(source.header_xml)
    uids = {
        "study": info.valid_uid("study_uid") or generate_uid(),
        "frame": info.valid_uid("frame_of_reference_uid") or generate_uid(),
    }
    base = _study_level(info, uids)
    planned = plan_series(source)
    written: list[Path] = []
    with pending_folder(Path(path)) as staging:
        for series in planned:
            written += _write_series(series, info, base, staging, Path(path), progress)
    return written


def _write_series(
    series: DicomSeries,
    info: StudyInfo,
    base: Dataset,
    staging: Path,
    final: Path,
    progress: Callable[[int], None] | None,
) -> list[Path]:
    values = [p.values for p in series.planes]
    slope, intercept = meta_rescale(series.mrd.meta(0))
    scaling = choose_scaling(values, slope, intercept)
    level = _series_level(base, series, info, scaling)
    level.WindowCenter, level.WindowWidth = (_ds(v) for v in _window(series, values, scaling))
    folder = staging / _folder_name(series)
    folder.mkdir()
    files = []
    for number, plane in enumerate(series.planes, start=1):
        ds = Dataset()
        ds.update(level)
        sop_uid = generate_uid()
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = number
        _image_level(ds, series, plane, info)
        ds.PixelData = scaling.encode(plane.values).tobytes()
        ds.file_meta = _file_meta(sop_uid)
        name = f"{number:05d}.dcm"
        ds.save_as(folder / name, enforce_file_format=True)
        files.append(final / folder.name / name)
        if progress is not None:
            progress(1)
    return files


@functools.cache
def _software_version() -> str:
    """The installed distribution's version, for SoftwareVersions (looked up once)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("parallel-recon")
    except PackageNotFoundError:
        return "(not installed)"
