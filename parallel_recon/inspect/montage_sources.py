"""Montage tiles from what files hold: image series, image streams, raw k-space.

Images become one tile per (channel, z) plane, windowed per image; raw acquisitions become
one tile per (slice, partition, contrast, repetition), one coil, lines placed by
``kspace_encode_step_1``.  HDF5 groups are read with h5py by field name (padded header
layouts work); streams with :class:`~parallel_recon.protocol.StreamReader`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import BinaryIO

import h5py
import numpy as np

from ..errors import InputFileError
from ..hdf5.layout import open_mrd_file
from ..protocol import (
    Acquisition,
    AcquisitionFlag,
    Image,
    after_close_warning,
    open_reader,
)
from .montage import Tile, kspace_display, parse_meta, window

__all__ = [
    "KspaceAssembler",
    "ViewOptions",
    "image_label",
    "image_tiles",
    "tiles_from_hdf5",
    "tiles_from_stream",
]

_SKIPPED_FLAGS = (
    AcquisitionFlag.IS_NOISE_MEASUREMENT,
    AcquisitionFlag.IS_NAVIGATION_DATA,
    AcquisitionFlag.IS_PHASECORR_DATA,
)
_SKIP_MASK = sum(1 << (int(flag) - 1) for flag in _SKIPPED_FLAGS)
_BLOCK = 1024


@dataclass
class ViewOptions:
    """What to show: ``series`` filters image series (name or series index)."""

    group: str | None = None
    series: list[str] = field(default_factory=list)
    max_images: int = 64
    kspace: bool = False
    coil: int = 0


def image_label(head: np.void, z: int | None = None, channel: int | None = None) -> str:
    """Two lines: ``s<series> #<index> slc<slice>`` / ``c<contrast> r<rep> [z<z>] [ch<ch>]``."""
    label = (
        f"s{int(head['image_series_index'])} #{int(head['image_index'])} "
        f"slc{int(head['slice'])}\nc{int(head['contrast'])} r{int(head['repetition'])}"
    )
    if z is not None:
        label += f" z{z}"
    if channel is not None:
        label += f" ch{channel}"
    return label


def image_tiles(data: np.ndarray, head: np.void, attributes: str) -> list[Tile]:
    """One tile per (channel, z) plane of a ``[channels, z, y, x]`` image, windowed together."""
    grey = window(data, int(head["image_type"]), parse_meta(attributes))
    channels, depth = grey.shape[:2]
    return [
        Tile(
            grey[c, z],
            image_label(head, z if depth > 1 else None, c if channels > 1 else None),
        )
        for c in range(channels)
        for z in range(depth)
    ]


class KspaceAssembler:
    """Collects one coil's readouts into 2D k-space per (slice, e2, contrast, repetition)."""

    def __init__(self, coil: int):
        self.coil = coil
        self.lines: dict[tuple[int, int, int, int], list[tuple[int, np.ndarray]]] = {}
        self.max_channels = 0

    def add(self, head: np.void, data: np.ndarray) -> None:
        """Add a readout (``data`` complex ``[channels, samples]``) unless it is not imaging."""
        self.max_channels = max(self.max_channels, data.shape[0])
        if int(head["flags"]) & _SKIP_MASK or data.size == 0 or self.coil >= data.shape[0]:
            return
        idx = head["idx"]
        key = (
            int(idx["slice"]),
            int(idx["kspace_encode_step_2"]),
            int(idx["contrast"]),
            int(idx["repetition"]),
        )
        self.lines.setdefault(key, []).append((int(idx["kspace_encode_step_1"]), data[self.coil]))

    def tiles(self, max_images: int) -> list[Tile]:
        """Log-magnitude tiles; rows follow encode step 1 (acquisition order if all share one)."""
        if not self.lines:
            if self.max_channels and self.coil >= self.max_channels:
                raise InputFileError(
                    f"coil {self.coil} is out of range: the data has {self.max_channels} channels"
                )
            raise InputFileError("no imaging readouts with samples: no k-space to show")
        tiles = []
        for key in sorted(self.lines)[:max_images]:
            lines = self.lines[key]
            steps = [step for step, _ in lines]
            by_order = len(lines) > 1 and len(set(steps)) == 1
            rows = range(len(lines)) if by_order else steps
            kspace = np.zeros((max(rows) + 1, max(len(v) for _, v in lines)), np.complex64)
            for row, (_, values) in zip(rows, lines, strict=True):
                kspace[row, : len(values)] += values
            slice_, e2, contrast, rep = key
            label = f"slc{slice_} coil{self.coil}\nc{contrast} r{rep}"
            label += f" e2={e2}" if e2 else ""
            tiles.append(Tile(kspace_display(kspace), label))
        return tiles


def _complex(array: np.ndarray) -> np.ndarray:
    names = array.dtype.names
    if names and len(names) == 2:
        return array[names[0]] + 1j * array[names[1]]
    return array


def _series_selected(name: str, index: int, opts: ViewOptions) -> bool:
    if not opts.series:
        return True
    return any(s in (name, str(index), f"image_{index}") for s in opts.series)


def _hdf5_series(group: h5py.Group) -> list[str]:
    return sorted(
        name
        for name, node in group.items()
        if isinstance(node, h5py.Group) and "header" in node and "data" in node
    )


def _hdf5_images(group: h5py.Group, opts: ViewOptions) -> list[Tile]:
    tiles: list[Tile] = []
    for name in _hdf5_series(group):
        node = group[name]
        headers = np.atleast_1d(node["header"][()])
        attributes = node.get("attributes")
        for i, head in enumerate(headers):
            if len(tiles) >= opts.max_images:
                return tiles
            if not _series_selected(name, int(head["image_series_index"]), opts):
                break
            text = attributes[i] if attributes is not None else b""
            text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
            tiles += image_tiles(_complex(node["data"][i]), head, text)
    if opts.series and not tiles:
        raise InputFileError(
            f"no image series matches {opts.series}; series in {group.name}: {_hdf5_series(group)}"
        )
    return tiles[: opts.max_images]


def _hdf5_kspace(group: h5py.Group, opts: ViewOptions) -> list[Tile]:
    dataset = group.get("data")
    if not isinstance(dataset, h5py.Dataset):
        raise InputFileError(f"group {group.name} has no raw data ('data') for a k-space view")
    assembler = KspaceAssembler(opts.coil)
    for start in range(0, dataset.shape[0], _BLOCK):
        block = dataset[start : start + _BLOCK]
        for record in block:
            head = record["head"]
            channels, samples = int(head["active_channels"]), int(head["number_of_samples"])
            values = np.asarray(record["data"], dtype=np.float32)
            if values.size != 2 * channels * samples:
                raise InputFileError(
                    f"{dataset.name}[{start}]: expected {2 * channels * samples} floats of "
                    f"samples, found {values.size}"
                )
            assembler.add(head, values.view(np.complex64).reshape(channels, samples))
    return assembler.tiles(opts.max_images)


def _choose_group(handle: h5py.File, opts: ViewOptions) -> h5py.Group:
    if opts.group is not None:
        node = handle.get(opts.group)
        if not isinstance(node, h5py.Group):
            raise InputFileError(f"group {opts.group!r} not found; groups: {sorted(handle.keys())}")
        return node
    groups = [node for node in handle.values() if isinstance(node, h5py.Group)]
    wanted = (lambda g: "data" in g) if opts.kspace else (lambda g: bool(_hdf5_series(g)))
    for node in groups:
        if wanted(node):
            return node
    for node in groups:
        if "data" in node or _hdf5_series(node):
            return node
    raise InputFileError(f"no group with images or raw data; names: {sorted(handle.keys())}")


def tiles_from_hdf5(path: str, opts: ViewOptions) -> list[Tile]:
    """Tiles of an ISMRMRD HDF5 file: its image series, or k-space when asked or raw only."""
    with open_mrd_file(path) as handle:
        group = _choose_group(handle, opts)
        if opts.kspace or not _hdf5_series(group):
            return _hdf5_kspace(group, opts)
        return _hdf5_images(group, opts)


def tiles_from_stream(source: BinaryIO, opts: ViewOptions) -> list[Tile]:
    """Tiles of a stream: its images, or k-space when asked or when it holds no images."""
    reader = open_reader(source, require_close=False)
    tiles: list[Tile] = []
    assembler = KspaceAssembler(opts.coil)
    seen_series: set[int] = set()
    for message in reader:
        if isinstance(message, Image):
            index = int(message.head["image_series_index"])
            seen_series.add(index)
            if len(tiles) < opts.max_images and _series_selected(str(index), index, opts):
                tiles += image_tiles(message.data, message.head, message.attributes)
        elif isinstance(message, Acquisition):
            assembler.add(message.head, message.data)
    if not reader.closed:
        print("warning: the stream ended without a CLOSE message", file=sys.stderr)
    elif reader.data_after_close(wait=True):
        print(f"warning: {after_close_warning(reader)}", file=sys.stderr)
    if opts.kspace or (not tiles and not seen_series):
        return assembler.tiles(opts.max_images)
    if not tiles:
        raise InputFileError(
            f"no image series matches {opts.series}; series in the stream: {sorted(seen_series)}"
        )
    return tiles[: opts.max_images]
