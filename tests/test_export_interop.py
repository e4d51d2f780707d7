"""Exported geometry and pixels, checked by the real consumers: dcm2niix, pydicom, dciodvfy,
nibabel and ismrmrd-python.

Oblique, off-centre 2D multi-slice and 3D phantoms with a marker voxel are reconstructed by
``mrd_stream_recon`` and exported by ``parallel-recon export`` to all three formats.  Then:

1. dcm2niix converts our DICOM series; its affine equals our NIfTI's within 1e-3 mm and its
   voxels are our DICOM's stored integers, scaled by our RescaleSlope (so they equal our
   float NIfTI within half a quantisation step).
2. pydicom reads every file; dciodvfy reports no error.
3. The marker voxel's world coordinate from the MRD header, the DICOM attributes, the NIfTI
   affine and the .npz affines agree within 0.01 mm, and with the phantom's known position.

World coordinates come from :mod:`export_support`, written from the standards, never from the
exporter's geometry module.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import ismrmrd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import run_cli
from export_support import (
    dciodvfy,
    dcm2niix,
    dicom_files,
    dicom_world,
    mrd_world,
    nifti_world,
    same_voxels,
)
from reference_recon import read_stream

from parallel_recon.export import export
from parallel_recon.phantom import PhantomSpec, marker_position
from parallel_recon.protocol import Header, Image, ImageType, new_image_head

OFF_CENTRE = (12.5, -20.25, 31.0)
CASES = {
    "oblique-2d-multislice": (
        ["-m", "32", "-c", "2", "-s", "4", "--marker", "20,-30,35"],
        {"matrix": 32, "slices": 4, "marker": (20.0, -30.0, 35.0)},
    ),
    "oblique-3d": (
        ["-m", "24", "-c", "2", "-p", "8", "--marker", "20,-30,33"],
        {"matrix": 24, "partitions": 8, "marker": (20.0, -30.0, 33.0)},
    ),
}
GEOMETRY = ["--orientation", "oblique", "--position", ",".join(str(v) for v in OFF_CENTRE)]


@dataclass
class Exported:
    spec: PhantomSpec
    images: list[ismrmrd.Image]
    dicom: Path
    nifti: Path
    npz: Path
    work: Path


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    args, fields = CASES[request.param]
    work = tmp_path_factory.mktemp(request.param)
    raw = run_cli("mrd_phantom", *args, *GEOMETRY, "-o", "-").stdout
    stream = run_cli("mrd_stream_recon", "--workers", "1", input=raw).stdout
    (work / "images.bin").write_bytes(stream)
    _, messages = read_stream(stream)
    images = [m for m in messages if isinstance(m, ismrmrd.Image)]
    source = str(work / "images.bin")
    run_cli("parallel-recon", "export", source, "--to", "dicom", "-o", str(work / "dicom"))
    run_cli("parallel-recon", "export", source, "--to", "nifti", "-o", str(work / "ours.nii.gz"))
    run_cli("parallel-recon", "export", source, "--to", "npy", "-o", str(work / "ours.npz"))
    spec = PhantomSpec(
        coils=2,
        orientation="oblique",
        position=OFF_CENTRE,
        **fields,  # type: ignore[arg-type]
    )
    return Exported(spec, images, work / "dicom", work / "ours.nii.gz", work / "ours.npz", work)


def _check_dcm2niix_against_ours(dicom: Path, ours_path: Path, out: Path) -> None:
    """dcm2niix -x i (keep the acquired voxel order) gives our affine and our voxels."""
    (theirs_path,) = dcm2niix(dicom, out, "-x", "i")
    ours, theirs = nib.load(ours_path), nib.load(theirs_path)
    assert theirs.shape == ours.shape
    assert np.abs(theirs.affine - ours.affine).max() < 1e-3
    raw = theirs.dataobj.get_unscaled()  # dcm2niix's stored integers
    slopes = set()
    for path in dicom_files(dicom):
        ds = pydicom.dcmread(path)
        # where dcm2niix put this file: its first pixel's voxel index in their grid
        first = np.append(dicom_world(ds, 0, 0) * [-1, -1, 1], 1.0)
        i, j, k = np.round(np.linalg.solve(theirs.affine, first)[:3]).astype(int)
        assert (i, j) == (0, ds.Rows - 1)  # dcm2niix stores rows bottom-up
        np.testing.assert_array_equal(raw[:, ::-1, k].T, ds.pixel_array)
        slopes.add((float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))))
    ((slope, intercept),) = slopes  # one scale per series
    assert theirs.dataobj.slope == pytest.approx(slope, rel=1e-6)
    assert theirs.dataobj.inter == pytest.approx(intercept, abs=1e-9)
    # documented scaling: our float NIfTI within half a step (plus float32 rounding of the slope)
    difference = np.abs(theirs.get_fdata() - ours.get_fdata()).max()
    assert difference <= slope * (0.5 + 1e-3)


def test_dcm2niix_affine_and_voxels_equal_ours(exported: Exported) -> None:
    _check_dcm2niix_against_ours(exported.dicom, exported.nifti, exported.work / "dcm2niix")


def test_dcm2niix_default_orientation_is_the_same_grid(exported: Exported) -> None:
    """dcm2niix's default output (which reorients 3D acquisitions) covers the same voxels."""
    (theirs_path,) = dcm2niix(exported.dicom, exported.work / "dcm2niix-default")
    ours, theirs = nib.load(exported.nifti), nib.load(theirs_path)
    resampled = same_voxels(ours, theirs) * theirs.dataobj.slope + theirs.dataobj.inter
    assert np.abs(resampled - ours.get_fdata()).max() <= theirs.dataobj.slope * (0.5 + 1e-3)


def test_pydicom_reads_every_file(exported: Exported) -> None:
    files = dicom_files(exported.dicom)
    planes = sum(int(im.matrix_size[2]) for im in exported.images)
    assert len(files) == planes
    datasets = [pydicom.dcmread(path) for path in files]
    assert {ds.SOPClassUID for ds in datasets} == {pydicom.uid.MRImageStorage}
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(files)
    assert sorted(int(ds.InstanceNumber) for ds in datasets) == list(range(1, len(files) + 1))
    for ds in datasets:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.pixel_array.shape == (int(ds.Rows), int(ds.Columns))
        assert list(ds.ImageType[:3]) == ["ORIGINAL", "PRIMARY", "M"]
        assert ds.MRAcquisitionType == ("3D" if exported.spec.is_3d else "2D")
        assert ds.PatientID == "Shepp-Logan phantom"
        assert float(ds.MagneticFieldStrength) == 1.5
    # instances run along the slice normal (the order scanners and dcm2niix expect)
    by_number = sorted(datasets, key=lambda ds: int(ds.InstanceNumber))
    locations = [float(ds.SliceLocation) for ds in by_number]
    assert locations == sorted(locations)


def test_dciodvfy_reports_no_error(exported: Exported) -> None:
    for path in dicom_files(exported.dicom):
        errors, _ = dciodvfy(path)
        assert errors == [], f"{path.name}: {errors}"


def test_marker_world_coordinate_agrees_in_every_format(exported: Exported) -> None:
    known = marker_position(exported.spec)
    assert known is not None
    # MRD: brightest pixel of the reconstructed images, placed by the image header
    image = max(exported.images, key=lambda im: float(np.max(im.data)))
    z, y, x = np.unravel_index(int(np.argmax(image.data[0])), image.data.shape[1:])
    from_mrd = mrd_world(image, x, y, z)
    # DICOM: brightest pixel of the brightest file, placed by IPP/IOP/PixelSpacing
    datasets = [pydicom.dcmread(path) for path in dicom_files(exported.dicom)]
    ds = max(datasets, key=lambda d: int(d.pixel_array.max()))
    row, column = np.unravel_index(int(np.argmax(ds.pixel_array)), ds.pixel_array.shape)
    from_dicom = dicom_world(ds, row, column)
    # NIfTI: brightest voxel, placed by the sform
    nifti = nib.load(exported.nifti)
    i, j, k = np.unravel_index(int(np.argmax(nifti.get_fdata())), nifti.shape)
    from_nifti = nifti_world(nifti, i, j, k)
    # npz: brightest pixel, placed by the stored LPS affine
    with np.load(exported.npz, allow_pickle=False) as npz:
        data, affines = npz["data"], npz["affine_lps"]
    n, _, zz, yy, xx = np.unravel_index(int(np.argmax(data)), data.shape)
    from_npz = (affines[n] @ np.array([xx, yy, zz, 1.0]))[:3]
    for name, where in [
        ("MRD", from_mrd),
        ("DICOM", from_dicom),
        ("NIfTI", from_nifti),
        ("npz", from_npz),
    ]:
        np.testing.assert_allclose(where, known, atol=0.01, err_msg=name)
    for a, b in itertools.combinations([from_mrd, from_dicom, from_nifti, from_npz], 2):
        assert np.linalg.norm(a - b) < 0.01


def _synthetic_image(
    matrix: tuple[int, int, int],
    fov: tuple[float, float, float],
    position: tuple[float, float, float],
    read: np.ndarray,
    phase: np.ndarray,
    slice_dir: np.ndarray,
    slice_index: int,
    seed: int,
) -> Image:
    nx, ny, nz = matrix
    values = np.random.default_rng(seed).integers(-3000, 3000, (1, nz, ny, nx)).astype(np.int16)
    head = new_image_head()
    head["field_of_view"] = fov
    head["position"] = position
    head["read_dir"], head["phase_dir"], head["slice_dir"] = read, phase, slice_dir
    head["slice"] = slice_index
    head["image_type"] = int(ImageType.MAGNITUDE)
    head["image_series_index"] = 7
    head["image_index"] = slice_index + 1
    return Image.from_array(values, "", head)


@pytest.mark.parametrize("kind", ["2d-non-square", "3d-left-handed"])
def test_dcm2niix_agrees_on_non_square_pixels_and_any_slice_direction(
    kind: str, tmp_path: Path
) -> None:
    """Rows != columns and row spacing != column spacing catch a swapped PixelSpacing or
    transposed pixels; a 3D image whose slice_dir is -(read x phase) checks plane order."""
    angle = np.deg2rad(25)
    read = np.array([np.cos(angle), np.sin(angle), 0.0])
    phase = np.array([-np.sin(angle) * 0.8, np.cos(angle) * 0.8, 0.6])
    normal = np.cross(read, phase)
    if kind == "2d-non-square":
        images = [
            _synthetic_image(
                (7, 5, 1),
                (10.5, 12.5, 3.0),
                tuple(np.array([4.0, -7.0, 2.0]) + s * 4.0 * normal),
                read,
                phase,
                normal,
                s,
                s,
            )
            for s in (0, 2, 1)
        ]
    else:
        images = [
            _synthetic_image(
                (6, 5, 4), (9.0, 12.5, 8.0), (-3.0, 8.0, 15.0), read, phase, -normal, 0, 0
            )
        ]
    export([Header("<ismrmrdHeader/>"), *images], tmp_path / "dicom", to="dicom")
    export(images, tmp_path / "ours.nii", to="nifti")
    _check_dcm2niix_against_ours(tmp_path / "dicom", tmp_path / "ours.nii", tmp_path / "out")
    # int16 pixels are stored unscaled: dcm2niix's voxels are the MRD pixels exactly
    ours = nib.load(tmp_path / "ours.nii")
    assert ours.get_data_dtype() == np.int16
    image = images[0]
    nx, ny, nz = (int(v) for v in image.head["matrix_size"])
    for x, y, z in [(0, 0, 0), (nx - 1, 0, 0), (0, ny - 1, nz - 1), (nx - 1, ny - 1, 0)]:
        ijk = np.linalg.solve(
            ours.affine, np.append(mrd_world_from_head(image, x, y, z) * [-1, -1, 1], 1)
        )
        i, j, k = np.round(ijk[:3]).astype(int)
        assert np.abs(ijk[:3] - [i, j, k]).max() < 1e-4
        assert np.asanyarray(ours.dataobj)[i, j, k] == image.data[0, z, y, x]


def mrd_world_from_head(image: Image, x: int, y: int, z: int) -> np.ndarray:
    head = image.head
    n = np.array(head["matrix_size"], dtype=np.float64)
    spacing = np.array(head["field_of_view"], dtype=np.float64) / n
    world = np.array(head["position"], dtype=np.float64)
    for index, size, step, name in zip(
        (x, y, z), n, spacing, ("read_dir", "phase_dir", "slice_dir"), strict=True
    ):
        world = world + (index - (size - 1) / 2) * step * np.array(head[name], dtype=np.float64)
    return world


def test_real_int16_brain_image_through_dcm2niix(shared_data: Path, tmp_path: Path) -> None:
    source = str(shared_data / "prisma_3T_brain_images_int16.h5")
    run_cli("parallel-recon", "export", source, "--to", "dicom", "-o", str(tmp_path / "dicom"))
    run_cli("parallel-recon", "export", source, "--to", "nifti", "-o", str(tmp_path / "ours.nii"))
    _check_dcm2niix_against_ours(tmp_path / "dicom", tmp_path / "ours.nii", tmp_path / "out")
    for path in dicom_files(tmp_path / "dicom"):
        errors, _ = dciodvfy(path)
        assert errors == [], errors
