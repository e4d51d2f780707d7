"""Golden streams made by the ISMRMRD C++ tools: our ``mrdhdf5_to_stream`` reproduces them.

Every byte after the HEADER message must be equal; the HEADER's XML must parse to the same
ismrmrd header (the C++ tool re-serializes the XML, we pass the stored text through).
"""

from __future__ import annotations

import struct
from pathlib import Path

import h5py
import ismrmrd.xsd
import pytest

from tests.conftest import run_cli

# golden stream -> (HDF5 file relative to the shared data folder, extra arguments)
GOLDEN_SOURCES = {
    "phantom_m128_c8_noise.stream": ("golden/phantom_m128_c8_noise.h5", []),
    "sirf_grappa2_1rep.stream": ("sirf_grappa2_1rep.h5", []),
    "viewer_image_only.stream": (
        "viewer_image_only.h5",
        ["-g", "2019-05-09 15:16:46", "-s", "image_0"],
    ),
}
RECON_OUTPUTS = {"phantom_m128_c8_noise.cxx_recon.stream"}
"""Recon products, not adapter products: checked by a stream -> HDF5 -> stream round trip."""


def split_header(stream: bytes) -> tuple[str | None, bytes]:
    """(HEADER XML or None, the bytes after the HEADER message)."""
    (mid,) = struct.unpack_from("<H", stream)
    if mid != 3:
        return None, stream
    (length,) = struct.unpack_from("<I", stream, 2)
    return stream[6 : 6 + length].decode("utf-8"), stream[6 + length :]


def test_every_golden_stream_is_covered(golden: Path) -> None:
    found = {path.name for path in golden.glob("*.stream")}
    assert found == set(GOLDEN_SOURCES) | RECON_OUTPUTS


@pytest.mark.parametrize("name", sorted(GOLDEN_SOURCES))
def test_golden_stream_bytes_after_header(golden: Path, shared_data: Path, name: str) -> None:
    source, extra = GOLDEN_SOURCES[name]
    ours = run_cli("mrdhdf5_to_stream", "-i", str(shared_data / source), "--use-stdout", *extra)
    expected = (golden / name).read_bytes()
    our_xml, our_rest = split_header(ours.stdout)
    gold_xml, gold_rest = split_header(expected)
    assert len(our_rest) == len(gold_rest)
    assert our_rest == gold_rest
    assert (our_xml is None) == (gold_xml is None)
    if gold_xml is not None:
        assert our_xml is not None
        ours_parsed = ismrmrd.xsd.CreateFromDocument(our_xml)
        gold_parsed = ismrmrd.xsd.CreateFromDocument(gold_xml)
        assert ours_parsed.toXML() == gold_parsed.toXML()


@pytest.mark.parametrize("name", ["phantom_m128_c8_noise.stream", "sirf_grappa2_1rep.stream"])
def test_golden_header_is_the_stored_text(golden: Path, shared_data: Path, name: str) -> None:
    """Lossless: the HEADER carries the file's XML exactly, not a re-serialization."""
    source, extra = GOLDEN_SOURCES[name]
    ours = run_cli("mrdhdf5_to_stream", str(shared_data / source), *extra)
    with h5py.File(shared_data / source, "r") as handle:
        stored = handle["dataset/xml"][0].decode("utf-8")
    assert split_header(ours.stdout)[0] == stored


def test_cxx_recon_stream_survives_hdf5(golden: Path, tmp_path: Path) -> None:
    stream = (golden / "phantom_m128_c8_noise.cxx_recon.stream").read_bytes()
    out = tmp_path / "recon.h5"
    run_cli("stream_to_mrdhdf5", str(out), input=stream)
    back = run_cli("mrdhdf5_to_stream", "-i", str(out), "-s", "image_0", "--use-stdout")
    assert back.stdout == stream
