"""Batch outputs that are either finished or absent, and know whether they are up to date.

Every output is written under a hidden temporary name in its final folder,
``.<name>~<host>~<pid>.partial``, flushed to disk and renamed over the final name only when
complete, so a process killed at any moment (SIGKILL included) leaves either the finished
file or a ``.partial`` that nobody takes for a result.  Partial files whose writer is gone
(same host, process no longer alive) are removed by the next batch that writes there.

Each HDF5 output records in the root attribute ``parallel_recon_batch`` (JSON) the input it
was made from (name, group, size, modification time in ns) and the settings the images
depend on; an output is up to date when that record equals what the input and the settings
are now.  The PNG montage and the exports (``--to``), when asked for, are put in place
before the HDF5 file, so a finished HDF5 file implies a finished PNG and finished exports.

Exports sit beside the output and share its stem: ``scan.h5`` gives ``scan_dicom/`` (one
folder per export, a subfolder per series), ``scan.nii.gz`` and ``scan.npz`` (``scan_<series>``
names when there are several series).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import h5py

from ..protocol import Image, open_reader
from .model import BatchSettings, FileJob

__all__ = [
    "EXPORT_NAMES",
    "STAMP_ATTRIBUTE",
    "export_path",
    "is_partial_name",
    "is_up_to_date",
    "make_stamp",
    "partial_path",
    "png_path",
    "publish",
    "read_stamp",
    "sweep_partials",
    "write_outputs",
]

STAMP_ATTRIBUTE = "parallel_recon_batch"
OUTPUT_GROUP = "dataset"
MONTAGE_TILES = 64
EXPORT_NAMES = {"dicom": "_dicom", "nifti": ".nii.gz", "npy": ".npz"}
"""``--to`` format -> what follows the output's stem in the export's name."""
_PARTIAL = re.compile(r"^\..+~(?P<host>[^~/]+)~(?P<pid>\d+)\.partial$")


def _host() -> str:
    return socket.gethostname().replace("~", "-")


def is_partial_name(name: str) -> bool:
    """True for a file name this module uses while writing."""
    return _PARTIAL.match(name) is not None


def partial_path(final: str | Path) -> Path:
    """The temporary name of ``final`` for this process."""
    final = Path(final)
    return final.with_name(f".{final.name}~{_host()}~{os.getpid()}.partial")


def png_path(output: str | Path) -> Path:
    """Where ``--png`` puts the montage of an output: beside it, suffix ``.png``."""
    return Path(output).with_suffix(".png")


def export_path(output: str | Path, to: str) -> Path:
    """Where ``--to FORMAT`` puts the export of an output (see the module docstring)."""
    output = Path(output)
    return output.with_name(output.stem + EXPORT_NAMES[to])


def make_stamp(job: FileJob, settings: BatchSettings, stat: os.stat_result) -> dict[str, Any]:
    """What an output records about its input and settings (images are added when known)."""
    return {
        "input": job.name,
        "group": job.group,
        "input_bytes": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "settings": settings.fingerprint(),
    }


def read_stamp(output: str | Path) -> dict[str, Any] | None:
    """The record of a finished output, or None when it has none (or is no HDF5 file)."""
    try:
        with h5py.File(output, "r") as handle:
            text = handle.attrs.get(STAMP_ATTRIBUTE)
    except (OSError, ValueError):
        return None
    if text is None:
        return None
    try:
        stamp = json.loads(text)
    except (TypeError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def is_up_to_date(job: FileJob, settings: BatchSettings) -> bool:
    """True when ``job``'s output exists and was made from the input and settings as they
    are now (and its montage exists when one is asked for and there were images)."""
    if not os.path.isfile(job.output):
        return False
    stamp = read_stamp(job.output)
    if stamp is None:
        return False
    try:
        expected = make_stamp(job, settings, os.stat(job.input))
    except OSError:
        return False
    images = stamp.pop("images", 0)
    exports = stamp.pop("exports", [])
    if stamp != expected:
        return False
    folder = Path(job.output).parent
    if not all((folder / name).exists() for name in exports):
        return False
    return not (settings.png and images and not png_path(job.output).is_file())


def publish(partial: Path, final: Path) -> None:
    """Make a finished temporary file the output: to disk, then renamed, then the folder."""
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, final)
    with contextlib.suppress(OSError):
        folder = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` still runs.  A zombie does not: a runner killed with its Dask worker
    stays one until init reaps it, and its partial file must not outlive it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): assume it runs
    return state != b"Z"


def sweep_partials(folders: Iterable[str | Path]) -> int:
    """Remove temporary files of writers on this host that are no longer running."""
    host, removed = _host(), 0
    for folder in {str(f) for f in folders}:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            match = _PARTIAL.match(name)
            if match is None or match["host"] != host or _pid_alive(int(match["pid"])):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))
                removed += 1
    return removed


def _write_hdf5(images_stream: BinaryIO, partial: Path, want_tiles: bool) -> tuple[int, list]:
    """The image stream into an ISMRMRD HDF5 file; returns the image count and the tiles
    of the first images for a montage."""
    from ..hdf5 import MrdHdf5Writer
    from ..inspect.montage_sources import image_tiles

    tiles: list = []
    with MrdHdf5Writer(partial, OUTPUT_GROUP) as writer:
        for msg in open_reader(images_stream):
            writer.write(msg)
            if want_tiles and isinstance(msg, Image) and len(tiles) < MONTAGE_TILES:
                tiles += image_tiles(msg.data, msg.head, msg.attributes)
    return writer.counts.get("Image", 0), tiles[:MONTAGE_TILES]


def _export(partial: Path, final: Path, formats: Iterable[str]) -> list[str]:
    """Export the finished (not yet published) HDF5 output; returns the names written,
    relative to the output's folder.  A batch rewrites its own exports: an older DICOM
    folder of this output is removed first (the writer refuses to mix two exports)."""
    import shutil

    from ..export import export, read_hdf5_input

    source = read_hdf5_input(str(partial), OUTPUT_GROUP)
    names: list[str] = []
    for to in formats:
        target = export_path(final, to)
        if to == "dicom" and target.is_dir():
            shutil.rmtree(target)
        written = export(source, target, to=to)
        top = {p.relative_to(final.parent).parts[0] for p in written}
        names += sorted(top)
    return names


def write_outputs(
    images_stream: BinaryIO, job: FileJob, settings: BatchSettings, stamp: dict[str, Any]
) -> int:
    """Write ``job``'s output (and montage) from the engine's image stream, atomically.

    Returns the number of images.  On any error the temporary files are removed and the
    previous output, if any, is left as it was.
    """
    final = Path(job.output)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(final)
    png_final = png_path(final)
    png_partial = partial_path(png_final)
    try:
        images, tiles = _write_hdf5(images_stream, partial, settings.png)
        exports = _export(partial, final, settings.to) if settings.to and images else []
        with h5py.File(partial, "a") as handle:
            record = {**stamp, "images": images, "exports": exports}
            handle.attrs[STAMP_ATTRIBUTE] = json.dumps(record)
        if settings.png and tiles:
            from ..inspect.montage import render_montage

            render_montage(tiles).save(png_partial, format="PNG")
            publish(png_partial, png_final)
        publish(partial, final)
    except BaseException:
        for leftover in (partial, png_partial):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        raise
    return images
