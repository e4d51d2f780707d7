"""Every worker count gives the same images: a matrix of scan shapes, calibration modes and
kernels, each cell reconstructed with 1, 2, 3 and 4 workers.

The shapes are chosen so that the calibration store is under pressure: several echoes whose
calibration is renewed in every repetition (``embedded``) keep a new and an old calibration
of each (slice, contrast) alive at once, which is where a store sized for one calibration
per slice and contrast ran out with few workers.  Runs go through the Python API in this
process (the engine forks from here), so the whole matrix takes seconds, not minutes.

A probe kernel hands back the calibration block each unit received; it is checked against
the calibration lines read straight from the phantom's acquisitions (not through the
engine), so a unit that got another slice's, another repetition's or a half-overwritten
calibration fails even when every worker count agrees.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
from accelerated_helpers import images
from conftest import run_cli

import parallel_recon as pr
from parallel_recon.errors import ReconError
from parallel_recon.phantom import PhantomSpec, iter_messages, write_stream
from parallel_recon.protocol import Acquisition, encode_message

WORKER_COUNTS = (1, 2, 3, 4)
MODES = ("embedded", "first", "separate")
SHAPES = [  # (slices, contrasts, repetitions)
    (1, 1, 1),  # one unit
    (1, 3, 2),  # the reported case: three echoes renew their calibration in repetition 2
    (3, 1, 3),  # interleaved slices, several repetitions
    (3, 4, 2),  # 12 calibrations live at once, more than the workers' headroom
]
KERNELS = ("auto", "cartesian", "probe")

CALIBRATION_BIT = 1 << (20 - 1)
CALIBRATION_AND_IMAGING_BIT = 1 << (21 - 1)

PROBE_KERNEL = '''
"""Returns the calibration block a unit received, as a complex image, and its version."""
import ismrmrd
import numpy as np
from parallel_recon.protocol import Image


def reconstruct(kspace, context):
    calibration = context.calibration
    key = context.unit.key
    if calibration is None:
        data = np.zeros((1, 1, 1, 1), np.complex64)
        text = "none"
    else:
        data = np.ascontiguousarray(calibration.kspace.transpose(2, 0, 1, 3))
        text = (
            f"version={calibration.version};origin={calibration.origin[0]},"
            f"{calibration.origin[1]};sampled={int(calibration.sampled.sum())}"
        )
    image = Image.from_array(data, attributes=text)
    image.head["image_type"] = 5
    image.head["slice"] = key.slice
    image.head["contrast"] = key.contrast
    image.head["repetition"] = key.repetition
    return [image]
'''


def _spec(slices: int, contrasts: int, repetitions: int, mode: str) -> PhantomSpec:
    return PhantomSpec(
        matrix=16,
        coils=2,
        oversampling=1,
        acceleration=2,
        calibration_width=8,
        calibration=mode,
        slices=slices,
        contrasts=contrasts,
        repetitions=repetitions,
    )


def _stream(spec: PhantomSpec) -> bytes:
    sink = io.BytesIO()
    write_stream(spec, sink)
    return sink.getvalue()


def _outcome(stream: bytes, kernel: str, workers: int) -> tuple[str, bytes | str, int]:
    """("images", their encoded bytes, how many) or ("error", the message, 0)."""
    try:
        images = pr.reconstruct(stream, workers=workers, recon=kernel)
    except ReconError as exc:
        return "error", str(exc), 0
    return "images", b"".join(encode_message(image) for image in images), len(images)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("probe") / "probe_kernel.py"
    path.write_text(PROBE_KERNEL)
    return str(path)


def _cells() -> Iterator[tuple[tuple[int, int, int], str]]:
    return itertools.product(SHAPES, MODES)


def test_every_cell_gives_the_same_images_for_one_to_four_workers(
    probe: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """slices x contrasts x repetitions x calibration mode x kernel x workers 1..4: valid
    data, so every cell must succeed with one image per unit, byte-identical across workers."""
    failures: list[str] = []
    for (slices, contrasts, repetitions), mode in _cells():
        stream = _stream(_spec(slices, contrasts, repetitions, mode))
        units = slices * contrasts * repetitions
        for kernel in KERNELS:
            name = probe if kernel == "probe" else kernel
            outcomes = {w: _outcome(stream, name, w) for w in WORKER_COUNTS}
            cell = f"{slices} slices x {contrasts} contrasts x {repetitions} reps, {mode}, {kernel}"
            for workers, (kind, value, count) in outcomes.items():
                if kind == "error":
                    failures.append(f"{cell}, {workers} workers: error: {value}")
                elif count != units:
                    failures.append(f"{cell}, {workers} workers: {count} images, not {units}")
            if any(outcome != outcomes[1] for outcome in outcomes.values()):
                failures.append(f"{cell}: outputs differ between worker counts")
    capfd.readouterr()  # the cartesian kernel's aliasing warnings
    assert not failures, "\n".join(failures)


def _calibration_lines(spec: PhantomSpec) -> dict[tuple[int, int, int], dict[int, np.ndarray]]:
    """(slice, contrast, repetition) -> {ky: samples [coils, k0]} of every line the phantom
    flags as calibration (calibration-only or calibration-and-imaging)."""
    lines: dict[tuple[int, int, int], dict[int, np.ndarray]] = {}
    for msg in iter_messages(spec):
        if not isinstance(msg, Acquisition):
            continue
        flags = int(msg.head["flags"])
        if not flags & (CALIBRATION_BIT | CALIBRATION_AND_IMAGING_BIT):
            continue
        idx = msg.head["idx"]
        key = (int(idx["slice"]), int(idx["contrast"]), int(idx["repetition"]))
        lines.setdefault(key, {})[int(idx["kspace_encode_step_1"])] = msg.data.copy()
    return lines


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("workers", [1, 4])
def test_each_unit_gets_its_own_slice_contrast_and_repetition_calibration(
    probe: str, mode: str, workers: int
) -> None:
    """The block a unit receives is exactly the phantom's calibration lines of its slice and
    contrast: of its own repetition when every repetition carries them, else of the first
    (or of the reference block sent before the imaging)."""
    spec = _spec(3, 4, 3, mode)
    expected_lines = _calibration_lines(spec)
    images = pr.reconstruct(_stream(spec), workers=workers, recon=probe)
    assert len(images) == 3 * 4 * 3
    versions: dict[tuple[int, int, int], int] = {}
    for image in images:
        head = image.head
        key = (int(head["slice"]), int(head["contrast"]), int(head["repetition"]))
        source = key if mode == "embedded" else (key[0], key[1], 0)
        lines = expected_lines[source]
        steps = sorted(lines)
        assert steps == list(range(steps[0], steps[-1] + 1)), "the phantom's block is contiguous"
        block = image.data[:, 0]  # [coils, k1c, k0]
        expected = np.stack([lines[ky] for ky in steps], axis=1)
        assert block.shape == expected.shape, key
        np.testing.assert_array_equal(block, expected, err_msg=f"unit {key}")
        fields = dict(part.split("=") for part in image.attributes.split(";"))
        assert fields["origin"] == f"0,{steps[0]}", key
        assert int(fields["sampled"]) == len(steps), key
        versions[key] = int(fields["version"])
    for slc, contrast in itertools.product(range(3), range(4)):
        per_repetition = [versions[(slc, contrast, rep)] for rep in range(3)]
        if mode == "embedded":
            assert len(set(per_repetition)) == 3, "a new calibration each repetition"
        else:
            assert len(set(per_repetition)) == 1, "one calibration reused by every repetition"


def _lying_header(stream: bytes) -> bytes:
    """``stream`` with a header whose encoding limits claim a single slice."""
    messages = list(pr_messages(stream))
    header = messages[0]
    xml = re.sub(
        r"<slice>\s*<minimum>0</minimum>\s*<maximum>\d+</maximum>",
        "<slice><minimum>0</minimum><maximum>0</maximum>",
        header.xml,
    )
    assert xml != header.xml
    header.xml = xml
    return b"".join(encode_message(m) for m in messages) + (4).to_bytes(2, "little")


def pr_messages(stream: bytes) -> Iterator:  # type: ignore[type-arg]
    from parallel_recon.protocol import Close, StreamReader

    for msg in StreamReader(io.BytesIO(stream)):
        if not isinstance(msg, Close):
            yield msg


def test_more_calibrations_than_the_header_declares_is_the_same_clear_error() -> None:
    """Seven slices whose reference calibrations all stay current, under a header that says
    one slice: whatever the worker count, the same one-line error naming the cause."""
    spec = _spec(7, 1, 1, "separate")
    stream = _lying_header(_stream(spec))
    outcomes = {w: _outcome(stream, "auto", w) for w in WORKER_COUNTS}
    kinds = {kind for kind, _, _ in outcomes.values()}
    assert kinds == {"error"}, outcomes
    messages = {value for _, value, _ in outcomes.values()}
    assert len(messages) == 1, messages
    (message,) = messages
    assert str(message).startswith("slice 2, contrast 0 starts a calibration while 1 other"), (
        message
    )
    assert "encoding limits allow (1)" in str(message) and "\n" not in str(message)


ISSUE_SCAN = ["-m", "32", "-c", "4", "-a", "2", "-w", "16", "-e", "3", "-r", "2"]


@pytest.mark.parametrize("recon", ["auto", "cartesian"])
def test_multi_echo_repetitions_reconstruct_with_one_worker_like_with_four(recon: str) -> None:
    """The reported command: three echoes, two repetitions, calibration in each; one worker
    used to fail half way with 'all 5 calibration buffers hold ...'."""
    raw = run_cli("mrd_phantom", *ISSUE_SCAN, "-o", "-").stdout
    outputs = {}
    for workers in (1, 2, 4):
        proc = run_cli(
            "mrd_stream_recon", "--workers", str(workers), "--recon", recon, input=raw, check=False
        )
        assert proc.returncode == 0, proc.stderr.decode()
        outputs[workers] = proc.stdout
    assert outputs[1] == outputs[2] == outputs[4]
    assert len(images(outputs[1])) == 3 * 2


def test_batch_reconstructs_the_readme_multi_echo_example(tmp_path: Path) -> None:
    """``batch`` with one worker per file (what it chooses when files outnumber cores): the
    README's ``-s 5 -e 3 -r 4 -a 2 -w 24`` scan (on a smaller matrix) used to fail there."""
    study = tmp_path / "study"
    study.mkdir()
    run_cli(
        "parallel-recon", "phantom", "-m", "32", "-c", "4", "-s", "5", "-e", "3", "-r", "4",
        "-a", "2", "-w", "24", "-o", str(study / "scan1.h5"),
    )  # fmt: skip
    out = tmp_path / "recon"
    proc = run_cli("parallel-recon", "batch", str(study), "-o", str(out), "-w", "1", check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"1 ok, 0 failed" in proc.stderr
    dataset = ismrmrd.Dataset(str(out / "scan1.h5"), "dataset", create_if_needed=False)
    try:
        assert dataset.number_of_images("image_1") == 5 * 3 * 4
    finally:
        dataset.close()
