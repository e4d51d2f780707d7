"""NIfTI-1 export (nibabel): one file per series, volumes stacked as the 4th dimension.

The images of a series are grouped into volumes by their counters (all images with the same
contrast, phase, repetition, set and average form one volume; their planes, 2D slices or
the planes of 3D images, are sorted along the slice normal and must form a regular grid).
When every volume has the same grid they become one 4D file, in the order the volumes first
appear; otherwise each volume gets a file of its own (``_vol<N>`` suffix).  A series with
several channels gives one file per channel (``_ch<N>`` suffix).  The time between volumes
(pixdim[4]) is the median step of their first acquisition time stamps, else the header's TR.

Voxel values keep their MRD data type (float32 stays float32, complex stays complex), so the
export is lossless; an image's ``RescaleSlope`` / ``RescaleIntercept`` meta attributes become
``scl_slope`` / ``scl_inter``.  The affine (RAS, qform and sform both ``scanner``) and the
voxel order come from :mod:`.geometry`: they are the ones dcm2niix writes for our DICOM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import GeometryError
from ..files import PendingFile
from .geometry import ImageGeometry, StackedVolume, nifti_affine, nifti_voxels, stack_planes
from .inputs import TICK_MS, ExportInput, ImageSeries
from .output import numbered_paths, split_extension
from .pixels import meta_rescale
from .study import study_info

__all__ = ["EXTENSIONS", "NiftiVolume", "nifti_volumes", "write_nifti"]

EXTENSIONS = (".nii", ".nii.gz")


@dataclass
class NiftiVolume:
    """One 3D volume of one channel: voxels ``[i, j, k]`` and its place in the patient."""

    name: str
    voxels: np.ndarray
    volume: StackedVolume
    slope: float = 1.0
    intercept: float = 0.0
    start_ms: float = 0.0
    """Earliest acquisition time stamp of the volume's images, in ms."""


def _stack(
    series: ImageSeries, members: list[int], channel: int, where: str
) -> tuple[np.ndarray, StackedVolume]:
    """Planes of the images ``members`` sorted along the normal: ``[k, rows, columns]``."""
    planes, values = [], []
    for i in members:
        image = series.images[i]
        geometry = ImageGeometry.from_header(image.head, series.meta(i), f"{where} image {i}")
        for z in range(geometry.matrix[2]):
            planes.append(geometry.plane(z))
            values.append(image.data[channel, z])
    volume = stack_planes(planes, where)
    return np.stack([values[k] for k in volume.order]), volume


def nifti_volumes(source: ExportInput) -> list[list[NiftiVolume]]:
    """The files to write: each a list of volumes with one grid (stacked as 4D)."""
    files: list[list[NiftiVolume]] = []
    for series in source.series:
        channels = {int(image.data.shape[0]) for image in series.images}
        if len(channels) != 1:
            raise GeometryError(
                f"{source.source}: series {series.name} mixes images with {sorted(channels)} "
                "channels; expected one channel count per series for NIfTI"
            )
        (count,) = channels
        slope, intercept = meta_rescale(series.meta(0))
        for channel in range(count):
            name = series.name + (f"_ch{channel + 1}" if count > 1 else "")
            where = f"{source.source}: series {series.name}"
            volumes = []
            for n, members in enumerate(series.volumes()):
                planes, volume = _stack(series, members, channel, f"{where} volume {n}")
                start = min(int(series.images[i].head["acquisition_time_stamp"]) for i in members)
                volumes.append(NiftiVolume(name, planes, volume, slope, intercept, start * TICK_MS))
            if all(v.volume.same_grid(volumes[0].volume) for v in volumes):
                files.append(volumes)
            else:
                files += [[v] for v in volumes]
    return files


def _suffix(group: list[NiftiVolume], groups: list[list[NiftiVolume]]) -> str:
    name = group[0].name
    same = [g for g in groups if g[0].name == name]
    if len(same) == 1:
        return name
    return f"{name}_vol{same.index(group) + 1:03d}"


def _volume_interval_s(group: list[NiftiVolume], tr_ms: float | None) -> float:
    """Seconds between volumes (NIfTI pixdim[4]): from the time stamps, else the header's TR."""
    starts = np.array([v.start_ms for v in group])
    steps = np.diff(starts)
    if steps.size and float(np.median(steps)) > 0:
        return float(np.median(steps)) / 1000.0
    return (tr_ms or 0.0) / 1000.0


def _image(group: list[NiftiVolume], tr_ms: float | None) -> nib.Nifti1Image:
    planes = np.stack([v.voxels for v in group], axis=-1)  # [k, rows, columns, t]
    voxels = nifti_voxels(planes)
    if voxels.shape[-1] == 1:
        voxels = voxels[..., 0]
    affine = nifti_affine(group[0].volume)
    image = nib.Nifti1Image(np.ascontiguousarray(voxels), affine)
    header = image.header
    header.set_qform(affine, code="scanner")
    header.set_sform(affine, code="scanner")
    header.set_xyzt_units(xyz="mm", t="sec")
    if voxels.ndim == 4:
        zooms = list(header.get_zooms())
        zooms[3] = _volume_interval_s(group, tr_ms)
        header.set_zooms(zooms)
    if group[0].slope != 1.0 or group[0].intercept != 0.0:
        header.set_slope_inter(group[0].slope, group[0].intercept)
    header["descrip"] = b"parallel-recon export"
    return image


def write_nifti(
    source: ExportInput, path: str | Path, progress: Callable[[int], None] | None = None
) -> list[Path]:
    """Write the series as ``.nii`` / ``.nii.gz`` files named after ``path``; returns them.

    One output is written to ``path`` itself; several get ``_<series>[_ch<N>][_vol<N>]``
    before the extension (``brain.nii.gz`` -> ``brain_image_1.nii.gz``, ...).
    """
    groups = nifti_volumes(source)
    target = Path(path)
    names = [_suffix(group, groups) for group in groups]
    paths = numbered_paths(target, names, EXTENSIONS)
    info = study_info(source.header_xml)
    tr_ms = info.tr_ms[0] if info.tr_ms else None
    for group, out in zip(groups, paths, strict=True):
        image = _image(group, tr_ms)
        # nibabel picks gzip from the name, so the temporary file keeps the extension
        with PendingFile(out, suffix=split_extension(out, EXTENSIONS)[1]) as pending:
            nib.save(image, pending.path)
        if progress is not None:
            progress(len(group))
    return paths
