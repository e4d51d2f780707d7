"""The C++ recon prewhitens like the default recon, and refuses data it would zero-fill.

The default (Python) recon whitens the coil noise measured by a noise scan; the C++ recon used
to skip that step, so the two disagreed by far more than rounding on any data with a noise
scan.  Its whitening is checked two ways: against the default recon, and against the C++
recon's own unwhitened path on a stream that numpy whitened beforehand (covariance, bandwidth
scaling and Cholesky factor computed here with numpy alone).
"""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from accelerated_helpers import phantom_bytes
from conftest import run_cli
from test_cpp_recon import build_cpp

from parallel_recon.phantom import PhantomSpec
from parallel_recon.protocol import (
    Acquisition,
    Header,
    Image,
    StreamReader,
    StreamWriter,
    encode_message,
)

PROG = "mrd_stream_recon_cpp"
TOLERANCE = 1e-5
NOISE_BIT = 1 << (19 - 1)
CALIBRATION_BIT = 1 << (20 - 1)
CORRELATED = PhantomSpec(
    matrix=32, coils=6, slices=2, repetitions=2, noise_calibration=True, noise_lines=16,
    noise_correlation=0.5, noise_dwell_time_us=10.0,
)  # fmt: skip


@pytest.fixture(scope="module")
def cpp() -> Path:
    return build_cpp()


def _run(binary: Path, stream: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(binary), *args], input=stream, capture_output=True, timeout=60, check=False
    )


def _images(data: bytes) -> list[Image]:
    return [m for m in StreamReader(io.BytesIO(data)) if isinstance(m, Image)]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _assert_same_images(ours: bytes, theirs: bytes) -> None:
    a, b = _images(ours), _images(theirs)
    assert a and len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.data.shape == y.data.shape
        assert _rel(x.data, y.data) < TOLERANCE


def test_golden_phantom_equals_the_default_recon(cpp: Path, golden: Path) -> None:
    stream = (golden / "phantom_m128_c8_noise.stream").read_bytes()
    ours = _run(cpp, stream)
    assert ours.returncode == 0 and ours.stderr == b"", ours.stderr.decode()
    default = run_cli("mrd_stream_recon", input=stream).stdout
    _assert_same_images(ours.stdout, default)
    unwhitened = _images(_run(cpp, stream, "--recon-option", "prewhiten=off").stdout)
    assert _rel(unwhitened[0].data, _images(default)[0].data) > 0.05  # whitening matters here


def test_correlated_noise_and_another_dwell_time_equal_the_default_recon(cpp: Path) -> None:
    stream = phantom_bytes(CORRELATED)
    ours = _run(cpp, stream)
    assert ours.returncode == 0, ours.stderr.decode()
    _assert_same_images(ours.stdout, run_cli("mrd_stream_recon", input=stream).stdout)


def _header_value(xml: str, tag: str) -> float:
    match = re.search(rf"<{tag}>([^<]+)</{tag}>", xml)
    assert match, tag
    return float(match.group(1))


def _whitened_by_numpy(stream: bytes) -> bytes:
    """``stream`` without its noise scan, every other line whitened with numpy's own W."""
    messages = list(StreamReader(io.BytesIO(stream)))
    header = next(m for m in messages if isinstance(m, Header))
    acquisitions = [m for m in messages if isinstance(m, Acquisition)]
    noise = [a for a in acquisitions if int(a.head["flags"]) & NOISE_BIT]
    imaging = [a for a in acquisitions if not int(a.head["flags"]) & NOISE_BIT]
    samples = np.concatenate([a.data.astype(np.complex128) for a in noise], axis=1)
    covariance = samples @ samples.conj().T / samples.shape[1]
    noise_dwell = float(noise[0].head["sample_time_us"])
    imaging_dwell = float(imaging[0].head["sample_time_us"])
    bandwidth = _header_value(header.xml, "relativeReceiverNoiseBandwidth")
    covariance *= noise_dwell / (imaging_dwell * bandwidth)
    whitener = np.linalg.inv(np.linalg.cholesky(covariance))
    sink = io.BytesIO()
    with StreamWriter(sink) as writer:
        writer.write(header)
        for acq in imaging:
            data = (whitener @ acq.data.astype(np.complex128)).astype(np.complex64)
            writer.write(Acquisition.from_arrays(data, acq.traj, acq.head))
    return sink.getvalue()


def test_whitening_equals_numpy_whitening_before_an_unwhitened_recon(cpp: Path) -> None:
    stream = phantom_bytes(CORRELATED)
    ours = _run(cpp, stream).stdout
    reference = _run(cpp, _whitened_by_numpy(stream), "--recon-option", "prewhiten=off").stdout
    _assert_same_images(ours, reference)


def test_prewhiten_off_equals_the_default_recon_with_prewhiten_off(cpp: Path) -> None:
    stream = phantom_bytes(CORRELATED)
    ours = _run(cpp, stream, "--recon-option=prewhiten=off").stdout
    theirs = run_cli("mrd_stream_recon", "--recon-option", "prewhiten=off", input=stream).stdout
    _assert_same_images(ours, theirs)


def test_a_noise_scan_of_zeros_is_a_warning_and_no_whitening(cpp: Path) -> None:
    stream = phantom_bytes(PhantomSpec(matrix=16, coils=3, noise_calibration=True, noise_level=0))
    ours = _run(cpp, stream)
    assert ours.returncode == 0
    assert ours.stderr.decode() == (
        f"{PROG}: warning: the noise scan holds only zeros: no prewhitening\n"
    )
    _assert_same_images(ours.stdout, _run(cpp, stream, "--recon-option", "prewhiten=off").stdout)


def _assert_refused(proc: subprocess.CompletedProcess[bytes], *words: str) -> None:
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err.startswith(f"{PROG}: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    written = StreamReader(io.BytesIO(proc.stdout), require_close=False)
    assert not any(isinstance(m, Image) for m in written)


@pytest.mark.parametrize("calibration", ["embedded", "separate"])
def test_accelerated_data_is_refused_in_one_line(cpp: Path, calibration: str) -> None:
    spec = PhantomSpec(matrix=32, coils=4, acceleration=2, calibration_width=8)
    spec = PhantomSpec(**{**spec.__dict__, "calibration": calibration})
    proc = _run(cpp, phantom_bytes(spec))
    _assert_refused(proc, "parallel imaging (acceleration 2 x 1)", "mrd_stream_recon")
    assert proc.stdout == b""


def _without_parallel_imaging(stream: bytes) -> bytes:
    """The stream with the header's <parallelImaging> removed (the data still accelerated)."""
    messages = list(StreamReader(io.BytesIO(stream)))
    header = messages[0]
    assert isinstance(header, Header) and "<parallelImaging>" in header.xml
    xml = re.sub(r"<parallelImaging>.*?</parallelImaging>", "", header.xml, flags=re.S)
    return encode_message(Header(xml)) + b"".join(encode_message(m) for m in messages[1:])


def test_calibration_lines_without_a_declaration_are_refused(cpp: Path) -> None:
    spec = PhantomSpec(
        matrix=32, coils=4, acceleration=2, calibration_width=8, calibration="separate"
    )
    proc = _run(cpp, _without_parallel_imaging(phantom_bytes(spec)))
    _assert_refused(proc, "calibration line", "accelerated", "mrd_stream_recon", "byte offset")


def test_non_cartesian_data_is_refused_in_one_line(cpp: Path, golden: Path) -> None:
    stream = (golden / "phantom_m128_c8_noise.stream").read_bytes()
    messages = list(StreamReader(io.BytesIO(stream)))
    header = messages[0]
    assert isinstance(header, Header)
    xml = header.xml.replace(
        "<trajectory>cartesian</trajectory>", "<trajectory>radial</trajectory>"
    )
    assert xml != header.xml
    radial = encode_message(Header(xml)) + b"".join(encode_message(m) for m in messages[1:])
    proc = _run(cpp, radial)
    _assert_refused(proc, "trajectory is 'radial'", "Cartesian data only", "mrd_stream_recon")
    assert proc.stdout == b""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--recon-option", "prewhiten=maybe"], "expected prewhiten=on or prewhiten=off"),
        (["--recon-option"], "--recon-option needs KEY=VALUE"),
        (["--bogus"], "unknown argument '--bogus'"),
    ],
)
def test_bad_options_are_usage_errors(cpp: Path, args: list[str], needle: str) -> None:
    proc = _run(cpp, b"", *args)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and err.startswith(f"{PROG}: error: ") and err.count("\n") == 1
    assert needle in err and "(try --help)" in err
