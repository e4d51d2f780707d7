"""The standalone C++ recon (workers/cpp): built by make, equal to the Python recon.

The binary is built with ``make -C workers/cpp`` before the tests use it, every time (make
does nothing when it is up to date, and rebuilds after an edit of the sources, so the tests
never run a stale binary; a failed build fails the tests).  Images are checked against a
plain numpy reconstruction written here, against the Python recon (relative error < 1e-5,
image headers field by field), and the output is read back by our StreamReader and by
ismrmrd-python.
"""

from __future__ import annotations

import io
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
from conftest import REPO_ROOT, close_after_reading, run_cli

from parallel_recon.protocol import (
    IMAGE_HEADER_DTYPE,
    Acquisition,
    AcquisitionFlag,
    Close,
    ConfigFile,
    Header,
    Image,
    NDArray,
    StreamReader,
    StreamWriter,
    Text,
    Waveform,
    encode_message,
    has_flag,
    new_image_head,
)

CPP_DIR = REPO_ROOT / "workers" / "cpp"
CPP_BINARY = CPP_DIR / "build" / "mrd_stream_recon_cpp"
PROG = "mrd_stream_recon_cpp"
TOLERANCE = 1e-5

_SLICE_LIMITS = "<slice><minimum>0</minimum><maximum>{top}</maximum><center>0</center></slice>"


def make_cpp(*variables: str) -> subprocess.CompletedProcess[str]:
    """``make -C workers/cpp`` with ``VAR=value`` overrides; stdout and stderr captured."""
    return subprocess.run(
        ["make", "-C", str(CPP_DIR), *variables],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def build_cpp() -> Path:
    """The binary, brought up to date by make (a no-op when it is); fails loudly when make
    does, so a test never runs a binary older than the sources."""
    proc = make_cpp()
    if proc.returncode != 0 or not CPP_BINARY.exists():
        raise AssertionError(f"make -C workers/cpp failed:\n{proc.stdout}\n{proc.stderr}")
    return CPP_BINARY


@pytest.fixture(scope="session")
def cpp_binary() -> Path:
    return build_cpp()


NO_PREWHITENING = ("--recon-option", "prewhiten=off")
"""For comparisons with references that do not whiten the coil noise (numpy, the C++ tool)."""


def run_cpp(
    binary: Path, stream: bytes, check: bool = True, args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(
        [str(binary), *args], input=stream, capture_output=True, timeout=60, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{PROG} exited {proc.returncode}: {proc.stderr.decode()}")
    return proc


def read_all(data: bytes) -> list:
    return list(StreamReader(io.BytesIO(data)))


def images_of(data: bytes) -> list[Image]:
    return [m for m in read_all(data) if isinstance(m, Image)]


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ----------------------------------------------------------------- test streams
def golden_messages(golden: Path) -> tuple[Header, list[Acquisition]]:
    msgs = read_all((golden / "phantom_m128_c8_noise.stream").read_bytes())
    header = next(m for m in msgs if isinstance(m, Header))
    return header, [m for m in msgs if isinstance(m, Acquisition)]


def multislice_stream(golden: Path, slices: int = 3, repetitions: int = 2) -> bytes:
    """An interleaved multi-slice, multi-repetition stream made with our writer.

    Every slice gets its own geometry, scale and time stamps; slice 1 repeats its centre line
    as a second average, and one line per slice arrives reversed (IS_REVERSE).  A TEXT
    message and a CONFIG_FILE precede the header.
    """
    header, acqs = golden_messages(golden)
    limits = _SLICE_LIMITS.format(top=slices - 1)
    xml = header.xml.replace("</kspace_encoding_step_1>", "</kspace_encoding_step_1>" + limits, 1)
    xml = re.sub(
        r"(<repetition>\s*<minimum>0</minimum>\s*<maximum>)0(</maximum>)",
        rf"\g<1>{repetitions - 1}\g<2>",
        xml,
    )
    ismrmrd.xsd.CreateFromDocument(xml)  # still valid ismrmrd.xsd
    noise = [a for a in acqs if has_flag(a.head["flags"], AcquisitionFlag.IS_NOISE_MEASUREMENT)]
    lines = [a for a in acqs if a not in noise]
    order = [s for s in range(0, slices, 2)] + [s for s in range(1, slices, 2)]
    sink = io.BytesIO()
    stamp = 1000
    with StreamWriter(sink) as writer:
        writer.write(ConfigFile("cartesian"))
        writer.write(Text("multi-slice test stream"))
        writer.write(Header(xml))
        writer.write_all(noise)
        for rep in range(repetitions):
            for i, line in enumerate(lines):
                for s in order:
                    copies = 2 if (s == 1 and i == len(lines) // 2) else 1
                    for average in range(copies):
                        head = line.head.copy()
                        head["idx"]["slice"] = s
                        head["idx"]["repetition"] = rep
                        head["idx"]["average"] = average
                        head["position"] = (1.5 * s, -2.0, 6.0 * s - 6.0)
                        head["read_dir"] = (1.0, 0.0, 0.0)
                        head["phase_dir"] = (0.0, 1.0, 0.0)
                        head["slice_dir"] = (0.0, 0.0, 1.0)
                        head["patient_table_position"] = (0.0, 0.0, -100.0 * rep)
                        head["acquisition_time_stamp"] = stamp
                        head["physiology_time_stamp"] = (stamp // 2, 7, 0)
                        head["scan_counter"] = stamp
                        head["measurement_uid"] = 42
                        stamp += 1
                        data = line.data * np.complex64((1 + s) * (1 + 0.25 * rep) + 0.5j * average)
                        if i == 10 + s:
                            head["flags"] = int(head["flags"]) | (1 << 21)  # IS_REVERSE
                            data = data[:, ::-1]
                        writer.write(Acquisition.from_arrays(data, head=head))
    return sink.getvalue()


def volume_stream(golden: Path, partitions: int = 4) -> bytes:
    """A 3D stream (k2 partitions) whose recon matrix is larger than the encoded one in y
    and z, so both recons zero-pad k-space as well as crop the oversampled readout."""
    header, acqs = golden_messages(golden)
    xml = re.sub(
        r"(<encodedSpace>\s*<matrixSize>\s*<x>256</x>\s*<y>128</y>\s*<z>)1(</z>)",
        rf"\g<1>{partitions}\g<2>",
        header.xml,
    )
    xml = re.sub(
        r"(<reconSpace>\s*<matrixSize>\s*<x>128</x>\s*<y>)128(</y>\s*<z>)1(</z>)",
        rf"\g<1>144\g<2>{partitions + 2}\g<3>",
        xml,
    )
    limits = (
        "<kspace_encoding_step_2><minimum>0</minimum>"
        f"<maximum>{partitions - 1}</maximum><center>{partitions // 2}</center>"
        "</kspace_encoding_step_2>"
    )
    xml = xml.replace("</kspace_encoding_step_1>", "</kspace_encoding_step_1>" + limits, 1)
    assert xml.count(f"<z>{partitions}</z>") == 1 and "<y>144</y>" in xml
    ismrmrd.xsd.CreateFromDocument(xml)
    lines = [a for a in acqs if not has_flag(a.head["flags"], AcquisitionFlag.IS_NOISE_MEASUREMENT)]
    last = 1 << (int(AcquisitionFlag.LAST_IN_SLICE) - 1)
    sink = io.BytesIO()
    with StreamWriter(sink) as writer:
        writer.write(Header(xml))
        for k2 in range(partitions):
            for i, line in enumerate(lines):
                head = line.head.copy()
                head["idx"]["kspace_encode_step_2"] = k2
                final = k2 == partitions - 1 and i == len(lines) - 1
                head["flags"] = last if final else 0
                scale = np.complex64(np.exp(0.7j * k2) / (1 + k2))
                writer.write(Acquisition.from_arrays(line.data * scale, head=head))
    return sink.getvalue()


def numpy_recon(stream: bytes) -> list[tuple[tuple[int, int], np.ndarray]]:
    """Independent reference: (slice, repetition) -> RSS magnitude, in closing order."""
    header = next(m for m in read_all(stream) if isinstance(m, Header))
    meta = ismrmrd.xsd.CreateFromDocument(header.xml).encoding[0]
    ex, ey = meta.encodedSpace.matrixSize.x, meta.encodedSpace.matrixSize.y
    rx, ry = meta.reconSpace.matrixSize.x, meta.reconSpace.matrixSize.y
    center = meta.encodingLimits.kspace_encoding_step_1.center
    sums: dict[tuple[int, int], np.ndarray] = {}
    counts: dict[tuple[int, int], np.ndarray] = {}
    done = []
    for msg in read_all(stream):
        if not isinstance(msg, Acquisition):
            continue
        flags = int(msg.head["flags"])
        if has_flag(flags, AcquisitionFlag.IS_NOISE_MEASUREMENT):
            continue
        key = (int(msg.head["idx"]["slice"]), int(msg.head["idx"]["repetition"]))
        k = sums.setdefault(key, np.zeros((msg.data.shape[0], ey, ex), np.complex128))
        n = counts.setdefault(key, np.zeros(ey))
        row = int(msg.head["idx"]["kspace_encode_step_1"]) - center + ey // 2
        data = msg.data[:, ::-1] if has_flag(flags, AcquisitionFlag.IS_REVERSE) else msg.data
        k[:, row] += data
        n[row] += 1
        if has_flag(flags, AcquisitionFlag.LAST_IN_SLICE):
            done.append(key)
    out = []
    for key in done:
        k = sums[key] / np.maximum(counts[key], 1)[None, :, None]
        img = np.fft.fftshift(
            np.fft.ifft2(np.fft.ifftshift(k, axes=(1, 2)), norm="ortho"), axes=(1, 2)
        )
        rss = np.sqrt((np.abs(img) ** 2).sum(axis=0))
        y0, x0 = (ey - ry) // 2, (ex - rx) // 2
        out.append((key, rss[y0 : y0 + ry, x0 : x0 + rx]))
    return out


# ----------------------------------------------------------------------- tests
def test_make_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    """A fresh build (into an empty folder) compiles without a single diagnostic, and a
    warning is an error: the same build with one unused variable added fails."""
    clean = make_cpp(f"BUILD={tmp_path / 'clean'}")
    assert (clean.returncode, clean.stderr) == (0, ""), clean.stderr
    binary = tmp_path / "clean" / CPP_BINARY.name
    assert "-Werror" in clean.stdout and f"-o {binary} recon.cpp" in clean.stdout
    usage = subprocess.run([str(binary), "--help"], capture_output=True, text=True, check=False)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: "), usage
    warning = tmp_path / "warning.hpp"
    warning.write_text("static int unused_on_purpose;\n")
    broken = make_cpp(f"BUILD={tmp_path / 'warned'}", f"CPPFLAGS=-include {warning}")
    assert broken.returncode != 0
    assert "[-Werror=unused-variable]" in broken.stderr, broken.stderr
    assert not (tmp_path / "warned" / CPP_BINARY.name).exists()


def test_golden_phantom_matches_numpy_reference(cpp_binary: Path, golden: Path) -> None:
    stream = (golden / "phantom_m128_c8_noise.stream").read_bytes()
    out = run_cpp(cpp_binary, stream, args=NO_PREWHITENING).stdout
    msgs = read_all(out)
    assert isinstance(msgs[0], Header)
    assert msgs[0].xml == golden_messages(golden)[0].xml
    images = images_of(out)
    ((_key, reference),) = numpy_recon(stream)
    assert len(images) == 1
    assert images[0].data.dtype == np.float32 and images[0].data.shape == (1, 1, 128, 128)
    assert rel_error(images[0].data[0, 0], reference) < TOLERANCE


def test_golden_phantom_matches_cxx_tool_up_to_scale(cpp_binary: Path, golden: Path) -> None:
    """The ISMRMRD C++ tool's own image (which keeps the noise line) agrees up to a scale."""
    golden_stream = (golden / "phantom_m128_c8_noise.stream").read_bytes()
    ours = images_of(run_cpp(cpp_binary, golden_stream, args=NO_PREWHITENING).stdout)
    theirs = [
        m
        for m in read_all((golden / "phantom_m128_c8_noise.cxx_recon.stream").read_bytes())
        if isinstance(m, Image)
    ]
    a, b = ours[0].data[0, 0].astype(np.float64), theirs[0].data[0, 0].astype(np.float64)
    mask = b > 0.05 * b.max()
    scale = float((a[mask] * b[mask]).sum() / (b[mask] ** 2).sum())
    assert rel_error(a[mask], scale * b[mask]) < 1e-4


def test_multislice_matches_numpy_reference(cpp_binary: Path, golden: Path) -> None:
    stream = multislice_stream(golden)
    out = run_cpp(cpp_binary, stream, args=NO_PREWHITENING).stdout
    msgs = read_all(out)
    assert isinstance(msgs[0], Header) and isinstance(msgs[1], Text)
    images = images_of(out)
    reference = numpy_recon(stream)
    assert len(images) == len(reference) == 6
    for image, (key, expected) in zip(images, reference, strict=True):
        assert (int(image.head["slice"]), int(image.head["repetition"])) == key
        assert rel_error(image.data[0, 0], expected) < TOLERANCE
    assert [int(i.head["image_index"]) for i in images] == list(range(1, 7))


def _python_recon(stream: bytes) -> bytes:
    """The Python Cartesian kernel, with the noise prewhitening both recons apply."""
    return run_cli(
        "mrd_stream_recon", "--workers", "2", "--recon", "cartesian", input=stream
    ).stdout


def odd_stream(golden: Path) -> bytes:
    """Odd matrix sizes everywhere (255 x 127 encoded, 127 x 125 recon, centre 63), where
    the centring conventions of the shifts and crops differ from the even case."""
    header, acqs = golden_messages(golden)
    xml = header.xml
    for old, new in (
        ("<x>256</x>", "<x>255</x>"),
        ("<y>128</y>", "<y>127</y>"),
        ("<x>128</x>", "<x>127</x>"),
        ("<center>64</center>", "<center>63</center>"),
        ("<maximum>127</maximum>", "<maximum>126</maximum>"),
    ):
        assert old in xml
        xml = xml.replace(old, new, 1)
    xml = xml.replace("<y>128</y>", "<y>125</y>", 1)  # the recon-space y
    ismrmrd.xsd.CreateFromDocument(xml)
    sink = io.BytesIO()
    with StreamWriter(sink) as writer:
        writer.write(Header(xml))
        for acq in acqs:
            if int(acq.head["idx"]["kspace_encode_step_1"]) > 126:
                continue
            head = acq.head.copy()
            head["center_sample"] = 127
            if int(head["idx"]["kspace_encode_step_1"]) == 126:
                head["flags"] = 1 << (int(AcquisitionFlag.LAST_IN_SLICE) - 1)
            writer.write(Acquisition.from_arrays(acq.data[:, :255], head=head))
    return sink.getvalue()


def mixed_stream(golden: Path) -> bytes:
    """The golden phantom with TEXT, IMAGE, WAVEFORM and NDARRAY messages mixed in."""
    header, acqs = golden_messages(golden)
    others = [
        Text("before the data"),
        Image.from_array(np.arange(24, dtype=np.int16).reshape(2, 3, 4), "<meta/>"),
        Waveform.from_array(np.arange(12, dtype=np.uint32).reshape(3, 4)),
        NDArray(np.ones((2, 5), dtype=np.complex128)),
    ]
    sink = io.BytesIO()
    with StreamWriter(sink) as writer:
        writer.write(Text("before the header"))
        writer.write(header)
        for i, acq in enumerate(acqs):
            if i % 40 == 1:
                writer.write_all(others)
            writer.write(acq)
        writer.write(Text("after the data"))
    return sink.getvalue()


STREAMS: dict[str, Callable[[Path], bytes]] = {
    "golden": lambda golden: (golden / "phantom_m128_c8_noise.stream").read_bytes(),
    "multislice": multislice_stream,
    "3d-padded": volume_stream,
    "mixed-messages": mixed_stream,
    "odd-sizes": odd_stream,
}


@pytest.mark.parametrize("which", list(STREAMS))
def test_equals_python_recon(cpp_binary: Path, golden: Path, which: str) -> None:
    stream = STREAMS[which](golden)
    cpp_msgs = read_all(run_cpp(cpp_binary, stream).stdout)
    py_msgs = read_all(_python_recon(stream))
    assert [type(m) for m in cpp_msgs] == [type(m) for m in py_msgs]
    assert cpp_msgs[0] == py_msgs[0]  # the echoed header, byte for byte
    cpp_images = [m for m in cpp_msgs if isinstance(m, Image)]
    py_images = [m for m in py_msgs if isinstance(m, Image)]
    assert cpp_images
    for ours, theirs in zip(cpp_images, py_images, strict=True):
        assert ours.data.dtype == theirs.data.dtype and ours.data.shape == theirs.data.shape
        assert rel_error(ours.data, theirs.data) < TOLERANCE
        for name in IMAGE_HEADER_DTYPE.names:
            if name != "attribute_string_len":  # follows the window values' text (below)
                assert np.array_equal(ours.head[name], theirs.head[name]), name
        assert int(ours.head["attribute_string_len"]) == len(ours.attributes.encode())
        assert_same_meta(ours.attributes, theirs.attributes)


WINDOW_KEYS = ("WindowCenter", "WindowWidth")


def assert_same_meta(ours: str, theirs: str) -> None:
    """Meta attributes equal; the window (from the image maximum) within the image tolerance."""
    a, b = ismrmrd.Meta.deserialize(ours), ismrmrd.Meta.deserialize(theirs)
    assert list(a.keys()) == list(b.keys())
    for key in a:
        if key in WINDOW_KEYS:
            assert abs(float(a[key]) - float(b[key])) <= TOLERANCE * abs(float(b[key])), key
        else:
            assert a[key] == b[key], key


def test_output_reads_in_ismrmrd_python(cpp_binary: Path, golden: Path) -> None:
    out = run_cpp(cpp_binary, multislice_stream(golden, slices=2, repetitions=1)).stdout
    ours = images_of(out)
    deserializer = ismrmrd.serialization.ProtocolDeserializer(io.BytesIO(out))
    theirs = [m for m in deserializer.deserialize() if isinstance(m, ismrmrd.Image)]
    assert len(theirs) == len(ours) == 2
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a.data, b.data)
        assert int(a.head["slice"]) == b.slice
        assert np.allclose(a.head["position"], b.position)


def _valid_stream(golden: Path) -> bytes:
    return (golden / "phantom_m128_c8_noise.stream").read_bytes()


def _bad_inputs(golden: Path) -> dict[str, tuple[bytes, str]]:
    stream = _valid_stream(golden)
    header, acqs = golden_messages(golden)
    huge = b"\x03\x00" + (0xFFFFFFF0).to_bytes(4, "little")
    big_head = acqs[1].head.copy()
    big_head["active_channels"] = big_head["number_of_samples"] = 65535
    big_acquisition = b"\xf0\x03" + big_head.tobytes() + bytes(64)
    big_matrix = header.xml.replace("<x>256</x>", "<x>65535</x>").replace(
        "<y>128</y>", "<y>65535</y>", 1
    )
    big_image = new_image_head()
    big_image["data_type"] = 8
    big_image["channels"] = 65535
    big_image["matrix_size"] = (65535, 65535, 65535)
    return {
        "huge image": (b"\xfe\x03" + big_image.tobytes() + bytes(8), "at most 16 GiB"),
        "huge acquisition": (encode_message(header) + big_acquisition, "at most 1073741824"),
        "huge matrix": (encode_message(Header(big_matrix)) + encode_message(acqs[1]), "GiB"),
        "garbage": (b"\x37\x13" + bytes(range(200)), "unknown message id"),
        "truncated": (stream[: len(stream) // 2 + 5], "truncated"),
        "truncated id": (stream[:-1] + b"", "truncated"),
        "no close": (stream[:-2], "without a CLOSE"),
        "huge header": (huge, "at most"),
        "no header": (encode_message(acqs[1]) + encode_message(Close()), "before the HEADER"),
        "bad xml": (encode_message(Header("<ismrmrdHeader/>")) + b"\x04\x00", "<encoding>"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "garbage",
        "truncated",
        "truncated id",
        "no close",
        "huge header",
        "huge acquisition",
        "huge matrix",
        "huge image",
        "no header",
        "bad xml",
    ],
)
def test_bad_input_is_one_clear_line(cpp_binary: Path, golden: Path, case: str) -> None:
    data, expected = _bad_inputs(golden)[case]
    proc = run_cpp(cpp_binary, data, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err.count("\n") == 1 and err.startswith(f"{PROG}: error: "), err
    assert expected in err
    if case not in ("bad xml",):
        assert "byte offset" in err and "message index" in err


def test_closed_downstream_pipe_exits_quietly(
    cpp_binary: Path, golden: Path, tmp_path: Path
) -> None:
    source = tmp_path / "in.stream"
    source.write_bytes(multislice_stream(golden, slices=3, repetitions=2))
    with source.open("rb") as stdin:
        proc = subprocess.Popen(
            [str(cpp_binary)], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        code, err = close_after_reading(proc, 10)
    assert code == 141, err
    assert err == b""


def test_other_messages_are_skipped_and_text_passed_through(cpp_binary: Path, golden: Path) -> None:
    plain = read_all(
        run_cpp(cpp_binary, (golden / "phantom_m128_c8_noise.stream").read_bytes()).stdout
    )
    mixed = read_all(run_cpp(cpp_binary, mixed_stream(golden)).stdout)
    texts = [m.text for m in mixed if isinstance(m, Text)]
    assert isinstance(mixed[0], Header) and mixed[1] == Text("before the header")
    assert texts == ["before the header"] + ["before the data"] * 4 + ["after the data"]
    assert [m for m in mixed if isinstance(m, Image)] == [m for m in plain if isinstance(m, Image)]


@pytest.mark.parametrize("trajectory", ["radial", "goldenangle", "spiral"])
def test_non_cartesian_data_is_refused_with_one_line(cpp_binary: Path, trajectory: str) -> None:
    """The C++ recon grids nothing: a radial or spiral stream (and the JEMRIS spiral, header
    trajectory ``other``) is one line naming the trajectory, exit status 1."""
    stream = run_cli(
        "mrd_phantom", "-m", "16", "-c", "2", "--trajectory", trajectory, "-o", "-", "--force"
    ).stdout
    proc = run_cpp(cpp_binary, stream, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and proc.stdout == b"", err
    assert err.count("\n") == 1, err
    assert (
        f"the XML header's trajectory is '{trajectory}': this recon handles Cartesian data only"
        in err
    )


def test_the_jemris_spiral_is_refused_with_one_line(cpp_binary: Path, shared_data: Path) -> None:
    path = shared_data / "jemris_spiral_slc90.h5"
    proc = run_cpp(cpp_binary, run_cli("mrdhdf5_to_stream", str(path)).stdout, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.count("\n") == 1, err
    assert "trajectory is 'other': this recon handles Cartesian data only" in err
