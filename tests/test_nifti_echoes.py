"""Multi-echo NIfTI: one file per echo (dcm2niix's ``_e1``, ``_e2`` names), repetitions as
the 4th dimension with the time between repetitions as its step.

Echoes and repetitions used to be stacked into one 4th dimension of echoes x repetitions
volumes whose step was the echo spacing.  dcm2niix, converting our DICOM export of the same
images, is the oracle for the file split, the names, the affine and pixdim[4]; the voxels are
checked against the images read with ismrmrd-python and the files are read with nibabel.
"""

from __future__ import annotations

from pathlib import Path

import ismrmrd
import nibabel as nib
import numpy as np
import pytest
from conftest import run_cli
from export_support import dcm2niix
from reference_recon import read_stream

SCAN = ["-m", "16", "-c", "2", "-s", "3", "-e", "3", "-r", "4"]


@pytest.fixture(scope="module")
def multi_echo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = run_cli("mrd_phantom", *SCAN, "-o", "-").stdout
    path = tmp_path_factory.mktemp("echoes") / "images.bin"
    path.write_bytes(run_cli("mrd_stream_recon", input=raw).stdout)
    return path


def _images(path: Path) -> list[ismrmrd.Image]:
    _, messages = read_stream(path.read_bytes())
    return [m for m in messages if isinstance(m, ismrmrd.Image)]


def test_one_file_per_echo_with_repetitions_in_the_fourth_dimension(
    multi_echo: Path, tmp_path: Path
) -> None:
    proc = run_cli("parallel-recon", "export", str(multi_echo), "--to", "nifti", "-o",
                   str(tmp_path / "brain.nii.gz"))  # fmt: skip
    assert proc.returncode == 0
    names = sorted(p.name for p in tmp_path.glob("*.nii.gz"))
    assert names == ["brain_e1.nii.gz", "brain_e2.nii.gz", "brain_e3.nii.gz"]
    images = _images(multi_echo)
    for echo in (1, 2, 3):
        nifti = nib.load(tmp_path / f"brain_e{echo}.nii.gz")
        assert nifti.shape == (16, 16, 3, 4)
        data = np.asanyarray(nifti.dataobj)
        for image in images:
            if image.contrast != echo - 1:
                continue
            # NIfTI voxel (i, j) is MRD pixel (x, 15 - y) (RAS from LPS): see the README
            plane = data[:, ::-1, :, image.repetition].T  # [slice position, y, x]
            matches = [np.array_equal(plane[k], image.data[0, 0]) for k in range(3)]
            assert sum(matches) == 1, (echo, image.slice, image.repetition)


def test_names_steps_and_geometry_match_dcm2niix(multi_echo: Path, tmp_path: Path) -> None:
    ours_dir, dicom_dir = tmp_path / "ours", tmp_path / "dicom"
    ours_dir.mkdir()
    run_cli("parallel-recon", "export", str(multi_echo), "--to", "nifti", "-o",
            str(ours_dir / "brain.nii"))  # fmt: skip
    run_cli("parallel-recon", "export", str(multi_echo), "--to", "dicom", "-o", str(dicom_dir))
    theirs = dcm2niix(dicom_dir, tmp_path / "dcm2niix")
    assert [p.name.rsplit("_", 1)[-1] for p in theirs] == ["e1.nii", "e2.nii", "e3.nii"]
    for echo, their_path in enumerate(theirs, start=1):
        ours = nib.load(ours_dir / f"brain_e{echo}.nii")
        reference = nib.load(their_path)
        assert ours.shape == reference.shape == (16, 16, 3, 4)
        assert np.abs(ours.affine - reference.affine).max() < 1e-3
        step = float(ours.header.get_zooms()[3])
        assert step == pytest.approx(float(reference.header.get_zooms()[3]), rel=1e-3)
        assert step > 1.0  # the time between repetitions, not the 2.5 ms between echoes
        slope = float(reference.dataobj.slope)
        assert np.abs(reference.get_fdata() - ours.get_fdata()).max() <= slope * (0.5 + 1e-3)


def _export_scan(folder: Path, name: str, *phantom: str) -> list[str]:
    """Reconstruct ``mrd_phantom -m 16 -c 2 PHANTOM`` and export it as NIfTI ``name``."""
    raw = run_cli("mrd_phantom", "-m", "16", "-c", "2", *phantom, "-o", "-").stdout
    images = folder / "images.bin"
    images.write_bytes(run_cli("mrd_stream_recon", input=raw).stdout)
    run_cli("parallel-recon", "export", str(images), "--to", "nifti", "-o", str(folder / name))
    return sorted(p.name for p in folder.glob("*.nii.gz"))


def test_single_echo_repetitions_stay_one_file(tmp_path: Path) -> None:
    assert _export_scan(tmp_path, "one.nii.gz", "-s", "2", "-r", "3") == ["one.nii.gz"]
    assert nib.load(tmp_path / "one.nii.gz").shape == (16, 16, 2, 3)


def test_echoes_without_repetitions_are_3d_files(tmp_path: Path) -> None:
    names = _export_scan(tmp_path, "te.nii.gz", "-s", "2", "-e", "2")
    assert names == ["te_e1.nii.gz", "te_e2.nii.gz"]
    assert all(nib.load(tmp_path / n).shape == (16, 16, 2) for n in names)
