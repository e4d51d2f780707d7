"""Batch outputs that are either finished or absent, and know whether they are up to date.

Every output is written under a hidden temporary name in its final folder,
``.<name>~<host>~<pid>.partial``, flushed to disk and renamed over the final name only when
complete, so a process killed at any moment (SIGKILL included) leaves either the finished
file or a ``.partial`` that nobody takes for a result.  Exports are written inside such a
partial folder (``.scan_dicom~<host>~<pid>.partial/``) and moved out when complete.  Partial
files and folders whose writer is gone (same host, process no longer alive) are removed by
the next batch that writes there.

Each HDF5 output records in the root attribute ``parallel_recon_batch`` (JSON) the input it
was made from (name, group, size, modification time in ns) and the settings the images
depend on, and beside them the exports and the montage made from it (``to``, ``exports``,
``png``).  Its images are up to date when the first part equals what the input and the
settings are now; then a change of ``--to`` or ``--png`` only re-exports from the output
(no reconstruction), and the exports of a format no longer asked for are removed.  The PNG
montage and the exports, when asked for, are put in place before the HDF5 file, so a
finished HDF5 file implies a finished PNG and finished exports.

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import h5py

from ..protocol import Image, open_reader
from .model import BatchSettings, FileJob

__all__ = [
    "EXPORT_NAMES",
    "STAMP_ATTRIBUTE",
    "Written",
    "export_path",
    "images_up_to_date",
    "is_partial_name",
    "is_up_to_date",
    "make_stamp",
    "partial_path",
    "png_path",
    "publish",
    "read_stamp",
    "refresh_outputs",
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


_EXPORT_KEYS = ("images", "exports", "to", "png")
"""Stamp entries about what was made from the images, not about how they were made."""


def images_up_to_date(job: FileJob, settings: BatchSettings) -> dict[str, Any] | None:
    """The stamp of ``job``'s output when its images were made from the input and the image
    settings as they are now (whatever its exports); None when it must be reconstructed."""
    if not os.path.isfile(job.output):
        return None
    stamp = read_stamp(job.output)
    if stamp is None:
        return None
    try:
        expected = make_stamp(job, settings, os.stat(job.input))
    except OSError:
        return None
    made = {key: value for key, value in stamp.items() if key not in _EXPORT_KEYS}
    if isinstance(made.get("settings"), dict):  # older stamps kept "to" among the settings
        made["settings"] = {k: v for k, v in made["settings"].items() if k != "to"}
    return stamp if made == expected else None


def _stamped_formats(stamp: dict[str, Any]) -> list[str]:
    old = stamp.get("settings", {}).get("to", []) if isinstance(stamp.get("settings"), dict) else []
    return sorted(stamp.get("to", old))


def is_up_to_date(job: FileJob, settings: BatchSettings) -> bool:
    """True when ``job``'s output exists and was made from the input and settings as they
    are now, with the exports and montage asked for now (and no others)."""
    stamp = images_up_to_date(job, settings)
    if stamp is None:
        return False
    images = int(stamp.get("images", 0))
    folder = Path(job.output).parent
    if _stamped_formats(stamp) != sorted(settings.to):
        return False
    if not all((folder / name).exists() for name in stamp.get("exports", [])):
        return False
    if settings.png and images and not png_path(job.output).is_file():
        return False
    return settings.png or not stamp.get("png", False)


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
    """Remove temporary files and folders of writers on this host that no longer run."""
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
            _remove(Path(folder) / name)
            removed += 1
    return removed


def _remove(path: Path) -> None:
    """Delete a file or a whole folder (gone already is fine)."""
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


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


def _export(source_path: Path, final: Path, formats: Iterable[str]) -> list[str]:
    """Export the HDF5 output at ``source_path`` (the finished partial, or the published
    output when only the exports change); returns the names written, relative to the
    output's folder.

    Each format is written inside a partial folder of its own (``.scan_dicom~host~pid
    .partial/``, swept when its writer is gone) and moved out when complete, replacing the
    previous export of that format.
    """
    from ..export import export, read_hdf5_input

    source = read_hdf5_input(str(source_path), OUTPUT_GROUP)
    names: list[str] = []
    for to in formats:
        target = export_path(final, to)
        staging = partial_path(target)
        _remove(staging)
        staging.mkdir()
        try:
            written = export(source, staging / target.name, to=to)
            tops = sorted({p.relative_to(staging).parts[0] for p in written})
            for name in tops:
                _remove(final.parent / name)  # the writer refuses to mix two exports
                os.replace(staging / name, final.parent / name)
        finally:
            _remove(staging)
        names += tops
    return names


@dataclass
class Written:
    """What writing one job's outputs did."""

    images: int
    removed: list[str] = field(default_factory=list)
    """Exports (and a montage) of an earlier run that the settings no longer ask for, removed."""


def _remove_stale(
    final: Path, previous: dict[str, Any] | None, exports: list[str], png: bool
) -> list[str]:
    """Remove what an earlier run made from this output and the settings no longer ask for:
    exports of other formats (only the names its stamp recorded) and the montage."""
    if previous is None:
        return []
    removed = []
    for name in previous.get("exports", []):
        if name not in exports and "/" not in name and (final.parent / name).exists():
            _remove(final.parent / name)
            removed.append(name)
    if previous.get("png") and not png and png_path(final).is_file():
        _remove(png_path(final))
        removed.append(png_path(final).name)
    return removed


def _record(partial: Path, stamp: dict[str, Any]) -> None:
    with h5py.File(partial, "a") as handle:
        handle.attrs[STAMP_ATTRIBUTE] = json.dumps(stamp)


def _montage(tiles: list, png_final: Path) -> None:
    from ..inspect.montage import render_montage

    png_partial = partial_path(png_final)
    try:
        render_montage(tiles).save(png_partial, format="PNG")
        publish(png_partial, png_final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            png_partial.unlink()
        raise


@contextlib.contextmanager
def _published(final: Path) -> Iterator[Path]:
    """The partial file of ``final``: published when the block succeeds, removed if not."""
    partial = partial_path(final)
    try:
        yield partial
        publish(partial, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise


def write_outputs(
    images_stream: BinaryIO, job: FileJob, settings: BatchSettings, stamp: dict[str, Any]
) -> Written:
    """Write ``job``'s output (and montage and exports) from the engine's image stream,
    atomically; removes the exports of formats an earlier run made and ``settings`` no
    longer asks for.

    On any error the temporary files are removed and the previous output, if any, is left
    as it was.
    """
    final = Path(job.output)
    final.parent.mkdir(parents=True, exist_ok=True)
    previous = read_stamp(final) if final.is_file() else None
    with _published(final) as partial:
        images, tiles = _write_hdf5(images_stream, partial, settings.png)
        exports = _export(partial, final, settings.to) if settings.to and images else []
        png = bool(settings.png and tiles)
        record = {**stamp, "images": images, "exports": exports}
        _record(partial, {**record, "to": sorted(settings.to), "png": png})
        if png:
            _montage(tiles, png_path(final))
    return Written(images, _remove_stale(final, previous, exports, png))


def refresh_outputs(job: FileJob, settings: BatchSettings) -> Written:
    """Redo the exports and the montage of an output whose images are up to date, from the
    output itself (no reconstruction), and record them in its stamp.

    The output is rewritten through a partial copy (its images unchanged), so an error
    leaves it as it was.
    """
    import shutil

    from ..errors import InputFileError
    from ..inspect.montage_sources import ViewOptions, tiles_from_hdf5

    final = Path(job.output)
    stamp = images_up_to_date(job, settings)
    if stamp is None:
        raise InputFileError(f"{final}: changed while the batch ran; run the batch again")
    images = int(stamp.get("images", 0))
    with _published(final) as partial:
        shutil.copyfile(final, partial)
        exports = _export(partial, final, settings.to) if settings.to and images else []
        png = bool(settings.png and images)
        if png:
            options = ViewOptions(group=OUTPUT_GROUP, max_images=MONTAGE_TILES)
            _montage(tiles_from_hdf5(str(partial), options)[:MONTAGE_TILES], png_path(final))
        kept = {key: value for key, value in stamp.items() if key not in _EXPORT_KEYS}
        kept["settings"] = make_stamp(job, settings, os.stat(job.input))["settings"]
        record = {**kept, "images": images, "exports": exports, "to": sorted(settings.to)}
        _record(partial, {**record, "png": png})
    return Written(images, _remove_stale(final, stamp, exports, png))
