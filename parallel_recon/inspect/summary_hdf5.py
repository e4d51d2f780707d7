"""Summarise the groups of an ISMRMRD HDF5 file with h5py, reading headers only.

Only the ``head`` member of ``data`` and ``waveforms`` is read (in blocks, never the vlen
payloads), so a big file is summarised quickly.  Fields are taken by name, which makes files
with a padded acquisition-header compound (e.g. 352 instead of 340 bytes) readable; the
non-standard layout is reported as a warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import InputFileError
from ..hdf5.layout import CONFIG_FILE, CONFIG_TEXT, TEXT
from ..protocol import ACQUISITION_HEADER_DTYPE, MessageId
from ..protocol.decode import HDF5_SIGNATURE
from .summary import SectionSummary

__all__ = ["HDF5_SIGNATURE", "is_hdf5", "list_mrd_groups", "summarize_hdf5_group"]

_STRING_DATASETS = {
    CONFIG_FILE: MessageId.CONFIG_FILE,
    CONFIG_TEXT: MessageId.CONFIG_TEXT,
    TEXT: MessageId.TEXT,
}
"""String datasets ``stream_to_mrdhdf5`` keeps config and text messages in: messages, not arrays."""
_BLOCK = 8192


def is_hdf5(path: str | Path) -> bool:
    """True when ``path`` carries the HDF5 signature (at 0 or a user-block offset)."""
    try:
        return bool(h5py.is_hdf5(str(path)))
    except OSError:
        return False


def _is_image_series(node: h5py.Group) -> bool:
    return all(isinstance(node.get(k), h5py.Dataset) for k in ("header", "data"))


def _is_mrd_group(node: h5py.Group) -> bool:
    return any(k in node for k in ("xml", "data", "waveforms")) or any(
        isinstance(child, h5py.Group) and _is_image_series(child) for child in node.values()
    )


def list_mrd_groups(handle: h5py.File | h5py.Group, prefix: str = "") -> list[str]:
    """Groups, at any depth, that hold an XML header, acquisitions, waveforms or images.

    Names are paths below the file's root (``dataset``, ``scans/a``: written with
    ``mrd_phantom -d scans/a`` or the C++ tools' ``-g``), in file order; the inside of an
    MRD group (its image series) is not searched further.
    """
    groups = []
    for name, node in handle.items():
        if not isinstance(node, h5py.Group):
            continue
        path = f"{prefix}{name}"
        if _is_mrd_group(node):
            groups.append(path)
        else:
            groups += list_mrd_groups(node, f"{path}/")
    return groups


def _layout_warning(head_dtype: np.dtype) -> str | None:
    standard = ACQUISITION_HEADER_DTYPE
    fields: Mapping[str, tuple[Any, ...]] = head_dtype.fields or {}
    expected: Mapping[str, tuple[Any, ...]] = standard.fields or {}
    if head_dtype.itemsize == standard.itemsize and all(
        name in fields and fields[name][1] == offset[1] for name, offset in expected.items()
    ):
        return None
    return (
        f"non-standard acquisition header layout: the HDF5 compound is {head_dtype.itemsize} "
        f"bytes, expected the packed {standard.itemsize}-byte ISMRMRD layout; fields were read "
        "by name (ISMRMRD C++ and ismrmrd-python cannot read this file)"
    )


def _read_heads(dataset: h5py.Dataset, section: SectionSummary, waveforms: bool) -> None:
    head_dtype = dataset.dtype["head"]
    missing = {"flags", "idx", "number_of_samples"} - set(head_dtype.names or ())
    if not waveforms and missing:
        raise InputFileError(
            f"{dataset.name}: acquisition header compound lacks fields {sorted(missing)}"
        )
    if not waveforms:
        warning = _layout_warning(head_dtype)
        if warning:
            section.warnings.append(warning)
    heads = dataset.fields("head")
    for start in range(0, dataset.shape[0], _BLOCK):
        block = heads[start : start + _BLOCK]
        if waveforms:
            section.add_waveform_heads(block)
        else:
            section.add_acquisition_heads(block)


def _read_series(name: str, node: h5py.Group, section: SectionSummary) -> None:
    headers = node["header"][()]
    data = node["data"]
    for head in np.atleast_1d(headers):
        x, y, z = (int(v) for v in head["matrix_size"])
        section.add_image_head(name, head, (int(head["channels"]), z, y, x))
    if data.ndim == 5 and data.shape[0] != headers.shape[0]:
        section.warnings.append(
            f"image series {name}: {headers.shape[0]} headers but {data.shape[0]} data entries"
        )


def _array_entry(name: str, dataset: h5py.Dataset) -> dict[str, Any]:
    return {"name": name, "shape": list(dataset.shape), "dtype": str(dataset.dtype)}


def summarize_hdf5_group(handle: h5py.File, group: str) -> SectionSummary:
    """Summarise one top-level group of an open ISMRMRD HDF5 file."""
    node = handle.get(group)
    if not isinstance(node, h5py.Group):
        raise InputFileError(
            f"group {group!r} not found in {handle.filename}; groups: {sorted(handle.keys())}"
        )
    section = SectionSummary(group)
    for name, child in node.items():
        if name == "xml" and isinstance(child, h5py.Dataset):
            raw = child[0]
            xml = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            section.add_header_xml(xml.rstrip("\0"))
            section.messages[MessageId.HEADER.name] += 1
        elif name in ("data", "waveforms") and isinstance(child, h5py.Dataset):
            is_waveform = name == "waveforms"
            _read_heads(child, section, is_waveform)
            kind = MessageId.WAVEFORM if is_waveform else MessageId.ACQUISITION
            section.messages[kind.name] += child.shape[0]
        elif isinstance(child, h5py.Group) and _is_image_series(child):
            _read_series(name, child, section)
            section.messages[MessageId.IMAGE.name] += child["header"].shape[0]
        elif name in _STRING_DATASETS and isinstance(child, h5py.Dataset):
            section.messages[_STRING_DATASETS[name].name] += child.shape[0] if child.shape else 1
        elif isinstance(child, h5py.Dataset):
            section.arrays.append(_array_entry(name, child))
            section.messages[MessageId.NDARRAY.name] += child.shape[0] if child.shape else 1
        elif isinstance(child, h5py.Group):
            for sub, item in child.items():
                if isinstance(item, h5py.Dataset):
                    section.arrays.append(_array_entry(f"{name}/{sub}", item))
    return section
