"""The Python API: reconstruct raw data and read and write images from a script or notebook.

The functions run the same engine as ``mrd_stream_recon`` (reader, worker pool and ordering
writer as child processes of the calling process), so their images are byte for byte the
command's.  Importing this module is cheap: the engine, numpy and h5py are imported on the
first call.

Example
-------
>>> import parallel_recon as pr
>>> images = pr.reconstruct("raw.h5", workers=4)          # doctest: +SKIP
>>> images[0].data.shape                                   # [channels, z, y, x]
(1, 1, 128, 128)
>>> pr.write_images("images.h5", images)                   # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from typing import TypeAlias

    from .engine.pipeline import PipelineOptions
    from .protocol import Image, Message

__all__ = ["export", "read_images", "reconstruct", "write_images"]

Source: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | memoryview | Iterable[Message]"
"""A path (ISMRMRD HDF5 or MRD stream file), the bytes of a stream, or its messages."""

_STREAM_FORMATS = ("hdf5", "stream", "mrd2")


def _hdf5_group(path: str, group: str | None) -> str:
    """The raw-data group to read: ``group``, else ``dataset`` or the file's only one."""
    from .errors import InputFileError
    from .files.inputs import raw_groups

    found = raw_groups(path)
    if group is not None:
        return group
    if "dataset" in found or not found:
        return "dataset"  # a missing group gets the reader's error listing what exists
    if len(found) == 1:
        return found[0]
    raise InputFileError(
        f"{path}: several raw-data groups ({', '.join(found)}); choose one with group="
    )


def _run(stream: BinaryIO, opts: PipelineOptions) -> list[Image]:
    from .engine.run import run_engine
    from .protocol import Image, open_reader

    with run_engine(stream, opts) as images:
        return [msg for msg in open_reader(images) if isinstance(msg, Image)]


def reconstruct(
    source: Source,
    *,
    recon: str = "auto",
    workers: int | None = None,
    output: str = "magnitude",
    options: Mapping[str, str] | None = None,
    group: str | None = None,
    memory_limit: int | None = None,
) -> list[Image]:
    """Reconstruct raw data with the parallel engine; the images in output order.

    Parameters
    ----------
    source:
        A path to an ISMRMRD HDF5 file or an MRD stream file (told apart by content), the
        bytes of an MRD stream, or an iterable of messages (``Header``, ``Acquisition``, ...;
        CLOSE is added when missing).
    recon:
        Kernel: ``"auto"`` (chosen from the data), ``"cartesian"``, ``"grappa"``, ``"nufft"``
        (radial and spiral data), or a path to a ``.py``
        file defining ``reconstruct(kspace, context)``; as ``mrd_stream_recon --recon``.
    workers:
        Worker processes (default: the engine's, one per available core, see
        ``parallel_recon.engine.cores``).
    output:
        ``"magnitude"`` (float32), ``"phase"`` (float32, radians) or ``"complex"``
        (complex64).
    options:
        Kernel options, as ``--recon-option KEY=VALUE``.
    group:
        HDF5 group with the raw data (default: ``dataset``, or the file's only raw group).
    memory_limit:
        Bytes of shared memory for k-space and image buffers (default: 25% of RAM).

    Returns
    -------
    list of :class:`parallel_recon.protocol.Image`
        ``image.data`` is ``[channels, z, y, x]``; ``image.head`` the ImageHeader record
        (geometry, counters, ``image_index``); ``image.attributes`` the meta XML text.  In
        the order ``mrd_stream_recon`` writes them.

    Raises
    ------
    parallel_recon.errors.ReconError
        Bad input, an unknown kernel, a kernel error, a dataset that does not fit in
        ``memory_limit``: the message says what and where.
    """
    from .engine.run import message_source, pipeline_options, raw_file_source
    from .errors import InputFileError
    from .files.inputs import classify

    opts = pipeline_options(
        recon=recon, output=output, options=options, workers=workers, memory_limit=memory_limit
    )
    if isinstance(source, (bytes, bytearray, memoryview)):
        import io

        return _run(io.BytesIO(bytes(source)), opts)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            raise InputFileError(
                f"cannot reconstruct {path!r}: it is a folder; give one raw-data file (an "
                "ISMRMRD HDF5 file or an MRD stream), or reconstruct a folder of files with "
                "parallel-recon batch"
            )
        if not os.path.isfile(path):
            raise InputFileError(f"cannot open input {path!r}: no such file")
        kind = "hdf5" if classify(path) == "hdf5" else "stream"
        chosen = _hdf5_group(path, group) if kind == "hdf5" else None
        with raw_file_source(path, kind, chosen) as stream:
            return _run(stream, opts)
    return _run(message_source(source), opts)


def read_images(
    path: str | os.PathLike, *, group: str | None = None, series: Sequence[str] | None = None
) -> list[Image]:
    """The images of an ISMRMRD HDF5 file or an MRD image stream file.

    Parameters
    ----------
    path:
        HDF5 file (told apart from a stream by its content) or stream file.
    group:
        HDF5 group (default: ``dataset``, or the first group that holds images).
    series:
        HDF5 image series names (``image_0``, ...; default: all, in name order).

    Returns
    -------
    list of :class:`parallel_recon.protocol.Image`
        ``data`` ``[channels, z, y, x]`` in its stored data type.
    """
    from .hdf5 import list_groups, list_image_series, read_messages
    from .inspect.summary_hdf5 import is_hdf5
    from .protocol import Image, open_reader

    name = os.fspath(path)
    if not is_hdf5(name):
        from .files.inputs import open_input

        with open_input(name) as handle:
            return [msg for msg in open_reader(handle) if isinstance(msg, Image)]
    if group is None:
        groups = list_groups(name)
        with_images = [g for g in groups if list_image_series(name, g)]
        group = "dataset" if "dataset" in with_images or not with_images else with_images[0]
    names = list(series) if series is not None else sorted(list_image_series(name, group))
    if not names:
        return []
    return [msg for msg in read_messages(name, group, names) if isinstance(msg, Image)]


def write_images(
    path: str | os.PathLike,
    images: Iterable[Image],
    *,
    header: str | None = None,
    group: str = "dataset",
    format: str = "hdf5",
) -> Path:
    """Write images to a new ISMRMRD HDF5 file (or an MRD stream), replacing ``path``.

    The file is written under a temporary name and renamed when complete, so ``path`` is
    never seen half-written.

    Parameters
    ----------
    images:
        :class:`parallel_recon.protocol.Image` objects, stored in order, by
        ``image_series_index`` (HDF5 series ``image_<index>``).
    header:
        ISMRMRD XML header to store with them (``xml`` dataset / HEADER message).
    group:
        HDF5 group (``dataset``).
    format:
        ``"hdf5"``, ``"stream"`` (an MRD v1 stream: HEADER if given, images, CLOSE) or
        ``"mrd2"`` (an MRD v2 stream of the same).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from .errors import ConfigurationError
    from .files import PendingFile
    from .hdf5 import MrdHdf5Writer
    from .protocol import Header, open_writer

    if format not in _STREAM_FORMATS:
        raise ConfigurationError(
            f"format {format!r}: expected {' or '.join(repr(f) for f in _STREAM_FORMATS)}"
        )
    with PendingFile(Path(path), seekable=format == "hdf5") as pending:
        if format == "hdf5":
            with MrdHdf5Writer(pending.path, group) as writer:
                if header is not None:
                    writer.write(Header(header))
                writer.write_all(images)
        else:
            with open(pending.path, "wb") as handle:
                stream = open_writer(handle, "mrd2" if format == "mrd2" else "ismrmrd")
                if header is not None:
                    stream.write(Header(header))
                for image in images:
                    stream.write(image)
                stream.close()
    return Path(path)


def export(
    images: Iterable[Message | Image],
    path: str | os.PathLike[str],
    to: str = "nifti",
    *,
    header: str | None = None,
    voxel_size: tuple[float, float, float] | None = None,
    slice_spacing: float | None = None,
) -> list[Path]:
    """Export images to DICOM (a new folder), NIfTI (``.nii``/``.nii.gz``) or ``.npz``.

    Parameters
    ----------
    images:
        Image messages, e.g. from :func:`reconstruct` or :func:`read_images`; a HEADER among
        them supplies the XML header (patient, study and sequence facts for DICOM).
    path:
        The folder (``to="dicom"``) or file name; several series get ``_<series>`` names.
    to:
        ``"dicom"``, ``"nifti"`` or ``"npy"``.
    header:
        The ISMRMRD XML header when it is not among ``images``.
    voxel_size, slice_spacing:
        Geometry the image headers lack (mm per voxel ``(x, y, z)``; mm between the 2D
        images of a volume), as ``parallel-recon export --voxel-size/--slice-spacing``.

    Returns
    -------
    list[pathlib.Path]
        The files written (see ``parallel-recon export`` in README for the geometry).
    """
    from .export import export as export_images

    return export_images(
        images,
        Path(path),
        to,
        header_xml=header,
        voxel_size=voxel_size,
        slice_spacing=slice_spacing,
    )
