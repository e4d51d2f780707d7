"""NIfTI-1 export (nibabel): one file per series, volumes stacked as the 4th dimension.

The images of a series are grouped into volumes by their counters (all images with the same
contrast, phase, repetition, set and average form one volume; their planes, 2D slices or
the planes of 3D images, are sorted along the slice normal and must form a regular grid).
A series with several echoes (contrasts) gives one file per echo, named ``_e1``, ``_e2``, ...
as dcm2niix names them (echo N is contrast N - 1).  Within an echo, when every volume has the
same grid they become one 4D file (repetitions, phases, sets), in the order the volumes first
appear; otherwise each volume gets a file of its own (``_vol<N>`` suffix).  A series with
several channels gives one file per channel (``_ch<N>`` suffix).  The time between volumes
(pixdim[4]) is the median step of their first acquisition time stamps (the repetition time
of the volumes, as dcm2niix estimates it), else the header's TR.

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

__all__ = ["EXTENSIONS", "NiftiFile", "NiftiVolume", "nifti_files", "nifti_volumes", "write_nifti"]

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
    contrast: int = 0


@dataclass
class NiftiFile:
    """The volumes of one output file (one grid, stacked as 4D when there are several)."""

    volumes: list[NiftiVolume]
    series: str
    channel: str = ""
    """``ch<N>`` for a series with several channels, else ''."""
    echo: int | None = None
    """Echo number (contrast + 1) when the series has several echoes, else None."""
    part: int | None = None
    """1-based ``_vol<N>`` number when the volumes of one echo do not share a grid."""

    def name(self, alone: bool) -> str:
        """The suffix this file adds to the output name; ``alone`` when the export has one
        series with one channel, whose echoes are then just ``e1``, ``e2`` (dcm2niix)."""
        parts = [] if alone and self.part is None else [self.series]
        parts += [self.channel] if self.channel else []
        parts += [f"e{self.echo}"] if self.echo is not None else []
        parts += [f"vol{self.part:03d}"] if self.part is not None else []
        return "_".join(parts)


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


def _channel_volumes(series: ImageSeries, channel: int, name: str, where: str) -> list[NiftiVolume]:
    slope, intercept = meta_rescale(series.meta(0))
    volumes = []
    for n, members in enumerate(series.volumes()):
        planes, volume = _stack(series, members, channel, f"{where} volume {n}")
        first = series.images[members[0]].head
        start = min(int(series.images[i].head["acquisition_time_stamp"]) for i in members)
        volumes.append(
            NiftiVolume(
                name, planes, volume, slope, intercept, start * TICK_MS, int(first["contrast"])
            )
        )
    return volumes


def _by_echo(volumes: list[NiftiVolume]) -> dict[int, list[NiftiVolume]]:
    """The volumes of each contrast, contrasts in first-seen order."""
    echoes: dict[int, list[NiftiVolume]] = {}
    for volume in volumes:
        echoes.setdefault(volume.contrast, []).append(volume)
    return echoes


def nifti_files(source: ExportInput) -> list[NiftiFile]:
    """The files to write: each a list of volumes with one grid (stacked as 4D)."""
    files: list[NiftiFile] = []
    for series in source.series:
        channels = {int(image.data.shape[0]) for image in series.images}
        if len(channels) != 1:
            raise GeometryError(
                f"{source.source}: series {series.name} mixes images with {sorted(channels)} "
                "channels; expected one channel count per series for NIfTI"
            )
        (count,) = channels
        for channel in range(count):
            label = f"ch{channel + 1}" if count > 1 else ""
            name = series.name + (f"_{label}" if label else "")
            where = f"{source.source}: series {series.name}"
            echoes = _by_echo(_channel_volumes(series, channel, name, where))
            for contrast, volumes in echoes.items():
                echo = contrast + 1 if len(echoes) > 1 else None
                if all(v.volume.same_grid(volumes[0].volume) for v in volumes):
                    files.append(NiftiFile(volumes, series.name, label, echo))
                else:
                    files += [
                        NiftiFile([v], series.name, label, echo, n)
                        for n, v in enumerate(volumes, start=1)
                    ]
    return files


def nifti_volumes(source: ExportInput) -> list[list[NiftiVolume]]:
    """The volumes of each file to write (see :func:`nifti_files`)."""
    return [file.volumes for file in nifti_files(source)]


def _names(files: list[NiftiFile]) -> list[str]:
    alone = len({f.series for f in files}) == 1 and not any(f.channel for f in files)
    return [file.name(alone) for file in files]


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

    One output is written to ``path`` itself; several get ``_<series>[_ch<N>][_e<N>][_vol<N>]``
    before the extension (``brain.nii.gz`` -> ``brain_image_1.nii.gz``, ...); the echoes of a
    single series are just ``brain_e1.nii.gz``, ``brain_e2.nii.gz``, ... (dcm2niix's names).
    """
    files = nifti_files(source)
    target = Path(path)
    paths = numbered_paths(target, _names(files), EXTENSIONS)
    info = study_info(source.header_xml)
    tr_ms = info.tr_ms[0] if info.tr_ms else None
    for file, out in zip(files, paths, strict=True):
        group = file.volumes
        image = _image(group, tr_ms)
        # nibabel picks gzip from the name, so the temporary file keeps the extension
        with PendingFile(out, suffix=split_extension(out, EXTENSIONS)[1]) as pending:
            nib.save(image, pending.path)
        if progress is not None:
            progress(len(group))
    return paths
