"""``mrd_stream_recon`` against sizes a stream declares but does not deliver.

Every size is checked before anything is allocated for it: the header's receiverChannels
(the noise statistics block grows with its square), each acquisition's channels and samples
against the header and the slot layout, messages the recon does not use (NDARRAY) are
skipped in constant memory, and the noise block counts in ``--memory-limit``.  A header with
XML entity declarations is refused whatever the Python build's expat would allow.

Memory is measured exactly: the whole process tree's largest resident set
(``ru_maxrss`` of the waited-for children, which includes the recon's own children), never by
sampling.  Each run is also capped at 8 GiB of address space, so that a regression fails
here instead of filling /dev/shm or the temporary folder of the machine running the tests.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import script
from hostile_streams import MiB, encode, ndarray_claim, noise_claim, phantom_messages, with_zeros

from parallel_recon.protocol import (
    WAVEFORM_HEADER_DTYPE,
    Header,
    Image,
    Message,
    NDArray,
    StreamReader,
    Waveform,
)

GROWTH = 64 * MiB

MEASURE = """
import resource, subprocess, sys

limit = 8 << 30
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

with open(sys.argv[1], "rb") as source:
    proc = subprocess.run(sys.argv[2:], stdin=source, capture_output=True, preexec_fn=cap)
sys.stdout.buffer.write(proc.stdout)
sys.stderr.buffer.write(proc.stderr)
sys.stderr.write(f"maxrss={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n")
sys.exit(proc.returncode)
"""


def measured_recon(stream_file: Path, *args: str) -> tuple[int, bytes, str, int]:
    """``mrd_stream_recon --workers 1 ARGS < stream_file``: exit code, stdout, stderr and the
    largest resident set of its process tree in bytes."""
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, str(stream_file), script("mrd_stream_recon"),
         "--workers", "1", *args],
        capture_output=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    err = proc.stderr.decode()
    body, _, last = err.rstrip("\n").rpartition("\n")
    assert last.startswith("maxrss="), err
    return proc.returncode, proc.stdout, body + "\n" if body else "", int(last[7:]) * 1024


def _one_line(code: int, err: str, *needles: str) -> None:
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("mrd_stream_recon: error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture(scope="module")
def messages() -> list[Message]:
    return phantom_messages()


def _with_channels(header: Header, channels: int) -> Header:
    xml = header.xml.replace(
        "<receiverChannels>2</receiverChannels>", f"<receiverChannels>{channels}</receiverChannels>"
    )
    assert xml != header.xml
    return Header(xml)


@pytest.fixture(scope="module")
def baseline_rss(messages: list[Message], tmp_path_factory: pytest.TempPathFactory) -> int:
    """The largest resident set of a normal run of the small stream (the same shape as every
    attack below: one header, a 2-channel line)."""
    path = tmp_path_factory.mktemp("baseline") / "normal.stream"
    path.write_bytes(encode(messages))
    code, out, err, rss = measured_recon(path)
    assert code == 0, err
    assert len([m for m in StreamReader(io.BytesIO(out)) if isinstance(m, Image)]) == 1
    return rss


# ------------------------------------------------------------ the header's coil count
@pytest.mark.parametrize("channels", [8192, 65535])
def test_a_header_declaring_thousands_of_channels_is_refused_before_allocating(
    messages: list[Message],
    baseline_rss: int,
    tmp_path: Path,
    channels: int,
) -> None:
    """A 3 kB stream: the phantom's header declaring ``channels`` receivers, one 2-channel
    acquisition, CLOSE."""
    path = tmp_path / "channels.stream"
    path.write_bytes(encode([_with_channels(messages[0], channels), messages[1]]))
    assert path.stat().st_size < 4096
    code, _, err, rss = measured_recon(path)
    _one_line(code, err, f"receiverChannels {channels}", "expected at most 1024")
    assert rss - baseline_rss < GROWTH


def test_the_noise_statistics_count_in_the_memory_limit(
    messages: list[Message],
    tmp_path: Path,
) -> None:
    """1024 declared channels and a 16 x 16 matrix: the k-space slots take 4 MiB each, the
    noise statistics 16 MiB (2 + 2 x 1024^2 doubles).  16M holds the slots and the image
    buffers but not the noise block as well; 40M holds all of them."""
    path = tmp_path / "wide.stream"
    path.write_bytes(encode([_with_channels(messages[0], 1024), *messages[1:]]))
    code, _, err, _ = measured_recon(path, "--memory-limit", "16M")
    _one_line(code, err, "not enough memory for this dataset")
    code, out, err, _ = measured_recon(path, "--memory-limit", "40M")
    assert code == 0, err
    assert len([m for m in StreamReader(io.BytesIO(out)) if isinstance(m, Image)]) == 1


# ------------------------------------------------------------ each acquisition's claim
@pytest.mark.parametrize(
    ("channels", "samples", "words"),
    [
        (65535, 30000, "65535 active channels"),
        (65535, 65535, "65535 active channels"),
        (2, 65535, "65535 samples"),
    ],
)
def test_a_noise_line_larger_than_the_slots_is_refused_before_its_samples(
    messages: list[Message],
    baseline_rss: int,
    tmp_path: Path,
    channels: int,
    samples: int,
    words: str,
) -> None:
    head = noise_claim(messages, channels, samples)
    path = with_zeros(tmp_path / "noise.stream", head, 128 * MiB)
    code, _, err, rss = measured_recon(path)
    _one_line(code, err, "noise acquisition", words)
    assert rss - baseline_rss < GROWTH


def test_an_ndarray_of_a_billion_values_is_skipped_in_constant_memory(
    messages: list[Message],
    baseline_rss: int,
    tmp_path: Path,
) -> None:
    path = with_zeros(tmp_path / "ndarray.stream", ndarray_claim(messages, 10**9), 128 * MiB)
    code, _, err, rss = measured_recon(path)
    _one_line(code, err, "truncated NDARRAY message: expected 8000000000 bytes")
    assert rss - baseline_rss < GROWTH


def test_messages_the_recon_does_not_use_are_skipped(
    messages: list[Message],
    tmp_path: Path,
) -> None:
    """An NDARRAY, a WAVEFORM and an IMAGE before the first acquisition and between the
    lines change nothing in the images, and the profile counts each of them."""
    plain = tmp_path / "plain.stream"
    plain.write_bytes(encode(messages))
    waveform_head = np.zeros((), WAVEFORM_HEADER_DTYPE)
    waveform_head["channels"], waveform_head["number_of_samples"] = 3, 50
    extras = [
        NDArray(array=np.arange(300_000, dtype=np.complex64).reshape(3, 100_000), version=0),
        Waveform(head=waveform_head, data=np.arange(150, dtype=np.uint32).reshape(3, 50)),
    ]
    code, expected, err, _ = measured_recon(plain)
    assert code == 0, err
    image = next(m for m in StreamReader(io.BytesIO(expected)) if isinstance(m, Image))
    mixed = tmp_path / "mixed.stream"
    profile = tmp_path / "profile.json"
    mixed.write_bytes(encode([messages[0], *extras, image, messages[1], *extras, *messages[2:]]))
    code, out, err, _ = measured_recon(mixed, "--profile-json", str(profile))
    assert code == 0, err
    assert out == expected
    others = json.loads(profile.read_text())["input"]["other_messages"]
    totals: dict[str, int] = {}
    for key, count in others.items():  # before the first acquisition and after it
        name = key.lower().removesuffix("_messages")
        totals[name] = totals.get(name, 0) + count
    assert totals == {"ndarray": 2, "waveform": 2, "image": 1}, others


# ------------------------------------------------------------ XML entities
def test_a_header_with_entity_declarations_is_refused(
    messages: list[Message],
    tmp_path: Path,
) -> None:
    xml = (
        messages[0]
        .xml.replace(
            '<?xml version="1.0" encoding="ascii"?>',
            '<?xml version="1.0"?>\n<!DOCTYPE ismrmrdHeader [<!ENTITY ch "2">]>',
        )
        .replace(
            "<receiverChannels>2</receiverChannels>", "<receiverChannels>&ch;</receiverChannels>"
        )
    )
    assert "&ch;" in xml
    path = tmp_path / "entity.stream"
    path.write_bytes(encode([Header(xml), *messages[1:]]))
    code, out, err, _ = measured_recon(path)
    _one_line(code, err, "entity", "'ch'")
    assert out == b""
