"""``parallel-recon info``: counts checked against ismrmrd-python (and h5py for the padded file)."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import h5py
import ismrmrd
import numpy as np
import pytest
from conftest import run_cli, shared_data_dir

from parallel_recon.protocol import (
    Acquisition,
    Header,
    Image,
    StreamWriter,
    Waveform,
    new_acquisition_head,
    new_image_head,
    new_waveform_head,
)

SHARED = shared_data_dir()
HDF5_FILES = sorted(
    [*SHARED.glob("*.h5"), *SHARED.glob("*.mrd"), *(SHARED / "golden").glob("*.h5")]
)
STREAMS = sorted((SHARED / "golden").glob("*.stream"))
PADDED = SHARED / "koma_signal_352byte_header.mrd"

FLAG_NAMES = {
    getattr(ismrmrd, name): name[4:].lower() for name in dir(ismrmrd) if name.startswith("ACQ_")
}
IMAGE_TYPES = {
    getattr(ismrmrd, name): name[7:].lower() for name in dir(ismrmrd) if name.startswith("IMTYPE_")
}
SECTION_KEYS = {
    "name", "header", "messages", "acquisitions", "waveforms", "images", "arrays",
    "stream_bytes", "closed", "warnings", "error",
}  # fmt: skip
TOP_KEYS = {"path", "format", "generation", "file_bytes", "groups", "sections", "warnings", "error"}


def info_json(*args: str, input: bytes | None = None, check: bool = True) -> dict[str, Any]:
    proc = run_cli("parallel-recon", "info", "--json", *args, input=input, check=check)
    assert b"Traceback" not in proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    assert set(result) == TOP_KEYS
    for section in result["sections"]:
        assert set(section) == SECTION_KEYS
    return result


# ----------------------------------------------------------------- oracle side
class Expected:
    """What ismrmrd-python (or h5py) sees in one group or stream."""

    def __init__(self) -> None:
        self.messages: Counter[str] = Counter()
        self.flags: Counter[str] = Counter()
        self.samples: Counter[str] = Counter()
        self.channels: Counter[str] = Counter()
        self.traj: Counter[str] = Counter()
        self.counters: dict[str, list[int]] = {}
        self.waveform_ids: Counter[str] = Counter()
        self.images: dict[str, dict[str, Counter[str]]] = {}

    def acquisition(self, flags: int, samples: int, channels: int, traj: int, idx: Any) -> None:
        self.messages["ACQUISITION"] += 1
        for bit in range(64):
            if flags >> bit & 1:
                self.flags[FLAG_NAMES.get(bit + 1, f"bit_{bit + 1}")] += 1
        self.samples[str(samples)] += 1
        self.channels[str(channels)] += 1
        self.traj[str(traj)] += 1
        if flags & (1 << (ismrmrd.ACQ_IS_NOISE_MEASUREMENT - 1)):
            return
        for name in ("kspace_encode_step_1", "kspace_encode_step_2", "slice", "contrast",
                     "phase", "set", "repetition", "average"):  # fmt: skip
            value = int(idx(name))
            low, high = self.counters.get(name, [value, value])
            self.counters[name] = [min(low, value), max(high, value)]

    def image(self, series: str, image: ismrmrd.Image) -> None:
        self.messages["IMAGE"] += 1
        entry = self.images.setdefault(
            series, {"types": Counter(), "dtypes": Counter(), "shapes": Counter()}
        )
        entry["types"][IMAGE_TYPES.get(image.image_type, f"invalid({image.image_type})")] += 1
        entry["dtypes"][image.data.dtype.name] += 1
        entry["shapes"]["x".join(str(n) for n in image.data.shape)] += 1

    def check(self, section: dict[str, Any]) -> None:
        got = {k: v for k, v in section["messages"].items() if k != "CLOSE"}
        assert got == dict(self.messages)
        acq = section["acquisitions"]
        assert acq["count"] == self.messages["ACQUISITION"]
        assert acq["flags"] == dict(self.flags)
        assert acq["samples"] == dict(self.samples)
        assert acq["channels"] == dict(self.channels)
        assert acq["trajectory_dimensions"] == dict(self.traj)
        assert acq["zero_sample"] == self.samples.get("0", 0)
        for name, span in self.counters.items():
            assert acq["counters"][name] == span, name
        assert section["waveforms"]["ids"] == dict(self.waveform_ids)
        series = {s["series"]: s for s in section["images"]}
        assert set(series) == set(self.images)
        for name, entry in self.images.items():
            assert series[name]["count"] == sum(entry["types"].values())
            assert series[name]["image_types"] == dict(entry["types"])
            assert series[name]["data_types"] == dict(entry["dtypes"])
            assert series[name]["shapes"] == dict(entry["shapes"])


def expected_from_dataset(path: Path, group: str) -> Expected:
    expected = Expected()
    with ismrmrd.Dataset(str(path), group, mode="r") as ds:
        names = list(ds.list())
        if "xml" in names:
            expected.messages["HEADER"] += 1
        for name in names:
            if name == "data":
                for i in range(ds.number_of_acquisitions()):
                    a = ds.read_acquisition(i)
                    expected.acquisition(
                        a.flags, a.number_of_samples, a.active_channels,
                        a.trajectory_dimensions, lambda n, a=a: getattr(a.idx, n),
                    )  # fmt: skip
            elif name == "waveforms":
                for i in range(ds.number_of_waveforms()):
                    expected.messages["WAVEFORM"] += 1
                    expected.waveform_ids[str(ds.read_waveform(i).waveform_id)] += 1
            elif name != "xml":
                try:
                    count = ds.number_of_images(name)
                except (KeyError, LookupError, ValueError):
                    expected.messages["NDARRAY"] += ds.number_of_arrays(name)
                    continue
                for i in range(count):
                    expected.image(name, ds.read_image(name, i))
    return expected


def expected_from_stream(data: bytes) -> Expected:
    expected = Expected()
    with ismrmrd.ProtocolDeserializer(io.BytesIO(data)) as reader:
        for item in reader.deserialize():
            if isinstance(item, ismrmrd.Acquisition):
                expected.acquisition(
                    item.flags, item.number_of_samples, item.active_channels,
                    item.trajectory_dimensions, lambda n, a=item: getattr(a.idx, n),
                )  # fmt: skip
            elif isinstance(item, ismrmrd.Image):
                expected.image(str(item.image_series_index), item)
            elif isinstance(item, ismrmrd.Waveform):
                expected.messages["WAVEFORM"] += 1
                expected.waveform_ids[str(item.waveform_id)] += 1
            elif isinstance(item, ismrmrd.xsd.ismrmrdHeader):
                expected.messages["HEADER"] += 1
            else:
                expected.messages[type(item).__name__.upper()] += 1
    return expected


def expected_from_h5py(path: Path) -> Expected:
    """For the padded-header file that ismrmrd-python cannot read: plain h5py field reads."""
    expected = Expected()
    with h5py.File(path, "r") as handle:
        expected.messages["HEADER"] += 1
        heads = handle["dataset/data"]["head"]
        for head in heads:
            expected.acquisition(
                int(head["flags"]), int(head["number_of_samples"]), int(head["active_channels"]),
                int(head["trajectory_dimensions"]), lambda n, h=head: h["idx"][n],
            )  # fmt: skip
    return expected


# ---------------------------------------------------------------------- tests
@pytest.mark.parametrize("path", HDF5_FILES, ids=lambda p: p.name)
def test_info_hdf5_counts_match_oracle(path: Path) -> None:
    result = info_json(str(path))
    assert result["format"] == "hdf5"
    assert result["file_bytes"] == path.stat().st_size
    assert result["error"] is None
    with h5py.File(path, "r") as handle:
        assert result["groups"] == list(handle.keys())
    for section in result["sections"]:
        if path == PADDED:
            expected = expected_from_h5py(path)
        else:
            expected = expected_from_dataset(path, section["name"])
        expected.check(section)
    text = run_cli("parallel-recon", "info", str(path))
    assert b"Traceback" not in text.stderr
    for section in result["sections"]:
        for name, count in section["messages"].items():
            assert f"{name} {count}".encode() in text.stdout


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.name)
def test_info_stream_counts_match_oracle(path: Path) -> None:
    data = path.read_bytes()
    result = info_json(str(path))
    assert result["format"] == "stream"
    (section,) = result["sections"]
    assert section["stream_bytes"] == len(data)
    assert section["closed"] is True
    assert section["messages"]["CLOSE"] == 1
    expected_from_stream(data).check(section)
    piped = info_json("-", input=data)
    assert piped["sections"] == result["sections"]
    assert piped["file_bytes"] is None


def test_info_padded_header_is_read_by_name_and_warned() -> None:
    result = info_json(str(PADDED))
    (section,) = result["sections"]
    assert any("352 bytes" in w and "non-standard" in w for w in section["warnings"])
    with h5py.File(PADDED, "r") as handle:
        e1 = handle["dataset/data"]["head"]["idx"]["kspace_encode_step_1"]
    assert section["acquisitions"]["counters"]["kspace_encode_step_1"] == [e1.min(), e1.max()]


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("pulseq_zero_sample_readouts.h5", "0 samples"),
        ("prisma_3T_brain_images_int16.h5", "image_type 0"),
    ],
)
def test_info_warns_about_real_file_problems(name: str, needle: str) -> None:
    result = info_json(str(SHARED / name))
    assert any(needle in w for w in result["warnings"]), result["warnings"]


RECON_SPACE = (
    "<reconSpace><matrixSize><x>4</x><y>4</y><z>1</z></matrixSize><fieldOfView_mm><x>100</x>"
    "<y>100</y><z>5</z></fieldOfView_mm></reconSpace>"
)


def _synthetic_stream(close: bool = True, recon_space: str = RECON_SPACE) -> bytes:
    xml = (
        '<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
        "<acquisitionSystemInformation><receiverChannels>2</receiverChannels>"
        "</acquisitionSystemInformation><experimentalConditions><H1resonanceFrequency_Hz>"
        "63500000</H1resonanceFrequency_Hz></experimentalConditions><encoding><encodedSpace><matrixSize><x>8</x><y>4</y>"
        "<z>1</z></matrixSize><fieldOfView_mm><x>100</x><y>100</y><z>5</z></fieldOfView_mm>"
        f"</encodedSpace>{recon_space}<encodingLimits><kspace_encoding_step_1><minimum>0</minimum>"
        "<maximum>3</maximum><center>2</center></kspace_encoding_step_1></encodingLimits>"
        "<trajectory>cartesian</trajectory></encoding></ismrmrdHeader>"
    )
    sink = io.BytesIO()
    writer = StreamWriter(sink)
    writer.write(Header(xml))
    rng = np.random.default_rng(1)
    for step in range(6):  # steps 4 and 5 exceed the header's limit of 3
        head = new_acquisition_head()
        head["idx"]["kspace_encode_step_1"] = step
        head["flags"] = 1 << 21 if step == 5 else 0  # IS_REVERSE
        data = (rng.standard_normal((2, 8)) + 1j).astype(np.complex64)
        writer.write(Acquisition.from_arrays(data, head=head))
    for waveform_id in (0, 0, 3):
        head = new_waveform_head()
        head["waveform_id"] = waveform_id
        writer.write(Waveform.from_array(np.ones((1, 5), np.uint32), head=head))
    for series, dtype, image_type in ((1, np.int16, 0), (2, np.complex64, 2)):
        head = new_image_head()
        head["image_series_index"], head["image_type"] = series, image_type
        writer.write(Image.from_array(np.ones((2, 3, 4, 5), dtype), head=head))
    if close:
        writer.close()
    writer.flush()
    return sink.getvalue()


def test_info_synthetic_stream_counts_and_warnings(tmp_path: Path) -> None:
    data = _synthetic_stream()
    path = tmp_path / "synthetic.bin"
    path.write_bytes(data)
    result = info_json(str(path))
    (section,) = result["sections"]
    expected_from_stream(data).check(section)
    assert section["waveforms"]["ids"] == {"0": 2, "3": 1}
    assert section["acquisitions"]["flags"] == {"is_reverse": 1}
    warnings = " | ".join(section["warnings"])
    assert "kspace_encode_step_1 in the data spans 0..5" in warnings
    assert "image_type 0" in warnings
    assert "reconSpace" not in warnings
    without = info_json("-", input=_synthetic_stream(recon_space=""))
    assert any("no <reconSpace>" in w for w in without["warnings"])
    shapes = {s["series"]: s["shapes"] for s in section["images"]}
    assert shapes == {"1": {"2x3x4x5": 1}, "2": {"2x3x4x5": 1}}


def test_info_stream_without_close_is_a_warning(tmp_path: Path) -> None:
    data = _synthetic_stream(close=False)
    result = info_json("-", input=data)
    (section,) = result["sections"]
    assert section["closed"] is False
    assert any("without a CLOSE" in w for w in section["warnings"])
    assert section["messages"]["ACQUISITION"] == 6


def test_info_truncated_stream_reports_what_was_read(golden: Path) -> None:
    data = (golden / "phantom_m128_c8_noise.stream").read_bytes()
    with ismrmrd.ProtocolDeserializer(io.BytesIO(data)) as reader:
        items = list(reader.deserialize())
    # cut inside the 11th acquisition: header + 10 whole acquisitions survive
    acq_bytes = 2 + 340 + 8 * 256 * 8  # id + header + 8 coils x 256 complex64 samples
    header_end = len(data) - 2 - 129 * acq_bytes
    cut = header_end + 10 * acq_bytes + 100
    proc = run_cli("parallel-recon", "info", "--json", "-", input=data[:cut], check=False)
    assert proc.returncode == 1
    assert b"Traceback" not in proc.stderr
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "truncated" in lines[0] and "byte offset" in lines[0]
    result = json.loads(proc.stdout)
    (section,) = result["sections"]
    assert section["messages"] == {"HEADER": 1, "ACQUISITION": 10}
    assert len(items) == 130  # the oracle agrees the full stream holds 1 + 129 messages
    assert result["error"] and "truncated" in result["error"]


def test_info_garbage_and_missing_input(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x99\x99" + bytes(100))
    for args in ([str(garbage)], [str(tmp_path / "missing.h5")]):
        proc = run_cli("parallel-recon", "info", *args, check=False)
        assert proc.returncode == 1
        assert b"Traceback" not in proc.stderr
        assert len(proc.stderr.decode().strip().splitlines()) == 1
    not_mrd = tmp_path / "plain.h5"
    with h5py.File(not_mrd, "w") as handle:
        handle["numbers"] = np.arange(3)
    proc = run_cli("parallel-recon", "info", str(not_mrd), check=False)
    assert proc.returncode == 1 and b"no ISMRMRD group" in proc.stderr
    sirf = str(shared_data_dir() / "sirf_grappa2_1rep.h5")
    proc = run_cli("parallel-recon", "info", sirf, "-g", "nope", check=False)
    assert proc.returncode == 1 and b"group 'nope' not found" in proc.stderr
    assert b"Traceback" not in proc.stderr


def test_info_several_groups(tmp_path: Path, shared_data: Path) -> None:
    path = tmp_path / "two_groups.h5"
    with ismrmrd.Dataset(str(shared_data / "sirf_grappa2_1rep.h5"), "dataset", mode="r") as src:
        acquisitions = [src.read_acquisition(i) for i in range(5)]
        header = src.read_xml_header()
    with ismrmrd.Dataset(str(path), "first", create_if_needed=True) as ds:
        ds.write_xml_header(header)
        for acq in acquisitions:
            ds.append_acquisition(acq)
    with ismrmrd.Dataset(str(path), "second", create_if_needed=True) as ds:
        image = ismrmrd.Image.from_array(np.ones((4, 6), np.float32))
        image.image_series_index = 7
        ds.append_image("image_7", image)
        ds.append_image("image_7", image)
        for waveform_id in (4, 4, 0):
            waveform = ismrmrd.Waveform.from_array(np.ones((2, 5), np.uint32))
            waveform.waveform_id = waveform_id
            ds.append_waveform(waveform)
    result = info_json(str(path))
    assert result["groups"] == ["first", "second"]
    first, second = result["sections"]
    expected_from_dataset(path, "first").check(first)
    expected_from_dataset(path, "second").check(second)
    only = info_json(str(path), "-g", "second")
    assert [s["name"] for s in only["sections"]] == ["second"]
    assert only["sections"][0]["images"][0]["count"] == 2
    assert only["sections"][0]["waveforms"] == {"count": 3, "ids": {"0": 1, "4": 2}}
