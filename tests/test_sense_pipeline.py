"""SENSE and POCS in the parallel engine: the same bytes for any worker count, images while
the stream is still arriving.

One stream serves both: 3 slices x 3 repetitions of R=2 data with 6/8 partial Fourier and
the calibration in the first repetition only (later units reuse it: maps come from data every
worker sees), with a correlated noise scan (prewhitening on).
"""

from __future__ import annotations

import pytest
from accelerated_helpers import chunks_by_repetition, images
from conftest import run_cli, script
from stream_feeding import first_image_before_the_rest

from parallel_recon.phantom import PhantomSpec, iter_messages
from parallel_recon.protocol import encode_message

SPEC = PhantomSpec(
    matrix=32, coils=4, acceleration=2, calibration_width=12, calibration="first",
    partial_fourier=0.75, slices=3, repetitions=3, noise_calibration=True, noise_lines=16,
    noise_correlation=0.4,
)  # fmt: skip


@pytest.mark.parametrize(
    "kernel, option",
    [("sense", "save_maps=on"), ("auto", "partial_fourier=pocs"), ("grappa", "maps=espirit")],
)
def test_same_bytes_for_one_to_four_workers(kernel: str, option: str) -> None:
    stream = b"".join(chunks_by_repetition(SPEC))
    outputs = {
        workers: run_cli(
            "mrd_stream_recon", "--workers", str(workers), "--recon", kernel,
            "--recon-option", option, input=stream,
        ).stdout
        for workers in (1, 2, 3, 4)
    }  # fmt: skip
    assert len(images(outputs[1])) == (18 if option == "save_maps=on" else 9)
    assert all(out == outputs[1] for out in outputs.values())


def test_first_sense_image_leaves_while_the_stream_is_arriving() -> None:
    """Header, noise scan and repetition 0 sent, stdin open, repetitions 1 and 2 held back:
    the first SENSE image must arrive before anything more is sent."""
    chunks = chunks_by_repetition(SPEC)
    noise_scan = list(iter_messages(SPEC))[1 : 1 + SPEC.noise_lines]
    header = len(chunks[0]) - sum(len(encode_message(m)) for m in noise_scan)
    argv = ["--recon", "sense", "--workers", "2"]
    fed = first_image_before_the_rest(
        [script("mrd_stream_recon"), *argv], b"".join(chunks[:2]), b"".join(chunks[2:]), header
    )
    assert fed.returncode == 0, fed.stderr.decode()
    assert fed.output == run_cli("mrd_stream_recon", *argv, input=b"".join(chunks)).stdout
    assert len(images(fed.output)) == 9
