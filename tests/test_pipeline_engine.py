"""The reconstruction engine end to end: placement, order, determinism, pass-through, options.

Kernels here are tiny user modules written to tmp dirs and loaded with ``--recon PATH``, so
these tests also cover pluggable kernels.  The raw kernel hands back the placed k-space
itself, which lets the tests compare the engine's placement with an independent numpy
placement (``test_pipeline_helpers.expected_units``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest
from accelerated_helpers import nrmse
from conftest import run_cli
from reference_recon import (
    read_stream,
    recon_matrix,
    reference_image,
    reference_kspace,
    reference_units,
)
from test_pipeline_helpers import (
    RAW_KERNEL,
    RSS_KERNEL,
    Spec,
    build_lines,
    expected_units,
    header_xml,
    read_images,
    stream_bytes,
    write_kernel,
)

from parallel_recon.protocol import (
    ConfigFile,
    ConfigText,
    Header,
    Image,
    MessageId,
    StreamReader,
    Text,
)

RECON = "mrd_stream_recon"

PLACEMENT_CASES = {
    "2d-interleaved-slices-extra-lines-reversed": Spec(
        slices=5, extra_lines=True, reverse_odd=True
    ),
    "3d-partitions": Spec(partitions=6, lines=8, readout=16, coils=2),
    "contrasts-repetitions": Spec(slices=2, contrasts=3, repetitions=2, lines=8),
    "averages": Spec(averages=3, slices=2, lines=8),
    "no-oversampling": Spec(oversampling=1, readout=16, lines=12),
    "partial-fourier-asymmetric-echo": Spec(
        lines=16, first_step=0, last_step=11, k1_center=4, short_readout=6, reverse_odd=True
    ),
}


def _recon(tmp_path: Path, kernel: str, data: bytes, *args: str) -> bytes:
    proc = run_cli(RECON, "--recon", kernel, *args, input=data, timeout=60)
    assert proc.stderr == b"", proc.stderr.decode()
    return proc.stdout


def _message_ids(data: bytes) -> list[MessageId]:
    reader = StreamReader(io.BytesIO(data))
    ids = []
    while True:
        mid = reader.peek()
        assert mid is not None, "output stream must end with CLOSE"
        ids.append(mid)
        reader.read_message()
        if mid is MessageId.CLOSE:
            break
    assert reader.peek() is None, "nothing may follow CLOSE"
    return ids


@pytest.mark.parametrize("name", list(PLACEMENT_CASES))
def test_placed_kspace_matches_numpy_placement(tmp_path: Path, name: str) -> None:
    """Every sample lands where plain numpy puts it; units arrive in closing order."""
    spec = PLACEMENT_CASES[name]
    lines = build_lines(spec)
    kernel = write_kernel(tmp_path, RAW_KERNEL, "raw")
    # the raw kernel returns the placed k-space, which prewhitening (on when a noise line is
    # present) would rescale
    off = ("--recon-option", "prewhiten=off")
    out = _recon(tmp_path, kernel, stream_bytes(spec, lines), "--workers", "2", *off)
    images = read_images(out)
    expected = expected_units(spec, lines)
    assert len(images) == len(expected)
    for number, (image, (unit, kspace)) in enumerate(zip(images, expected, strict=True)):
        assert (image.slice, image.contrast, image.repetition) == unit
        assert image.user_int[0] == number  # sequence number = closing order
        got = np.asarray(image.data).transpose(1, 2, 0, 3)  # -> [k2, k1, coils, k0]
        assert got.shape == kspace.shape
        np.testing.assert_allclose(got, kspace, rtol=1e-6, atol=1e-6)
        imaging = [line for line in lines if line.key is not None and line.key[:3] == unit]
        assert image.user_int[1] == len(imaging)  # lines that landed, averages each once
        steps = [
            (int(line.acquisition.head["idx"]["kspace_encode_step_1"]), line.k2) for line in imaging
        ]
        best = min(abs(e1 - spec.center) + abs(k2 - spec.partitions // 2) for e1, k2 in steps)
        ref = abs(image.user_int[2] - spec.center) + abs(image.user_int[3] - spec.partitions // 2)
        assert ref == best  # the reference header is the line nearest the k-space centre


@pytest.mark.parametrize("kernel_name", ["user-module", "cartesian"])
def test_output_identical_for_any_worker_count(tmp_path: Path, kernel_name: str) -> None:
    """Same bytes for 1-4 workers; header echoed first; image_index 1..N; CLOSE last;
    ismrmrd-python reads it and stream_to_mrdhdf5 stores it."""
    spec = Spec(slices=5, repetitions=3, lines=16, readout=32, coils=4)
    data = stream_bytes(spec)
    if kernel_name == "cartesian":
        kernel = "cartesian"
    else:
        kernel = write_kernel(tmp_path, RSS_KERNEL, "rss")
    outputs = {}
    for workers in (1, 2, 3, 4):
        profile = tmp_path / f"profile{workers}.json"
        outputs[workers] = _recon(
            tmp_path, kernel, data, "--workers", str(workers), "--profile-json", str(profile)
        )
        stats = json.loads(profile.read_text())
        assert stats["workers"]["count"] == workers
        if workers == 1:  # in order, so always an image slot free: shared memory only
            assert stats["workers"]["image_queue_fallbacks"] == 0
    assert outputs[2] == outputs[1] and outputs[3] == outputs[1] and outputs[4] == outputs[1]
    out = outputs[1]
    ids = _message_ids(out)
    assert ids[0] is MessageId.HEADER and ids[-1] is MessageId.CLOSE
    reader = StreamReader(io.BytesIO(out))
    header = reader.read_message()
    assert isinstance(header, Header) and header.xml == header_xml(spec)
    images = read_images(out)
    units = expected_units(spec, build_lines(spec))
    assert [(i.slice, i.repetition) for i in images] == [(u[0], u[2]) for u, _ in units]
    assert [i.image_index for i in images] == list(range(1, len(units) + 1))
    assert all(i.image_series_index == 1 for i in images)
    if kernel_name == "user-module":
        assert [i.user_int[0] for i in images] == list(range(len(units)))
    # stream_to_mrdhdf5 stores the output
    h5 = tmp_path / "images.h5"
    run_cli("stream_to_mrdhdf5", "-o", str(h5), input=out, timeout=60)
    with h5py.File(h5, "r") as f:
        names: list[str] = []
        f.visit(names.append)
    dataset = ismrmrd.Dataset(str(h5), "dataset", create_if_needed=False)
    try:
        groups = [g for g in dataset.list() if g.startswith("image_")]
        assert groups, names
        assert sum(dataset.number_of_images(g) for g in groups) == len(units)
    finally:
        dataset.close()


def test_raw_kernel_images_larger_than_image_slots_go_over_the_queue(tmp_path: Path) -> None:
    """Kernels may return more than the image slot holds; the bytes fallback keeps it exact."""
    spec = Spec(slices=3, coils=4, readout=128, lines=64)  # 256 KiB of k-space per unit
    kernel = write_kernel(tmp_path, RAW_KERNEL, "raw")
    profile = tmp_path / "p.json"
    out = _recon(tmp_path, kernel, stream_bytes(spec), "--profile-json", str(profile))
    stats = json.loads(profile.read_text())
    assert stats["workers"]["image_queue_fallbacks"] == 3
    assert [i.image_index for i in read_images(out)] == [1, 2, 3]


def test_text_passes_through_and_config_is_accepted_before_header(tmp_path: Path) -> None:
    spec = Spec(slices=2, repetitions=2, lines=8)
    lines = build_lines(spec)
    body = io.BytesIO()
    from parallel_recon.protocol import StreamWriter

    with StreamWriter(body) as writer:
        writer.write(ConfigFile("default.xml"))
        writer.write(ConfigText("<config/>"))
        writer.write(Text("before header"))
        writer.write(Header(header_xml(spec)))
        half = len(lines) // 2
        for line in lines[:half]:
            writer.write(line.acquisition)
        writer.write(Text("after first repetition"))
        for line in lines[half:]:
            writer.write(line.acquisition)
    kernel = write_kernel(tmp_path, RSS_KERNEL, "rss")
    proc = run_cli(RECON, "--recon", kernel, "--verbose", input=body.getvalue(), timeout=60)
    assert b"CONFIG_FILE default.xml" in proc.stderr
    assert b"Traceback" not in proc.stderr
    ids = _message_ids(proc.stdout)
    assert ids == [
        MessageId.HEADER,
        MessageId.TEXT,
        MessageId.IMAGE,
        MessageId.IMAGE,
        MessageId.TEXT,
        MessageId.IMAGE,
        MessageId.IMAGE,
        MessageId.CLOSE,
    ]
    texts = [m for m in StreamReader(io.BytesIO(proc.stdout)) if isinstance(m, Text)]
    assert [t.text for t in texts] == ["before header", "after first repetition"]


def test_header_without_acquisitions_is_an_error(tmp_path: Path) -> None:
    """Nothing to reconstruct is a mistake (often an image stream given to the recon)."""
    body = io.BytesIO()
    from parallel_recon.protocol import StreamWriter

    with StreamWriter(body) as writer:
        writer.write(Header(header_xml(Spec())))
    kernel = write_kernel(tmp_path, RSS_KERNEL, "rss")
    proc = run_cli(RECON, "--recon", kernel, input=body.getvalue(), check=False, timeout=60)
    assert proc.returncode == 1 and proc.stdout == b""
    assert proc.stderr.decode().startswith("mrd_stream_recon: error: no acquisitions: ")


OPTIONS_KERNEL = """
import numpy as np
from parallel_recon.protocol import Image
from parallel_recon.workers.options import KernelOption

OPTIONS = (KernelOption("a", "", "test", str), KernelOption("b", "", "test", str))


def reconstruct(kspace, context):
    plan = context.plan
    text = f"{plan.output};{plan.series_index};" + ",".join(
        f"{k}={v}" for k, v in sorted(plan.options.items())
    )
    image = Image.from_array(np.zeros((1, 1, 2, 2), np.float32), attributes=text)
    image.head["image_type"] = 1
    image.head["image_series_index"] = plan.series_index
    return [image]
"""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "magnitude;1;"),
        (
            ["--image-type", "complex", "--recon-option", "a=1", "--recon-option", "b=x=y"],
            "complex;1;a=1,b=x=y",
        ),
        (["--image-type", "phase", "--series-index", "7"], "phase;7;"),
        (["--output-magnitude"], "magnitude;1;"),
    ],
)
def test_output_type_and_kernel_options_reach_the_plan(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    kernel = write_kernel(tmp_path, OPTIONS_KERNEL, "opts")
    out = _recon(tmp_path, kernel, stream_bytes(Spec(lines=4)), *args)
    images = [m for m in StreamReader(io.BytesIO(out)) if isinstance(m, Image)]
    assert [i.attributes for i in images] == [expected]


def test_output_file_options(tmp_path: Path) -> None:
    """``-o FILE`` and the C++ spelling ``--output FILE`` both name the output file."""
    kernel = write_kernel(tmp_path, RSS_KERNEL, "rss")
    data = stream_bytes(Spec(lines=4))
    raw = tmp_path / "raw.bin"
    raw.write_bytes(data)
    first, second = tmp_path / "a.bin", tmp_path / "b.bin"
    run_cli(RECON, "--recon", kernel, "-i", str(raw), "-o", str(first), timeout=60)
    run_cli(
        RECON, "--recon", kernel, "--use-stdin", "--output", str(second), input=data, timeout=60
    )
    assert first.read_bytes() == second.read_bytes()
    assert len(read_images(first.read_bytes())) == 1


RECEIVER_NOISE_BANDWIDTH = 0.793
"""relativeReceiverNoiseBandwidth when the header gives none (Gadgetron's convention)."""


def _golden_whitener(stream: bytes) -> np.ndarray:
    """``L^-1`` for the imaging lines of ``stream``, computed here from its noise line:
    ``C = X X^H / N`` over the noise samples, scaled to the imaging bandwidth by
    ``t_noise / (t_acquisition * 0.793)``, and ``L`` its lower Cholesky factor."""
    header, messages = read_stream(stream)
    assert header.acquisitionSystemInformation.relativeReceiverNoiseBandwidth is None
    acquisitions = [m for m in messages if isinstance(m, ismrmrd.Acquisition)]
    noise = [a for a in acquisitions if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    assert len(noise) == 1
    samples = np.asarray(noise[0].data, np.complex128)  # [coils, samples]
    covariance = samples @ samples.conj().T / samples.shape[1]
    dwell = {a.sample_time_us for a in acquisitions if a not in noise}
    assert len(dwell) == 1
    scale = noise[0].sample_time_us / (dwell.pop() * RECEIVER_NOISE_BANDWIDTH)
    return np.linalg.inv(np.linalg.cholesky(covariance * scale))


def test_default_kernel_reconstructs_the_golden_phantom(golden: Path) -> None:
    """The product path: default ``--recon cartesian`` on the C++ tools' phantom stream equals
    the numpy reference recon (placement, FFT, crop, RSS) of k-space whitened here with the
    stream's own noise line (see :func:`_golden_whitener`)."""
    data = (golden / "phantom_m128_c8_noise.stream").read_bytes()
    proc = run_cli(RECON, "--workers", "2", input=data, timeout=120)
    images = read_images(proc.stdout)
    assert len(images) == 1
    assert images[0].image_index == 1
    header, units = reference_units(data)
    ((key, unit),) = units.items()
    kspace = reference_kspace(unit)  # [k2, k1, coils, k0]
    whitened = np.einsum("ij,zyjx->zyix", _golden_whitener(data), kspace)
    expected = reference_image(whitened, recon_matrix(header, key[0]), "magnitude")
    found = np.asarray(images[0].data)
    assert found.dtype == np.float32 and found.shape == expected.shape == (1, 1, 128, 128)
    assert nrmse(found, expected) < 1e-5
    # the comparison can tell: without whitening the reference differs far more than that
    plain = reference_image(kspace, recon_matrix(header, key[0]), "magnitude")
    assert nrmse(plain * (expected.sum() / plain.sum()), expected) > 1e-3


def test_noise_scan_with_fewer_channels_may_come_first(tmp_path: Path) -> None:
    """Slots are sized for the header's receiverChannels, not only the first (noise) line."""
    from parallel_recon.protocol import Acquisition

    spec = Spec(slices=2, extra_lines=True)
    lines = build_lines(spec)
    noise = lines[0].acquisition
    assert lines[0].key is None and int(noise.head["flags"]) & (1 << 18)
    lines[0].acquisition = Acquisition.from_arrays(noise.data[:1], head=noise.head)
    kernel = write_kernel(tmp_path, RAW_KERNEL, "raw")
    off = ("--recon-option", "prewhiten=off")  # compare the placed k-space, not whitened
    images = read_images(_recon(tmp_path, kernel, stream_bytes(spec, lines), *off))
    expected = expected_units(spec, lines)
    assert len(images) == len(expected) == 2
    for image, (_, kspace) in zip(images, expected, strict=True):
        np.testing.assert_allclose(np.asarray(image.data).transpose(1, 2, 0, 3), kspace)
