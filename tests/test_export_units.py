"""The export's small parts: geometry rules, pixel storage, header facts and output names.

Expected values are worked out by hand from the conventions (ISMRMRD image centre, DICOM
first-pixel position, dcm2niix voxel order), not taken from the code under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from parallel_recon.errors import GeometryError, InputFileError
from parallel_recon.export.geometry import (
    ImageGeometry,
    nifti_affine,
    nifti_voxels,
    stack_planes,
)
from parallel_recon.export.output import numbered_paths
from parallel_recon.export.pixels import choose_scaling, image_parts
from parallel_recon.export.study import dicom_date, dicom_time, study_info
from parallel_recon.protocol import Image, ImageType, new_image_head


def _head(
    matrix: tuple[int, int, int] = (4, 3, 1),
    fov: tuple[float, float, float] = (8.0, 9.0, 5.0),
    position: tuple[float, float, float] = (10.0, 20.0, 30.0),
    read: tuple[float, float, float] = (1.0, 0.0, 0.0),
    phase: tuple[float, float, float] = (0.0, 1.0, 0.0),
    slice_dir: tuple[float, float, float] = (0.0, 0.0, 1.0),
) -> np.void:
    head = new_image_head()
    head["matrix_size"] = matrix
    head["field_of_view"] = fov
    head["position"] = position
    head["read_dir"], head["phase_dir"], head["slice_dir"] = read, phase, slice_dir
    return head


def test_first_pixel_is_half_a_pixel_inside_the_field_of_view() -> None:
    # 4 x 3 pixels of 2 x 3 mm centred on (10, 20, 30): the FOV spans x 6..14, y 15.5..24.5,
    # so the first pixel's centre is at (7, 17), the last at (13, 23)
    geometry = ImageGeometry.from_header(_head())
    plane = geometry.plane(0)
    np.testing.assert_allclose(plane.position, [7.0, 17.0, 30.0])
    np.testing.assert_allclose(plane.lps(2, 3), [13.0, 23.0, 30.0])
    assert plane.spacing == (2.0, 3.0) and plane.shape == (3, 4) and plane.thickness == 5.0


def test_3d_planes_are_centred_along_the_slice_direction() -> None:
    geometry = ImageGeometry.from_header(_head(matrix=(4, 3, 4), fov=(8.0, 9.0, 8.0)))
    # 4 planes of 2 mm centred on z = 30: 27, 29, 31, 33
    assert [float(geometry.plane(z).position[2]) for z in range(4)] == [27.0, 29.0, 31.0, 33.0]
    assert geometry.plane(0).thickness == 2.0


def test_meta_directions_override_the_header() -> None:
    # an image flipped after recon: rows now run along -x (ISMRMRD ImageRowDir)
    meta = {"ImageRowDir": ["-1", "0", "0"], "ImageColumnDir": ["0", "1", "0"]}
    plane = ImageGeometry.from_header(_head(), meta).plane(0)
    np.testing.assert_allclose(plane.position, [13.0, 17.0, 30.0])
    np.testing.assert_allclose(plane.normal, [0.0, 0.0, -1.0])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"read": (0.0, 0.0, 0.0)}, "expected a unit direction cosine"),
        ({"phase": (1.0, 0.0, 0.0)}, "are not orthogonal"),
        ({"fov": (0.0, 9.0, 5.0)}, "expected positive sizes"),
        ({"position": (np.nan, 0.0, 0.0)}, "is not finite"),
    ],
)
def test_unplaceable_images_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(GeometryError, match=message):
        ImageGeometry.from_header(_head(**changes), where="series image_1 image 0")


def test_2d_image_without_slice_direction_uses_the_normal() -> None:
    geometry = ImageGeometry.from_header(_head(slice_dir=(0.0, 0.0, 0.0)))
    np.testing.assert_allclose(geometry.slice_dir, [0.0, 0.0, 1.0])


def _slices(positions: list[float]) -> list:
    return [ImageGeometry.from_header(_head(position=(10.0, 20.0, z))).plane(0) for z in positions]


def test_stacking_sorts_along_the_normal_and_flips_rows_like_dcm2niix() -> None:
    volume = stack_planes(_slices([35.0, 30.0, 40.0]))
    assert volume.order == (1, 0, 2)
    affine = nifti_affine(volume)
    # voxel (i, j, k) = column i, row 2 - j, slice k; RAS = (-L, -P, S)
    for i, j, k in [(0, 0, 0), (3, 2, 2), (1, 0, 1)]:
        row = 2 - j
        lps = np.array([7.0 + 2 * i, 17.0 + 3 * row, 30.0 + 5 * k])
        np.testing.assert_allclose(affine @ [i, j, k, 1], [-lps[0], -lps[1], lps[2], 1])
    planes = np.arange(3 * 3 * 4).reshape(3, 3, 4)  # [k, rows, columns]
    voxels = nifti_voxels(planes)
    assert voxels.shape == (4, 3, 3)
    assert voxels[1, 0, 2] == planes[2, 2, 1]


@pytest.mark.parametrize(
    ("positions", "message"), [([30.0, 35.0, 45.0], "not evenly spaced"), ([30.0, 30.0], "gaps")]
)
def test_irregular_stacks_are_refused(positions: list[float], message: str) -> None:
    with pytest.raises(GeometryError, match=message):
        stack_planes(_slices(positions), "series image_1 volume 0")


def test_single_plane_is_one_slice_thick() -> None:
    volume = stack_planes(_slices([30.0]))
    np.testing.assert_allclose(volume.lps_affine[:3, 2], [0.0, 0.0, 5.0])


def _image(data: np.ndarray, image_type: ImageType = ImageType.MAGNITUDE) -> Image:
    head = _head(matrix=(data.shape[-1], data.shape[-2], data.shape[-3]))
    head["image_type"] = int(image_type)
    return Image.from_array(data, "", head)


def test_pixel_storage_rules() -> None:
    unsigned = choose_scaling([np.array([[0, 65535]], np.uint16)])
    assert (unsigned.dtype, unsigned.quantised, unsigned.identity) == (np.dtype("<u2"), False, True)
    signed = choose_scaling([np.array([[1, 2]], np.int16)])
    assert signed.dtype == np.dtype("<i2") and not signed.quantised  # int16 stays signed
    fits = choose_scaling([np.array([[-5, 70]], np.int32)])
    assert fits.dtype == np.dtype("<i2") and not fits.quantised
    wide = choose_scaling([np.array([[0, 131070]], np.int32)])
    assert wide.dtype == np.dtype("<u2") and wide.quantised and wide.slope == 2.0
    floats = np.array([[0.0, 0.25, 1.0, np.nan]], np.float32)
    magnitude = choose_scaling([floats])
    stored = magnitude.encode(floats)
    assert stored.tolist() == [[0, 16384, 65535, 0]]  # 0 stays 0, NaN stored as 0
    assert np.abs(stored[0, :3] * magnitude.slope - floats[0, :3]).max() <= magnitude.slope / 2
    phase = choose_scaling([np.array([[-np.pi, 1.0]])])
    assert phase.dtype == np.dtype("<i2") and phase.encode(np.array([[-np.pi]])) == -32767
    folded = choose_scaling([np.array([[0, 100]], np.uint16)], meta_slope=0.5, meta_intercept=-3)
    assert (folded.slope, folded.intercept, folded.quantised) == (0.5, -3.0, False)


def test_complex_and_multichannel_parts() -> None:
    data = (np.arange(2 * 1 * 2 * 2) + 1j).reshape(2, 1, 2, 2).astype(np.complex64)
    parts = image_parts(_image(data, ImageType.COMPLEX))
    assert [(p.key, p.letter) for p in parts] == [
        ("ch1_M", "M"),
        ("ch1_P", "P"),
        ("ch2_M", "M"),
        ("ch2_P", "P"),
    ]
    np.testing.assert_allclose(parts[3].data, np.angle(data[1]))
    (single,) = image_parts(_image(np.ones((1, 1, 2, 2), np.float32), ImageType.PHASE))
    assert (single.key, single.letter) == ("", "P")


def test_study_facts_from_the_header() -> None:
    xml = (
        '<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
        "<subjectInformation><patientName>Doe^Jane</patientName>"
        "<patientBirthdate>1970-03-04</patientBirthdate><patientGender>F</patientGender>"
        "</subjectInformation>"
        "<studyInformation><studyDate>2024-05-01</studyDate><studyTime>13:45:10.5</studyTime>"
        "<studyInstanceUID>1.2.3.4</studyInstanceUID></studyInformation>"
        "<measurementInformation><frameOfReferenceUID>not a uid</frameOfReferenceUID>"
        "</measurementInformation>"
        "<sequenceParameters><TR>7.5</TR><TE>2</TE><TE>4.5</TE></sequenceParameters>"
        "</ismrmrdHeader>"
    )
    info = study_info(xml)
    assert (info.patient_name, info.patient_sex, info.acquisition_date) == (
        "Doe^Jane",
        "F",
        "20240501",
    )
    assert dicom_date(info.patient_birth_date) == "19700304"
    assert dicom_time(info.study_time) == "134510.500000"
    assert (
        info.valid_uid("study_uid") == "1.2.3.4" and info.valid_uid("frame_of_reference_uid") == ""
    )
    assert info.tr_ms == (7.5,) and info.te_ms == (2.0, 4.5)
    assert study_info(None).patient_name == "" and study_info("<broken").study_date == ""


def test_output_names() -> None:
    assert numbered_paths(Path("d/brain.nii.gz"), ["image_1"], (".nii", ".nii.gz")) == [
        Path("d/brain.nii.gz")
    ]
    assert numbered_paths(Path("brain.NII.GZ"), ["a", "b"], (".nii", ".nii.gz")) == [
        Path("brain_a.NII.GZ"),
        Path("brain_b.NII.GZ"),
    ]
    with pytest.raises(InputFileError, match=r"expected a name ending in \.npz"):
        numbered_paths(Path("brain.nii"), ["a"], (".npz",))


def test_turned_image_and_odd_header_values_in_dicom(tmp_path: Path) -> None:
    """Rows along the phase direction (ImageRowDir) give InPlanePhaseEncodingDirection ROW;
    a header number that is not a number is left out instead of failing the export."""
    import pydicom

    from parallel_recon.export import export
    from parallel_recon.protocol import Header

    meta = (
        "<ismrmrdMeta><meta><name>ImageRowDir</name><value>0</value><value>1</value>"
        "<value>0</value></meta><meta><name>ImageColumnDir</name><value>1</value>"
        "<value>0</value><value>0</value></meta></ismrmrdMeta>"
    )
    head = _head()
    head["image_type"] = int(ImageType.MAGNITUDE)
    image = Image.from_array(np.arange(12, dtype=np.uint16).reshape(1, 1, 3, 4), meta, head)
    xml = (
        "<ismrmrdHeader><subjectInformation><patientWeight_kg>heavy</patientWeight_kg>"
        "</subjectInformation></ismrmrdHeader>"
    )
    (path,) = export([Header(xml), image], tmp_path / "d", to="dicom")
    ds = pydicom.dcmread(path)
    assert ds.InPlanePhaseEncodingDirection == "ROW"
    assert [float(v) for v in ds.ImageOrientationPatient] == [0, 1, 0, 1, 0, 0]
    assert "PatientWeight" not in ds
    # x (4 columns, 2 mm) now runs along +y and y (3 rows, 3 mm) along +x: the first pixel is
    # 1.5 columns and 1 row from the centre (10, 20, 30)
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], [7.0, 17.0, 30.0])
    assert [float(v) for v in ds.PixelSpacing] == [3.0, 2.0]
