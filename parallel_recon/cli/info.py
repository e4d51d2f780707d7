"""``parallel-recon info FILE|-``: what an HDF5 file or an MRD stream holds.

Text for people, ``--json`` for scripts.  A damaged stream still prints what was read before
the damage, then one error line, and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputFileError, ReconError
from ..files.inputs import open_input
from ..hdf5.layout import open_mrd_file
from ..inspect.summary import summarize_stream
from ..inspect.summary_hdf5 import is_hdf5, list_mrd_groups, summarize_hdf5_group
from ..protocol import FORMAT_NAMES
from .common import EXIT_OK, OneLineParser, add_version_option, run_command

__all__ = ["build_parser", "collect", "format_text", "main"]

PROG = "parallel-recon info"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Summarise an ISMRMRD HDF5 file or an MRD v1 stream: header, message "
        "counts, acquisition flags and counters, image series, warnings.",
    )
    parser.add_argument("input", help="HDF5 file, stream file, or - for a stream on stdin")
    parser.add_argument(
        "-g", "--group", help="HDF5 group to summarise (default: every MRD group in the file)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (keys: path, format, file_bytes, groups, sections, "
        "warnings, error)",
    )
    add_version_option(parser)
    return parser


def _collect_hdf5(path: str, group: str | None) -> dict[str, Any]:
    with open_mrd_file(path) as handle:
        groups = list_mrd_groups(handle)
        chosen = [group] if group is not None else groups
        if not chosen:
            raise InputFileError(
                f"{path}: no ISMRMRD group found (expected a group with xml, data, waveforms "
                f"or image series); top-level names: {sorted(handle.keys())}"
            )
        try:
            sections = [summarize_hdf5_group(handle, name).to_dict() for name in chosen]
        except (OSError, KeyError, ValueError) as exc:
            raise InputFileError(f"{path}: unreadable ISMRMRD HDF5 content: {exc}") from None
    return {"format": "hdf5", "generation": None, "groups": groups, "sections": sections}


def _collect_stream(path: str | None) -> dict[str, Any]:
    with open_input(path, file_option="a file name instead of -") as source:
        summary = summarize_stream(source)
        section = summary.to_dict()
    where = "standard input" if path is None else repr(path)
    if section["stream_bytes"] == 0 and not section["error"]:
        raise InputFileError(
            f"{where} is empty: expected an MRD stream or an ISMRMRD HDF5 file, found 0 bytes"
        )
    if section["error"] and not section["messages"]:  # not one valid message: not MRD at all
        raise InputFileError(f"cannot read {where}: {section['error']}")
    return {
        "format": "stream",
        "generation": summary.generation,
        "groups": [],
        "sections": [section],
    }


def _check_file(path: str) -> None:
    """A clear line for a path that is not a readable file (before anything is printed)."""
    target = Path(path)
    if target.is_dir():
        raise InputFileError(
            f"cannot read {path!r}: it is a directory (expected an ISMRMRD HDF5 file or an "
            "MRD stream file)"
        )
    if not target.exists():
        raise InputFileError(f"cannot open input {path!r}: no such file")
    if not target.is_file() and not target.is_fifo() and not target.is_char_device():
        raise InputFileError(f"cannot read {path!r}: not a regular file")


def collect(path: str, group: str | None = None) -> dict[str, Any]:
    """The ``--json`` document for ``path`` (``-`` = stream on stdin).

    Keys: ``path``, ``format`` ("hdf5" or "stream"), ``generation`` (streams: "ismrmrd" for
    MRD v1, "mrd2" for MRD v2), ``file_bytes`` (null for stdin),
    ``groups`` (MRD groups of an HDF5 file), ``sections`` (one per group or one for the
    stream; see :meth:`parallel_recon.inspect.summary.SectionSummary.to_dict`), ``warnings`` (all
    sections' warnings, prefixed by section name), ``error`` (null or the first error).
    """
    is_std = path == "-"
    if not is_std:
        _check_file(path)
    if not is_std and Path(path).is_file() and is_hdf5(path):
        result = _collect_hdf5(path, group)
    else:
        if group is not None:
            raise InputFileError(f"-g/--group applies to HDF5 files; {path!r} is a stream")
        result = _collect_stream(None if is_std else path)
    warnings = [f"{s['name']}: {w}" for s in result["sections"] for w in s["warnings"]]
    errors = [s["error"] for s in result["sections"] if s["error"]]
    return (
        {
            "path": path,
            "file_bytes": None if is_std or not Path(path).is_file() else Path(path).stat().st_size,
        }
        | result
        | {"warnings": warnings, "error": errors[0] if errors else None}
    )


def _fmt(values: list[Any] | None, unit: str = "", sep: str = " x ") -> str:
    if not values:
        return "-"
    return sep.join("?" if v is None else f"{v:g}" for v in values) + unit


def _counts(mapping: dict[str, int]) -> str:
    return ", ".join(f"{key} ({count})" for key, count in mapping.items()) or "-"


def _header_lines(header: dict[str, Any] | None) -> list[str]:
    if header is None:
        return ["header: none"]
    if "parse_error" in header:
        return [f"header: unparsable ({header['parse_error']})"]
    system = header["system"]
    strength = system["field_strength_T"]
    lines = [
        f"system: {system['vendor'] or '?'} {system['model'] or '?'}, "
        f"{'?' if strength is None else f'{strength:g}'} T, "
        f"{system['receiver_channels'] or '?'} receiver channels",
    ]
    if system["protocol_name"]:
        lines.append(f"protocol: {system['protocol_name']}")
    for number, enc in enumerate(header["encodings"]):
        lines.append(f"encoding {number}: trajectory {enc['trajectory'] or '?'}")
        for key in ("encoded_space", "recon_space"):
            space = enc[key]
            text = (
                "missing"
                if space is None
                else (f"{_fmt(space['matrix'])}, FOV {_fmt(space['fov_mm'], ' mm')}")
            )
            lines.append(f"  {key.replace('_', ' ')}: {text}")
        limits = ", ".join(
            f"{name} {lim['minimum']}..{lim['maximum']} (centre {lim['center']})"
            for name, lim in enc["limits"].items()
        )
        lines.append(f"  limits: {limits or '-'}")
        if enc["acceleration"]:
            mode = f", {enc['calibration_mode']}" if enc["calibration_mode"] else ""
            lines.append(f"  acceleration: {_fmt(enc['acceleration'])}{mode}")
    seq = header["sequence"]
    names = (("TR", "TR_ms", " ms"), ("TE", "TE_ms", " ms"), ("TI", "TI_ms", " ms"))
    parts = [f"{label} {_fmt(seq.get(key), unit, '/')}" for label, key, unit in names]
    parts.append(f"flip {_fmt(seq.get('flip_angle_deg'), ' deg', '/')}")
    lines.append("sequence: " + ", ".join(parts))
    return lines


def _section_lines(section: dict[str, Any]) -> list[str]:
    lines = [f"== {section['name']} =="]
    lines += _header_lines(section["header"])
    lines.append("messages: " + (", ".join(f"{k} {v}" for k, v in section["messages"].items())))
    acq = section["acquisitions"]
    if acq["count"]:
        counters = ", ".join(f"{k} {lo}..{hi}" for k, (lo, hi) in acq["counters"].items())
        lines += [
            f"acquisitions: {acq['count']}",
            f"  flags: {', '.join(f'{k} {v}' for k, v in acq['flags'].items()) or '-'}",
            f"  counters (non-noise): {counters or '-'}",
            f"  samples: {_counts(acq['samples'])}",
            f"  channels: {_counts(acq['channels'])}",
            f"  trajectory dims: {_counts(acq['trajectory_dimensions'])}",
        ]
    if section["waveforms"]["count"]:
        lines.append(
            f"waveforms: {section['waveforms']['count']}, ids "
            f"{_counts(section['waveforms']['ids'])}"
        )
    for series in section["images"]:
        lines.append(
            f"image series {series['series']}: {series['count']} images, shapes "
            f"{_counts(series['shapes'])}, {_counts(series['data_types'])}, "
            f"{_counts(series['image_types'])}"
        )
    for array in section["arrays"]:
        lines.append(f"array {array['name']}: shape {array['shape']}, {array['dtype']}")
    if section["stream_bytes"] is not None:
        state = "CLOSE received" if section["closed"] else "no CLOSE"
        lines.append(f"stream bytes: {section['stream_bytes']} ({state})")
    lines += [f"warning: {w}" for w in section["warnings"]]
    return lines


def format_text(result: dict[str, Any]) -> str:
    """The human-readable report of a :func:`collect` result."""
    size = "" if result["file_bytes"] is None else f", {result['file_bytes']} bytes"
    generation = FORMAT_NAMES.get(result.get("generation") or "")
    kind = f"{result['format']}, {generation}" if generation else result["format"]
    lines = [f"{result['path']}: {kind}{size}"]
    if result["format"] == "hdf5":
        lines.append("groups: " + ", ".join(repr(g) for g in result["groups"]))
    for section in result["sections"]:
        lines += _section_lines(section)
    return "\n".join(lines)


_PRINTERS: dict[bool, Callable[[dict[str, Any]], str]] = {
    True: lambda result: json.dumps(result, indent=2),
    False: format_text,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``parallel-recon info``."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        result = collect(args.input, args.group)
        print(_PRINTERS[args.json](result))
        sys.stdout.flush()
        if result["error"]:
            raise ReconError(result["error"])
        return EXIT_OK

    return run_command(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
