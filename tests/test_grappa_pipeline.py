"""GRAPPA in the parallel engine: the same bytes for any worker count, images while streaming."""

from __future__ import annotations

import os
import subprocess
import threading
import time

from accelerated_helpers import images
from conftest import run_cli, script

from parallel_recon.phantom import PhantomSpec, iter_messages
from parallel_recon.protocol import Acquisition, MessageId, encode_message, message_id_bytes

SPEC = PhantomSpec(
    matrix=32, coils=4, acceleration=2, calibration_width=12, calibration="first",
    slices=3, repetitions=3, noise_calibration=True, noise_lines=16, noise_correlation=0.4,
)  # fmt: skip


def _chunks_by_repetition(spec: PhantomSpec) -> list[bytes]:
    """[header + noise, repetition 0, repetition 1, ..., CLOSE] as stream bytes."""
    chunks: list[bytes] = [b""]
    current = -1
    for msg in iter_messages(spec):
        noise = isinstance(msg, Acquisition) and int(msg.head["flags"]) & (1 << 18)
        if isinstance(msg, Acquisition) and not noise:
            repetition = int(msg.head["idx"]["repetition"])
            if repetition != current:
                chunks.append(b"")
                current = repetition
        chunks[-1] += encode_message(msg)
    chunks.append(message_id_bytes(MessageId.CLOSE))
    return chunks


def test_same_bytes_for_one_to_four_workers() -> None:
    stream = b"".join(_chunks_by_repetition(SPEC))
    outputs = {
        workers: run_cli(
            "mrd_stream_recon", "--workers", str(workers), "--recon", "grappa", input=stream
        ).stdout
        for workers in (1, 2, 3, 4)
    }
    assert len(images(outputs[1])) == 9
    assert all(out == outputs[1] for out in outputs.values())


def test_first_image_leaves_while_the_stream_is_arriving() -> None:
    chunks = _chunks_by_repetition(SPEC)
    total = sum(len(c) for c in chunks)
    proc = subprocess.Popen(
        [script("mrd_stream_recon"), "--recon", "grappa", "--workers", "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    sent = 0

    def feed() -> None:
        nonlocal sent
        assert proc.stdin is not None
        for chunk in chunks:
            proc.stdin.write(chunk)
            proc.stdin.flush()
            sent += len(chunk)
            time.sleep(0.7)  # the scanner acquires the next repetition
        proc.stdin.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    assert proc.stdout is not None and proc.stderr is not None
    header = len(chunks[0]) - sum(
        len(encode_message(m)) for m in list(iter_messages(SPEC))[1 : 1 + SPEC.noise_lines]
    )
    received = b""
    while len(received) <= header + 2:
        block = os.read(proc.stdout.fileno(), 1 << 16)
        assert block, proc.stderr.read()
        received += block
    seen_at = sent
    feeder.join(timeout=60)
    rest = proc.stdout.read()
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0, err.decode()
    before_last = total - len(chunks[-2]) - len(chunks[-1])
    assert seen_at <= before_last, f"first image after {seen_at} of {total} bytes sent"
    assert len(images(received + rest)) == 9
