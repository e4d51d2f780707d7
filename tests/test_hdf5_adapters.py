"""The two HDF5 adapter commands: options, odd files, errors, appending, extra messages."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest

from parallel_recon.hdf5 import (
    MrdHdf5Writer,
    count_acquisitions,
    count_images,
    count_waveforms,
    list_groups,
    list_image_series,
    read_header_xml,
)
from parallel_recon.protocol import StreamReader, StreamWriter
from parallel_recon.protocol.layout import ACQUISITION_HEADER_DTYPE
from parallel_recon.protocol.messages import (
    Acquisition,
    ConfigFile,
    ConfigText,
    Header,
    Image,
    NDArray,
    Text,
)
from tests.conftest import run_cli, script

VIEWER_GROUP = "2019-05-09 15:16:46"


def _messages(stream: bytes) -> list:
    return list(StreamReader(io.BytesIO(stream)))


def _stream(*messages: object) -> bytes:
    out = io.BytesIO()
    with StreamWriter(out) as writer:
        for msg in messages:
            writer.write(msg)  # type: ignore[arg-type]
    return out.getvalue()


def _one_error_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    assert proc.returncode == 1
    text = proc.stderr.decode()
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# ------------------------------------------------------------------ mrdhdf5_to_stream options
def test_positional_form_equals_cxx_options(shared_data: Path, tmp_path: Path) -> None:
    source = str(shared_data / "sirf_grappa2_1rep.h5")
    positional = run_cli("mrdhdf5_to_stream", source).stdout
    via_stdout = run_cli("mrdhdf5_to_stream", "-i", source, "--use-stdout").stdout
    out = tmp_path / "s.bin"
    run_cli("mrdhdf5_to_stream", "-i", source, "-o", str(out))
    assert positional == via_stdout == out.read_bytes()
    messages = _messages(positional)
    assert type(messages[0]) is Header
    assert sum(type(m) is Acquisition for m in messages) == count_acquisitions(source)


def test_config_messages_come_first(shared_data: Path, tmp_path: Path) -> None:
    source = str(shared_data / "sirf_grappa2_1rep.h5")
    by_name = _messages(run_cli("mrdhdf5_to_stream", source, "-c", "default.xml").stdout)
    assert by_name[0] == ConfigFile("default.xml")
    assert type(by_name[1]) is Header
    config = tmp_path / "recon.xml"
    config.write_text("<config>\n  <step name='fft'/>\n</config>\n")
    by_text = _messages(run_cli("mrdhdf5_to_stream", source, "-C", str(config)).stdout)
    assert by_text[0] == ConfigText(config.read_text())
    assert type(by_text[1]) is Header
    assert by_text[2:] == by_name[2:]


def test_several_image_series(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "viewer_image_only.h5"
    once = _messages(
        run_cli("mrdhdf5_to_stream", str(source), "-g", VIEWER_GROUP, "-s", "image_0").stdout
    )
    twice = _messages(
        run_cli(
            "mrdhdf5_to_stream", str(source), "-g", VIEWER_GROUP, "-s", "image_0", "image_0"
        ).stdout
    )
    assert len(once) == 1 and type(once[0]) is Image
    assert twice == once + once


def test_koma_352_byte_header_read_by_field_names(shared_data: Path) -> None:
    source = shared_data / "koma_signal_352byte_header.mrd"
    streamed = [m for m in _messages(run_cli("mrdhdf5_to_stream", str(source)).stdout)]
    acquisitions = [m for m in streamed if type(m) is Acquisition]
    with h5py.File(source, "r") as handle:
        rows = handle["dataset/data"][()]
    assert rows.dtype["head"].itemsize == 352
    assert len(acquisitions) == len(rows) > 0
    for acq, row in zip(acquisitions, rows, strict=True):
        for name in ACQUISITION_HEADER_DTYPE.names or ():
            np.testing.assert_array_equal(acq.head[name], row["head"][name], err_msg=name)
        np.testing.assert_array_equal(acq.data.view(np.float32).ravel(), row["data"])
        np.testing.assert_array_equal(acq.traj.ravel(), row["traj"])


def test_acquisition_header_missing_fields_refused(shared_data: Path, tmp_path: Path) -> None:
    names = [n for n in ACQUISITION_HEADER_DTYPE.names or () if n not in ("user_float", "idx")]
    short_head = np.dtype([(n, ACQUISITION_HEADER_DTYPE.fields[n][0]) for n in names])  # type: ignore[index]
    vlen = h5py.vlen_dtype(np.dtype("<f4"))
    rows = np.zeros(2, [("head", short_head), ("traj", vlen), ("data", vlen)])
    for row in rows:
        row["traj"] = np.zeros(0, np.float32)
        row["data"] = np.zeros(0, np.float32)
    path = tmp_path / "short.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("dataset/data", data=rows)
        handle.create_dataset(
            "dataset/xml",
            data=np.array([b"<ismrmrdHeader/>"], dtype=object),
            dtype=h5py.special_dtype(vlen=bytes),
        )
    line = _one_error_line(run_cli("mrdhdf5_to_stream", str(path), check=False))
    assert "idx" in line and "user_float" in line and "lacks" in line


# -------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["{missing}"], "no such file"),
        (["{data}/README.md"], "not an HDF5 file"),
        (["{data}/viewer_image_only.h5"], "groups in the file: '2019-05-09 15:16:46'"),
        (["{data}/sirf_grappa2_1rep.h5", "-g", "nope"], "groups in the file: 'dataset'"),
        (
            ["{data}/viewer_image_only.h5", "-g", VIEWER_GROUP, "-s", "image_7"],
            "image series found: 'image_0'",
        ),
        (["{data}/sirf_grappa2_1rep.h5", "-s", "image_0"], "image series found: none"),
        (["{data}/sirf_grappa2_1rep.h5", "-c", "a", "-C", "b"], "not both"),
        (["{data}/sirf_grappa2_1rep.h5", "-C", "{missing}"], "cannot read config text file"),
        (["-i", "{data}/sirf_grappa2_1rep.h5", "-o", "x", "--use-stdout"], "not both"),
        ([], "expected an input HDF5 file"),
    ],
)
def test_to_stream_errors(
    shared_data: Path, tmp_path: Path, args: list[str], expected: str
) -> None:
    filled = [a.format(data=shared_data, missing=tmp_path / "missing.h5") for a in args]
    proc = run_cli("mrdhdf5_to_stream", *filled, check=False)
    line = _one_error_line(proc)
    assert line.startswith("mrdhdf5_to_stream: error:")
    assert expected in line
    assert proc.stdout == b""


def test_to_hdf5_missing_input(tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    proc = run_cli(
        "stream_to_mrdhdf5", "-i", str(tmp_path / "none.bin"), "-o", str(out), check=False
    )
    assert "cannot open input" in _one_error_line(proc)
    assert not out.exists()


def test_to_hdf5_refuses_non_hdf5_output(tmp_path: Path) -> None:
    out = tmp_path / "notes.txt"
    out.write_text("keep me")
    proc = run_cli("stream_to_mrdhdf5", str(out), input=_stream(Text("hi")), check=False)
    assert "not an HDF5 file" in _one_error_line(proc)
    assert out.read_text() == "keep me"


def test_truncated_stream_keeps_what_was_received(shared_data: Path, tmp_path: Path) -> None:
    stream = run_cli("mrdhdf5_to_stream", str(shared_data / "sirf_grappa2_1rep.h5")).stdout
    complete = _messages(stream)
    cut = stream[: len(stream) - 2 - 1000]  # drop CLOSE and part of the last acquisition
    out = tmp_path / "partial.h5"
    proc = run_cli("stream_to_mrdhdf5", str(out), input=cut, check=False)
    line = _one_error_line(proc)
    assert "truncated" in line and "byte offset" in line
    received = sum(type(m) is Acquisition for m in complete) - 1
    assert count_acquisitions(out) == received
    assert read_header_xml(out) == complete[0].xml


def test_stream_without_close_is_an_error(tmp_path: Path) -> None:
    data = _stream(Header("<ismrmrdHeader/>"))[:-2]
    proc = run_cli("stream_to_mrdhdf5", str(tmp_path / "o.h5"), input=data, check=False)
    assert "expected a CLOSE message" in _one_error_line(proc)


def test_data_after_close_is_ignored_with_a_warning(tmp_path: Path) -> None:
    """Every command stops reading at CLOSE and warns about what follows (exit 0)."""
    body = _stream(Header("<ismrmrdHeader/>"))
    out = tmp_path / "o.h5"
    proc = run_cli("stream_to_mrdhdf5", str(out), input=body + b"\x04\x00\x05\x00")
    line = proc.stderr.decode().strip()
    assert line.startswith("stream_to_mrdhdf5: warning:") and "\n" not in line
    assert f"after the CLOSE message (at byte offset {len(body)}" in line
    assert read_header_xml(out) == "<ismrmrdHeader/>"


# ----------------------------------------------------------------------- stream_to_mrdhdf5
def test_to_hdf5_options_are_equivalent(shared_data: Path, tmp_path: Path) -> None:
    stream = run_cli("mrdhdf5_to_stream", str(shared_data / "sirf_grappa2_1rep.h5")).stdout
    source = tmp_path / "in.bin"
    source.write_bytes(stream)
    outputs = [tmp_path / f"{i}.h5" for i in range(3)]
    run_cli("stream_to_mrdhdf5", str(outputs[0]), input=stream)
    run_cli("stream_to_mrdhdf5", "--use-stdin", "-o", str(outputs[1]), input=stream)
    run_cli("stream_to_mrdhdf5", "-i", str(source), "-o", str(outputs[2]), "-g", "copy")
    groups = ["dataset", "dataset", "copy"]
    streams = {
        run_cli("mrdhdf5_to_stream", str(path), "-g", group).stdout
        for path, group in zip(outputs, groups, strict=True)
    }
    assert streams == {stream}
    assert list_groups(outputs[2]) == ["copy"]


def test_append_keeps_existing_content(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "both.h5"
    raw = run_cli("mrdhdf5_to_stream", str(shared_data / "sirf_grappa2_1rep.h5")).stdout
    images = run_cli(
        "mrdhdf5_to_stream",
        str(shared_data / "viewer_image_only.h5"),
        "-g",
        VIEWER_GROUP,
        "-s",
        "image_0",
    ).stdout
    run_cli("stream_to_mrdhdf5", str(out), input=raw)
    run_cli("stream_to_mrdhdf5", str(out), input=images)
    run_cli("stream_to_mrdhdf5", str(out), input=images)
    run_cli("stream_to_mrdhdf5", str(out), "-g", "other", input=raw)
    assert sorted(list_groups(out)) == ["dataset", "other"]
    assert count_acquisitions(out) == 143
    assert count_images(out, "dataset", "image_0") == 2
    assert list_image_series(out, "dataset") == ["image_0"]
    assert run_cli("mrdhdf5_to_stream", str(out)).stdout == raw
    assert run_cli("mrdhdf5_to_stream", str(out), "-g", "other").stdout == raw
    assert count_waveforms(out) == 0


def test_image_of_another_shape_in_same_series_is_refused(tmp_path: Path) -> None:
    first = Image.from_array(np.zeros((1, 1, 4, 4), np.float32))
    second = Image.from_array(np.zeros((1, 1, 8, 4), np.float32))
    out = tmp_path / "o.h5"
    line = _one_error_line(
        run_cli("stream_to_mrdhdf5", str(out), input=_stream(first, second), check=False)
    )
    assert "(1, 1, 4, 4)" in line and "(1, 1, 8, 4)" in line
    assert count_images(out, "dataset", "image_0") == 1


def test_ndarrays_config_and_text_are_kept(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.complex64).reshape(2, 3, 4)
    stream = _stream(
        ConfigFile("recon.xml"),
        ConfigText("<config/>"),
        Header("<ismrmrdHeader/>"),
        Text("hello from the scanner"),
        NDArray(array, version=0),
        NDArray(array + 1, version=0),
        NDArray(np.arange(5, dtype=np.int16), version=2),
    )
    out = tmp_path / "o.h5"
    proc = run_cli("stream_to_mrdhdf5", str(out), input=stream)
    assert proc.stderr.decode().strip() == "TEXT MESSAGE: hello from the scanner"
    with h5py.File(out, "r") as handle:
        group = handle["dataset"]
        assert [v.decode() for v in group["config_file"][()]] == ["recon.xml"]
        assert [v.decode() for v in group["config_text"][()]] == ["<config/>"]
        assert [v.decode() for v in group["text"][()]] == ["hello from the scanner"]
        stored = group["array_ver_0_dim_4_3_2_datatype_7"]
        assert stored.shape == (2, 2, 3, 4)
        assert stored.dtype.names == ("real", "imag")
        np.testing.assert_array_equal(stored["real"][1], (array + 1).real)
        np.testing.assert_array_equal(stored["imag"][0], array.imag)
        np.testing.assert_array_equal(group["array_ver_2_dim_5_datatype_2"][0], np.arange(5))


def test_all_image_data_types_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    images = []
    for series, dtype in enumerate(["<u2", "<i2", "<u4", "<i4", "<f4", "<f8", "<c8", "<c16"]):
        values = rng.standard_normal((2, 1, 3, 5)) * 100
        if np.dtype(dtype).kind == "c":
            values = values + 1j * rng.standard_normal(values.shape)
        meta = f"<ismrmrdMeta><meta><name>series</name><value>{series}</value></meta></ismrmrdMeta>"
        image = Image.from_array(values.astype(dtype), attributes=meta)
        image.head["image_series_index"] = series
        image.head["image_index"] = 1
        images.append(image)
    out = tmp_path / "o.h5"
    with MrdHdf5Writer(out) as writer:
        writer.write_all(images)
    series_names = [f"image_{i}" for i in range(8)]
    with ismrmrd.Dataset(str(out), "dataset", create_if_needed=False) as oracle:
        assert sorted(oracle.list()) == series_names
        for series, image in enumerate(images):
            assert oracle.number_of_images(f"image_{series}") == 1
            found = oracle.read_image(f"image_{series}", 0)
            assert bytes(found.getHead()) == image.head.tobytes()  # data_type included
            np.testing.assert_array_equal(found.data, image.data)
            assert dict(found.meta) == {"series": str(series)}
    # ismrmrd-python holds int32 pixels as int64 in memory (np.dtype('int')): the stored
    # element type is checked in the file itself
    with h5py.File(out, "r") as handle:
        for series, image in enumerate(images):
            stored = handle[f"dataset/image_{series}/data"].dtype
            expected = image.data.dtype
            if expected.kind == "c":  # ISMRMRD stores complex pixels as (real, imag) pairs
                part = np.dtype(f"<f{expected.itemsize // 2}")
                expected = np.dtype([("real", part), ("imag", part)])
            assert stored == expected, (series, stored)


def test_progress_only_when_asked(shared_data: Path, tmp_path: Path) -> None:
    source = str(shared_data / "sirf_grappa2_1rep.h5")
    quiet = run_cli("mrdhdf5_to_stream", source)
    loud = run_cli("mrdhdf5_to_stream", source, "--progress")
    assert quiet.stderr == b""
    assert loud.stdout == quiet.stdout
    assert "mrdhdf5_to_stream: 143/143 messages" in loud.stderr.decode()
    out = tmp_path / "o.h5"
    quiet_in = run_cli("stream_to_mrdhdf5", str(out), input=quiet.stdout)
    loud_in = run_cli("stream_to_mrdhdf5", str(tmp_path / "p.h5"), "--progress", input=quiet.stdout)
    assert quiet_in.stderr == b""
    assert "stream_to_mrdhdf5: 144 messages" in loud_in.stderr.decode()


def test_broken_pipe_is_quiet(shared_data: Path) -> None:
    """A reader that stops after 10 bytes (``| head -c 10``): the writer exits with 141
    (128 + SIGPIPE, as the shell reports for ``cat``) and says nothing."""
    source = shared_data / "golden/phantom_m128_c8_noise.h5"
    proc = subprocess.Popen(
        [script("mrdhdf5_to_stream"), str(source)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    head = proc.stdout.read(10)
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141, stderr.decode(errors="replace")
    assert (len(head), stderr) == (10, b"")
