"""What the exporters read: image series with the XML header, from HDF5, a stream or messages.

An export needs whole series in memory (one DICOM intensity scale per series, NIfTI volumes
stacked from slices), so inputs are gathered into :class:`ExportInput` first.  HDF5 image
series keep their names (``image_1``); images from a stream or from Python are grouped by
their ``image_series_index`` exactly as ``stream_to_mrdhdf5`` groups them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import h5py

from ..errors import InputFileError
from ..hdf5.layout import list_image_series, open_mrd_file
from ..hdf5.read import read_header_xml, read_messages
from ..inspect.montage import parse_meta
from ..protocol import Header, Image, Message, open_reader

__all__ = [
    "TICK_MS",
    "VOLUME_COUNTERS",
    "ExportInput",
    "ImageSeries",
    "collect_messages",
    "read_hdf5_input",
    "read_stream_input",
    "series_matches",
]


TICK_MS = 2.5
"""Milliseconds per tick of ``acquisition_time_stamp`` / ``physiology_time_stamp`` (ISMRMRD)."""

VOLUME_COUNTERS = ("contrast", "phase", "repetition", "set", "average")
"""Images of a series that agree on these counters form one volume (they differ by slice)."""


@dataclass
class ImageSeries:
    """One MRD image series: its name and its images in input order."""

    name: str
    images: list[Image] = field(default_factory=list)

    @property
    def index(self) -> int:
        """``image_series_index`` of the first image (the DICOM SeriesNumber it maps to)."""
        return int(self.images[0].head["image_series_index"]) if self.images else 0

    def meta(self, i: int) -> dict[str, list[str]]:
        """Parsed meta attributes of image ``i``."""
        return parse_meta(self.images[i].attributes)

    def volumes(self) -> list[list[int]]:
        """Indices of the images of each volume (:data:`VOLUME_COUNTERS`), first-seen order."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(self.images):
            key = tuple(int(image.head[name]) for name in VOLUME_COUNTERS)
            groups.setdefault(key, []).append(i)
        return list(groups.values())


@dataclass
class ExportInput:
    """Everything one export writes: the XML header (None if there was none) and the series."""

    header_xml: str | None
    series: list[ImageSeries]
    source: str = "images"
    """Where the images came from, for error messages."""


def series_matches(name: str, index: int, wanted: Sequence[str]) -> bool:
    """Whether a series is selected by ``-s``: its name, its index, or ``image_<index>``."""
    return not wanted or any(w in (name, str(index), f"image_{index}") for w in wanted)


def collect_messages(
    messages: Iterable[Message | Image],
    header_xml: str | None = None,
    source: str = "images",
    wanted: Sequence[str] = (),
) -> ExportInput:
    """Group Image messages into series by ``image_series_index`` (first-seen order).

    A HEADER message among ``messages`` supplies the XML header unless ``header_xml`` is given;
    other messages are ignored.
    """
    by_index: dict[int, ImageSeries] = {}
    seen: set[int] = set()
    for message in messages:
        if isinstance(message, Header) and header_xml is None:
            header_xml = message.xml
        elif isinstance(message, Image):
            index = int(message.head["image_series_index"])
            seen.add(index)
            name = f"image_{index}"
            if series_matches(name, index, wanted):
                by_index.setdefault(index, ImageSeries(name)).images.append(message)
    if not by_index:
        found = ", ".join(str(i) for i in sorted(seen)) or "none"
        want = f" matching {list(wanted)}" if wanted else ""
        raise InputFileError(
            f"{source}: no images{want} to export (image series indices found: {found}); "
            "raw data must be reconstructed first, e.g. with mrd_stream_recon"
        )
    return ExportInput(header_xml, list(by_index.values()), source)


def _image_group(path: str, group: str | None) -> str:
    """The group named by ``-g``, or the first group that holds image series."""
    if group is not None:
        return group
    with open_mrd_file(path) as handle:
        groups = [name for name, item in handle.items() if isinstance(item, h5py.Group)]
    for name in groups:
        if list_image_series(path, name):
            return name
    raise InputFileError(
        f"{path}: no group holds image series (groups: {', '.join(groups) or 'none'}); "
        "raw data must be reconstructed first, e.g. with mrd_stream_recon"
    )


def read_hdf5_input(path: str, group: str | None = None, wanted: Sequence[str] = ()) -> ExportInput:
    """Read image series of an ISMRMRD HDF5 file with the group's XML header.

    Parameters
    ----------
    path:
        The HDF5 file.
    group:
        HDF5 group (default: the first group holding image series).
    wanted:
        Series to export (names such as ``image_1``, or series indices); empty for all.
    """
    group = _image_group(path, group)
    names = list_image_series(path, group)
    series: list[ImageSeries] = []
    for name in names:
        images = [m for m in read_messages(path, group, [name]) if isinstance(m, Image)]
        index = int(images[0].head["image_series_index"]) if images else -1
        if images and series_matches(name, index, wanted):
            series.append(ImageSeries(name, images))
    if not series:
        want = f" matching {list(wanted)}" if wanted else ""
        raise InputFileError(
            f"{path}: group {group!r} has no image series{want} with images "
            f"(series found: {', '.join(names) or 'none'})"
        )
    return ExportInput(read_header_xml(path, group), series, f"{path}:{group}")


def read_stream_input(stream: BinaryIO, source: str, wanted: Sequence[str] = ()) -> ExportInput:
    """Read the images of an MRD stream (it must end with CLOSE), grouped by series index."""
    return collect_messages(open_reader(stream), source=source, wanted=wanted)
