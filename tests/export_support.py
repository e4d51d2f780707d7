"""Independent readers for exported files: world coordinates and the real consumers.

Every formula here is written from the standards (DICOM PS3.3 C.7.6.2.1.1, NIfTI-1 sform,
the ISMRMRD image header) and never calls the exporter's own geometry code, so a convention
error in the exporter cannot cancel out in a test.  dcm2niix and dciodvfy are the Debian
packages that ``make deps`` installs; a missing tool is a failure, not a skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import ismrmrd
import nibabel as nib
import numpy as np
import pydicom

__all__ = [
    "dciodvfy",
    "dcm2niix",
    "dicom_files",
    "dicom_world",
    "mrd_world",
    "nifti_world",
    "same_voxels",
    "tool",
]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} is not installed: run 'make deps' (Debian package)")
    return path


def mrd_world(image: ismrmrd.Image, x: float, y: float, z: float = 0) -> np.ndarray:
    """LPS of voxel (x, y, z) of an ISMRMRD image: ``position`` is the centre of the grid."""
    n = np.array(image.matrix_size, dtype=np.float64)  # (x, y, z)
    spacing = np.array(image.field_of_view, dtype=np.float64) / n
    axes = [
        np.array(v, dtype=np.float64) for v in (image.read_dir, image.phase_dir, image.slice_dir)
    ]
    world = np.array(image.position, dtype=np.float64)
    for index, size, step, axis in zip((x, y, z), n, spacing, axes, strict=True):
        world = world + (index - (size - 1) / 2) * step * axis
    return world


def dicom_world(ds: pydicom.Dataset, row: float, column: float) -> np.ndarray:
    """LPS of pixel (row, column): IPP is the first pixel's centre; PixelSpacing is
    (between rows, between columns); IOP is (row direction, column direction)."""
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    return ipp + column * column_spacing * iop[:3] + row * row_spacing * iop[3:]


def nifti_world(image: nib.Nifti1Image, i: float, j: float, k: float) -> np.ndarray:
    """LPS of voxel (i, j, k) from the sform (RAS): negate x and y."""
    ras = image.affine @ np.array([i, j, k, 1.0])
    return np.array([-ras[0], -ras[1], ras[2]])


def dicom_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.dcm"))


def dcm2niix(dicom_folder: Path, out: Path, *extra: str) -> list[Path]:
    """Convert with dcm2niix (no BIDS sidecar, no compression); the NIfTI files it wrote."""
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            tool("dcm2niix"),
            "-b",
            "n",
            "-z",
            "n",
            *extra,
            "-f",
            "%s_%d",
            "-o",
            str(out),
            str(dicom_folder),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return sorted(out.glob("*.nii"))


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) that dicom3tools' dciodvfy reports for one file.

    The verifier itself must have run to the end on an MR Image: exit status 0, no "Abort"
    line (a file it cannot read), and "MRImage" (the IOD it recognised) in its output.
    """
    proc = subprocess.run(
        [tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    output = proc.stdout + proc.stderr
    lines = output.splitlines()
    assert proc.returncode == 0, f"dciodvfy exited {proc.returncode} on {path}:\n{output}"
    assert not [line for line in lines if line.startswith("Abort")], output
    assert "MRImage" in lines, f"dciodvfy did not recognise an MR Image in {path}:\n{output}"
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    return errors, warnings


def same_voxels(ours: nib.Nifti1Image, theirs: nib.Nifti1Image, tol_mm: float = 1e-3) -> np.ndarray:
    """``theirs``' data reordered onto ``ours``' voxel grid.

    Both affines must describe the same grid up to a reordering of axes (as dcm2niix's default
    rotation of 3D acquisitions does): every voxel centre of ``theirs`` must coincide, within
    ``tol_mm``, with a voxel centre of ``ours``.
    """
    mapping = np.linalg.inv(ours.affine) @ theirs.affine  # their index -> our index
    rounded = np.round(mapping)
    spacing = float(min(ours.header.get_zooms()[:3]))
    assert np.abs(mapping - rounded).max() * spacing < tol_mm, mapping
    data = theirs.dataobj.get_unscaled()
    shape = data.shape[:3]
    index = np.indices(shape).reshape(3, -1)
    target = (rounded[:3, :3] @ index + rounded[:3, 3:4]).astype(int)
    ours_shape = ours.shape[:3]
    assert all((target[a] >= 0).all() and (target[a] < ours_shape[a]).all() for a in range(3))
    out = np.empty(ours_shape + data.shape[3:], dtype=data.dtype)
    out[tuple(target)] = data.reshape(-1, *data.shape[3:])
    return out
