"""Export of third-party images whose geometry is missing or degenerate.

Images with a field of view of 0 (pixel spacing unknown) or with every plane of a stack at
one position cannot be exported without a guess; the error names the option that supplies
what is missing (``--voxel-size X,Y,Z``, ``--slice-spacing MM``), and with it every format
places the voxels accordingly.  NIfTI files are read with nibabel, DICOM with pydicom and
converted by dcm2niix (the oracle for the stack's geometry).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import run_cli
from export_support import dcm2niix

from parallel_recon.protocol import Image, StreamWriter

PLANES = 40


def _third_party(path: Path, *, fov: tuple[float, float, float], planes: int) -> None:
    """``planes`` 2D images (slice 0..planes-1), all at one position, with ``fov``; no
    header message, as a viewer's image-only file."""
    with open(path, "wb") as handle, StreamWriter(handle) as writer:
        for k in range(planes):
            data = np.full((1, 1, 12, 10), k + 1, np.float32)
            data[0, 0, 0, 0] = 100  # the first pixel marks the orientation
            image = Image.from_array(data)
            head = image.head
            head["image_type"] = 1
            head["field_of_view"] = fov
            head["position"] = (1.0, 2.0, 3.0)
            head["read_dir"] = (1.0, 0.0, 0.0)
            head["phase_dir"] = (0.0, 1.0, 0.0)
            head["slice_dir"] = (0.0, 0.0, 1.0)
            head["slice"] = planes - 1 - k  # stored in reverse slice order
            head["image_index"] = k + 1
            head["image_series_index"] = 1
            writer.write(image)


def _export(source: Path, out: Path, *options: str):  # type: ignore[no-untyped-def]
    return run_cli("parallel-recon", "export", str(source), "-o", str(out), *options,
                   check=False)  # fmt: skip


def _one_error(proc, *needles: str) -> None:  # type: ignore[no-untyped-def]
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err.startswith("parallel-recon export: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("to", ["nifti", "dicom", "npy"])
def test_a_zero_field_of_view_is_an_error_naming_voxel_size(tmp_path: Path, to: str) -> None:
    source = tmp_path / "flat.bin"
    _third_party(source, fov=(0.0, 0.0, 0.0), planes=1)
    name = {"nifti": "x.nii", "dicom": "dicom", "npy": "x.npz"}[to]
    proc = _export(source, tmp_path / name, "--to", to)
    _one_error(proc, "field_of_view (0.0, 0.0, 0.0)", "--voxel-size X,Y,Z")
    assert not (tmp_path / name).exists()


def test_voxel_size_supplies_the_spacing_in_nifti_and_dicom(tmp_path: Path) -> None:
    source = tmp_path / "flat.bin"
    _third_party(source, fov=(0.0, 0.0, 0.0), planes=1)
    assert _export(source, tmp_path / "x.nii", "--voxel-size", "0.5,0.75,3").returncode == 0
    nifti = nib.load(tmp_path / "x.nii")
    assert nifti.header.get_zooms()[:3] == pytest.approx((0.5, 0.75, 3.0))
    assert _export(source, tmp_path / "dicom", "--to", "dicom", "--voxel-size", "0.5,0.75,3"
                   ).returncode == 0  # fmt: skip
    (dcm,) = list((tmp_path / "dicom").rglob("*.dcm"))
    ds = pydicom.dcmread(dcm)
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.75, 0.5])  # rows, columns
    assert float(ds.SliceThickness) == pytest.approx(3.0)


@pytest.mark.parametrize("value", ["1,2", "0,1,1", "a,b,c", "1,1,-1"])
def test_a_bad_voxel_size_is_a_usage_error(tmp_path: Path, value: str) -> None:
    source = tmp_path / "flat.bin"
    _third_party(source, fov=(0.0, 0.0, 0.0), planes=1)
    proc = _export(source, tmp_path / "x.nii", "--voxel-size", value)
    assert proc.returncode == 2 and "--voxel-size" in proc.stderr.decode()


def test_planes_at_one_position_are_an_error_naming_slice_spacing(tmp_path: Path) -> None:
    source = tmp_path / "stack.bin"
    _third_party(source, fov=(100.0, 120.0, 2.0), planes=PLANES)
    proc = _export(source, tmp_path / "x.nii")
    _one_error(proc, f"all {PLANES} planes lie at one position", "--slice-spacing MM")
    assert not (tmp_path / "x.nii").exists()


def test_slice_spacing_stacks_them_in_slice_order_like_dcm2niix(tmp_path: Path) -> None:
    source = tmp_path / "stack.bin"
    _third_party(source, fov=(100.0, 120.0, 2.0), planes=PLANES)
    ours_path = tmp_path / "x.nii"
    assert _export(source, ours_path, "--slice-spacing", "2.5").returncode == 0
    ours = nib.load(ours_path)
    assert ours.shape == (10, 12, PLANES)
    assert ours.header.get_zooms() == pytest.approx((10.0, 10.0, 2.5))
    values = np.asanyarray(ours.dataobj)[1, 1, :]  # slice k holds image k's value
    assert values.tolist() == [PLANES - k for k in range(PLANES)]  # slice 0 was stored last
    assert _export(source, tmp_path / "dicom", "--to", "dicom", "--slice-spacing", "2.5"
                   ).returncode == 0  # fmt: skip
    (theirs_path,) = dcm2niix(tmp_path / "dicom", tmp_path / "dcm2niix")
    theirs = nib.load(theirs_path)
    assert theirs.shape == ours.shape
    assert np.abs(theirs.affine - ours.affine).max() < 1e-3
    slope = float(theirs.dataobj.slope)  # dcm2niix stores DICOM's quantised values
    assert np.abs(theirs.get_fdata() - ours.get_fdata()).max() <= slope * (0.5 + 1e-3)
