"""``parallel-recon convert`` and ``--format mrd2``: the MRD project's mapping, byte for byte.

1. The golden v1 streams (and the golden HDF5 file) convert to exactly the bytes of the
   ``.mrd2`` files the MRD project's ``ismrmrd_to_mrd.py`` wrote (../shared/data/mrd2).
2. v1 -> v2 -> v1 gives every message after the HEADER back byte for byte, and the header
   XML equal in content, except what the warnings name; each file's list of warnings and
   of the fields that differ is held here.  v2 -> v1 -> v2 of mrd-python's phantom: every
   value comes back; the bytes differ only where v2 had a field absent (v1 has no absent
   value), held here too.
"""

from __future__ import annotations

import contextlib
import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from parallel_recon.hdf5 import read_messages
from parallel_recon.protocol import (
    Header,
    Message,
    StreamReader,
    StreamWriter,
    encode_message,
    open_reader,
)
from tests.conftest import run_cli
from tests.mrd2_support import read_native

CONVERT = "parallel-recon"


def _convert(data: bytes, to: str) -> tuple[bytes, list[str]]:
    proc = run_cli(CONVERT, "convert", "-", "-", "--to", to, input=data)
    lines = proc.stderr.decode().splitlines()
    prefix = "parallel-recon convert: warning: "
    assert all(line.startswith(prefix) for line in lines), lines
    return proc.stdout, [line[len(prefix) :] for line in lines]


@pytest.mark.parametrize("name", ["phantom_m128_c8_noise", "sirf_grappa2_1rep"])
def test_golden_streams_convert_to_the_converters_bytes(shared_data: Path, name: str) -> None:
    v1 = (shared_data / "golden" / f"{name}.stream").read_bytes()
    expected = (shared_data / "mrd2" / f"{name}.mrd2").read_bytes()
    out, _ = _convert(v1, "mrd2")
    assert out == expected


def test_hdf5_converts_to_the_converters_bytes(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "phantom.mrd2"
    run_cli(
        CONVERT, "convert", str(shared_data / "golden/phantom_m128_c8_noise.h5"), str(out),
        "--to", "mrd2",
    )  # fmt: skip
    assert out.read_bytes() == (shared_data / "mrd2/phantom_m128_c8_noise.mrd2").read_bytes()
    proc = run_cli(
        "mrdhdf5_to_stream", "--format", "mrd2",
        str(shared_data / "golden/phantom_m128_c8_noise.h5"),
    )  # fmt: skip
    assert proc.stdout == out.read_bytes()


# ------------------------------------------------------------ v1 -> v2 -> v1
def _v1_stream(messages: list[Message]) -> bytes:
    sink = io.BytesIO()
    with StreamWriter(sink) as writer:
        writer.write_all(messages)
    return sink.getvalue()


def _golden(shared_data: Path, name: str) -> bytes:
    return (shared_data / "golden" / name).read_bytes()


def _from_hdf5(shared_data: Path, name: str, group: str, series: list[str] | None) -> bytes:
    return _v1_stream(list(read_messages(shared_data / name, group, series)))


DROPPED = "the MRD v2 mapping leaves {} out (not carried)"
ROUND_TRIPS = {
    # file: (how to get its v1 stream, warnings of v1 -> v2, fields that differ after)
    "phantom_m128_c8_noise": (
        lambda d: _golden(d, "phantom_m128_c8_noise.stream"),
        {DROPPED.format("acquisition sample_time_us")},
        {"ACQUISITION.sample_time_us"},
    ),
    "sirf_grappa2_1rep": (
        lambda d: _golden(d, "sirf_grappa2_1rep.stream"),
        {
            "the MRD v2 mapping leaves acquisition available_channels out (v1 reads it back "
            "as the active channels)"
        },
        {"ACQUISITION.available_channels"},
    ),
    "viewer_image_only": (
        lambda d: _golden(d, "viewer_image_only.stream"),
        {DROPPED.format("image acquisition_time_stamp")},
        {"IMAGE.acquisition_time_stamp"},
    ),
    "jemris_spiral_slc90": (  # a field strength of 0 is left out by the converter
        lambda d: _from_hdf5(d, "jemris_spiral_slc90.h5", "dataset", None),
        {
            DROPPED.format(
                "header acquisitionSystemInformation.systemFieldStrengthT (empty or zero)"
            )
        },
        {"HEADER acquisitionSystemInformation/systemFieldStrength_T"},
    ),
    "pulseq_zero_sample_readouts": (
        lambda d: _from_hdf5(d, "pulseq_zero_sample_readouts.h5", "dataset", None),
        {"MRD v2 has no acquisition header version: a version other than 1 is not carried"},
        {"ACQUISITION.version"},
    ),
    "koma_signal_352byte_header": (  # its XML nests userParameters in userParameters
        lambda d: _from_hdf5(d, "koma_signal_352byte_header.mrd", "dataset", None),
        {
            "MRD v2 has no acquisition header version: a version other than 1 is not carried",
            "the MRD v2 header requires measurementInformation.patientPosition, which the XML "
            "lacks: written with its default",
            DROPPED.format("acquisition acquisition_time_stamp"),
            DROPPED.format("acquisition sample_time_us"),
            DROPPED.format("header userParameters.userParameters"),
        },
        {
            "ACQUISITION.acquisition_time_stamp",
            "ACQUISITION.sample_time_us",
            "ACQUISITION.version",
            "HEADER measurementInformation/patientPosition",
            "HEADER userParameters",  # now empty
            *(
                f"HEADER userParameters/userParameters/userParameter{kind}/{leaf}"
                for kind in ("Double", "Long")
                for leaf in ("name", "value")
            ),
        },
    ),
    "prisma_3T_brain_images_int16": (
        lambda d: _from_hdf5(d, "prisma_3T_brain_images_int16.h5", "images", ["images_1"]),
        {
            "image_type 0 is not an MRD v2 image type (1..5): written as 1 (magnitude)",
            DROPPED.format("header measurementInformation.measurementDependency"),
            DROPPED.format("image acquisition_time_stamp"),
            DROPPED.format("image physiology_time_stamp"),
        },
        {
            "HEADER measurementInformation/measurementDependency/dependencyType",
            "HEADER measurementInformation/measurementDependency/measurementID",
            "IMAGE.acquisition_time_stamp",
            "IMAGE.image_type",
            "IMAGE.physiology_time_stamp",
        },
    ),
}


def _header_leaves(xml: str) -> dict[str, list[str]]:
    """path -> texts of every leaf element (numbers normalised as float32)."""
    out: dict[str, list[str]] = {}

    def walk(node: ET.Element, path: str) -> None:
        children = list(node)
        tag = node.tag.split("}")[-1]
        where = f"{path}/{tag}" if path else tag
        if not children:
            text = (node.text or "").strip()
            with contextlib.suppress(ValueError):
                text = repr(float(np.float32(float(text))))
            out.setdefault(where, []).append(text)
        for child in children:
            walk(child, where)

    for child in ET.fromstring(xml):
        walk(child, "")
    return out


def _differences(before: bytes, after: bytes) -> set[str]:
    """Which fields differ between two v1 streams: ``MESSAGE.field`` for header records,
    ``HEADER path`` for XML elements, ``IMAGE attributes`` for the meta text, ``NDARRAY
    (not carried)`` for messages that did not come back."""
    old, new = list(StreamReader(io.BytesIO(before))), list(StreamReader(io.BytesIO(after)))
    found: set[str] = set()
    if isinstance(old[0], Header):
        assert isinstance(new[0], Header)
        a, b = _header_leaves(old[0].xml), _header_leaves(new[0].xml)
        found |= {f"HEADER {p}" for p in set(a) | set(b) if a.get(p) != b.get(p)}
        old, new = old[1:], new[1:]
    lost = [m for m in old if type(m).__name__ == "NDArray"]
    if lost:
        found.add("NDARRAY (not carried)")
        old = [m for m in old if type(m).__name__ != "NDArray"]
    assert len(old) == len(new)
    for a, b in zip(old, new, strict=True):
        assert type(a) is type(b)
        kind = a.message_id.name
        if encode_message(a) == encode_message(b):
            continue
        head = a.head
        for field in head.dtype.names:
            if head[field].tobytes() != b.head[field].tobytes():
                found.add(f"{kind}.{field}")
        if getattr(a, "attributes", "") != getattr(b, "attributes", ""):
            found.add(f"{kind} attributes")
        for name in ("data", "traj"):
            if hasattr(a, name):
                assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), (kind, name)
    return found


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_v1_v2_v1_gives_the_input_back_but_what_the_warnings_name(
    shared_data: Path, name: str
) -> None:
    source, warnings, differ = ROUND_TRIPS[name]
    v1 = source(shared_data)
    v2, said = _convert(v1, "mrd2")
    assert set(said) == warnings
    assert len(said) == len(set(said)), "one warning per kind"
    back, _ = _convert(v2, "ismrmrd")
    assert _differences(v1, back) == differ


def test_v2_v1_v2_differs_only_where_v2_fields_were_absent(shared_data: Path) -> None:
    v2 = (shared_data / "mrd2/mrdpython_phantom_m64_c4_r2.mrd2").read_bytes()
    v1, said = _convert(v2, "ismrmrd")
    assert said == [
        "MRD v1 has no 'absent' value: absent optional fields of MRD v2 items are written as 0"
    ]
    again, _ = _convert(v1, "mrd2")
    before, after = read_native(v2), read_native(again)
    assert before[0] == after[0]  # the header model: equal
    assert len(before) == len(after)
    absent_now_zero = {
        *(f"idx.{c}" for c in ("kspaceEncodeStep1", "kspaceEncodeStep2", "average", "slice",
                               "contrast", "phase", "repetition", "set", "segment")),
        "discardPre", "discardPost", "encodingSpaceRef", "userInt", "userFloat",
    }  # fmt: skip
    changed: set[str] = set()
    for (tag, a), (tag2, b) in zip(before[1:], after[1:], strict=True):
        assert tag == tag2 == "Acquisition"
        assert np.array_equal(a["data"], b["data"])
        for key, value in _flat(a["head"]).items():
            other = _flat(b["head"])[key]
            if isinstance(value, np.ndarray):
                assert np.array_equal(value, other), key
            elif value != other:
                changed.add(key)
                assert value in (None, []) and other in (0, [0] * 8, [0.0] * 8), (key, other)
    assert changed == absent_now_zero


def _flat(record: dict[str, object], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_convert_copies_a_stream_already_in_the_wanted_generation(shared_data: Path) -> None:
    v2 = (shared_data / "mrd2/mrdpython_phantom_m64_c4_r2.mrd2").read_bytes()
    out, said = _convert(v2, "mrd2")
    assert out == v2
    assert said == ["the input is already MRD v2 (yardl): copied unchanged"]


def test_phantom_writes_mrd2_that_reads_back(tmp_path: Path) -> None:
    out = tmp_path / "p.mrd2"
    proc = run_cli("mrd_phantom", "-m", "16", "-c", "2", "--format", "mrd2", "-o", str(out))
    assert re.search(rb"warning: the MRD v2 mapping leaves", proc.stderr)
    with out.open("rb") as handle:
        reader = open_reader(handle)
        messages = list(reader)
    assert reader.generation == "mrd2" and isinstance(messages[0], Header)
    assert len(messages) == 1 + 16
