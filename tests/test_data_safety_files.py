"""No command damages its input or its output file: same-file refusal, all-or-nothing
appends, no empty or half-written outputs, no growth on re-runs, a full disk.

Every test runs the installed commands as a user would.  "Unchanged" means byte for byte
(SHA-256 of the file), and "readable" means h5py and ``mrdhdf5_to_stream`` read it back to
the same content as before.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import h5py
import pytest
from data_safety import (
    XML_A,
    XML_B,
    acquisition,
    digest,
    hdf5_content,
    image,
    leftovers,
    one_error_line,
    small_tmpfs,
    stream_of,
)

from parallel_recon.hdf5 import count_acquisitions, count_images, list_groups, read_header_xml
from parallel_recon.protocol.messages import Header, Text
from tests.conftest import run_cli, script


@pytest.fixture(scope="module")
def phantom_stream() -> bytes:
    """A small raw-data stream (2 coils, 32 x 32, 2 slices): about 70 kB."""
    return run_cli("mrd_phantom", "-m", "32", "-c", "2", "-s", "2", "-o", "-").stdout


@pytest.fixture(scope="module")
def large_stream() -> bytes:
    """A raw-data stream of about 1.1 MB (8 coils, 64 x 64, 2 repetitions)."""
    return run_cli("mrd_phantom", "-m", "64", "-c", "8", "-r", "2", "-o", "-").stdout


# ------------------------------------------------------------------ 1. same file in and out
def _same_file_cases(stream: Path, h5: Path) -> dict[str, tuple[list[str], Path, str | None]]:
    """name -> (command line, the file that is both input and output, stdin/stdout redirection)."""
    link = stream.with_name("link.bin")
    link.symlink_to(stream.name)
    hard = stream.with_name("hard.bin")
    os.link(stream, hard)
    x, h, recon, view = str(stream), str(h5), "mrd_stream_recon", ["parallel-recon", "view"]
    send = ["parallel-recon", "send", "127.0.0.1:9"]
    return {
        "recon -i X -o X": ([recon, "-i", x, "-o", x], stream, None),
        "recon -i link -o X": ([recon, "-i", str(link), "-o", x], stream, None),
        "recon -i hardlink -o X": ([recon, "-i", str(hard), "-o", x], stream, None),
        "recon -o X < X": ([recon, "-o", x], stream, "stdin"),
        "recon -i X >> X": ([recon, "-i", x], stream, "stdout"),
        "to-stream -i H -o H": (["mrdhdf5_to_stream", "-i", h, "-o", h], h5, None),
        "to-hdf5 -i X -o X": (["stream_to_mrdhdf5", "-i", x, "-o", x], stream, None),
        "to-hdf5 H < H": (["stream_to_mrdhdf5", h], h5, "stdin"),
        "view X -o X": ([*view, x, "-o", x], stream, None),
        "send -i X -o X": ([*send, "-i", x, "-o", x], stream, None),
    }


def test_same_file_as_input_and_output_is_refused(phantom_stream: bytes, tmp_path: Path) -> None:
    """Case 1: the output may not be the input (same device and inode, through any name)."""
    stream = tmp_path / "raw.bin"
    stream.write_bytes(phantom_stream)
    h5 = tmp_path / "raw.h5"
    run_cli("stream_to_mrdhdf5", str(h5), input=phantom_stream)
    before = {path: digest(path) for path in (stream, h5)}
    for name, (argv, victim, redirect) in _same_file_cases(stream, h5).items():
        command = [script(argv[0]), *argv[1:]]
        if redirect == "stdin":
            with victim.open("rb") as stdin:
                proc = subprocess.run(command, stdin=stdin, capture_output=True, timeout=60)
        elif redirect == "stdout":
            with victim.open("ab") as stdout:
                proc = subprocess.run(
                    command, stdout=stdout, stderr=subprocess.PIPE, timeout=60, check=False
                )
        else:
            proc = subprocess.run(command, capture_output=True, timeout=60, check=False)
        line = one_error_line(proc)
        assert "same file" in line, (name, line)
        assert str(victim.name) in line, (name, line)
        assert {path: digest(path) for path in (stream, h5)} == before, name


def test_standard_streams_on_devices_are_not_the_same_file(
    phantom_stream: bytes, tmp_path: Path
) -> None:
    """/dev/null as both stdin and output is no conflict, and it stays a device.  An empty
    stream into it is the usual one-line error; a valid stream into it (HDF5, which a writer
    cannot seek in a device, or a stream) succeeds without a word; no temporary file stays."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    with open(os.devnull, "rb") as stdin:
        proc = subprocess.run(
            [script("stream_to_mrdhdf5"), "-o", os.devnull],
            stdin=stdin,
            capture_output=True,
            timeout=60,
            env=env,
        )
    assert proc.returncode == 1, proc.stderr.decode(errors="replace")
    assert proc.stderr.decode() == (
        "stream_to_mrdhdf5: error: expected a CLOSE message, found the end of the stream "
        "after 0 messages (the sender stopped early or the connection dropped) (at byte "
        "offset 0, message index 0); nothing was written to '/dev/null'\n"
    )
    for name in ("stream_to_mrdhdf5", "mrd_stream_recon"):
        done = run_cli(name, "-o", os.devnull, input=phantom_stream, check=False, env=env)
        assert (done.returncode, done.stderr, done.stdout) == (0, b"", b""), name
    done = run_cli("mrd_phantom", "-m", "16", "-c", "2", "-o", os.devnull, check=False, env=env)
    assert (done.returncode, done.stderr, done.stdout) == (0, b"", b"")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert leftovers(tmp_path) == []


def _read_fifo_into(fifo: Path, received: Path) -> threading.Thread:
    """A thread that reads everything written into ``fifo`` (it opens the FIFO, so a writer's
    open does not block) and stores it in ``received``."""

    def drain() -> None:
        with fifo.open("rb") as source:
            received.write_bytes(source.read())

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    return thread


def test_hdf5_output_into_a_fifo_is_the_file_a_regular_output_gets(
    phantom_stream: bytes, tmp_path: Path
) -> None:
    """An HDF5 output that is a FIFO (``-o >(ssh host 'cat > x.h5')``) receives the bytes of
    a complete HDF5 file: the content h5py reads from it is that of a regular output."""
    regular, received, fifo = tmp_path / "regular.h5", tmp_path / "received.h5", tmp_path / "fifo"
    run_cli("stream_to_mrdhdf5", str(regular), input=phantom_stream)
    os.mkfifo(fifo)
    staging = tmp_path / "staging"
    staging.mkdir()
    reader = _read_fifo_into(fifo, received)
    proc = run_cli(
        "stream_to_mrdhdf5",
        "-o",
        str(fifo),
        input=phantom_stream,
        check=False,
        env={"TMPDIR": str(staging)},
    )
    with contextlib.suppress(OSError):  # wake the reader if the command never opened the FIFO
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    reader.join(timeout=60)
    assert (proc.returncode, proc.stderr) == (0, b""), proc.stderr.decode(errors="replace")
    assert hdf5_content(received) == hdf5_content(regular)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert leftovers(staging) == []


def test_hdf5_output_to_a_full_device_is_one_line(phantom_stream: bytes, tmp_path: Path) -> None:
    """A device that refuses the bytes (``/dev/full``) gives one line that says so."""
    proc = run_cli(
        "stream_to_mrdhdf5",
        "-o",
        "/dev/full",
        input=phantom_stream,
        check=False,
        env={"TMPDIR": str(tmp_path)},
    )
    assert proc.returncode == 1, proc.stderr.decode(errors="replace")
    assert proc.stderr.decode() == (
        "stream_to_mrdhdf5: error: cannot write '/dev/full': No space left on device; "
        "it may hold part of the output\n"
    )
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- 2. appends: all or nothing
def _file_with_images(path: Path) -> None:
    run_cli("stream_to_mrdhdf5", str(path), input=stream_of(Header(XML_A), image(4), image(4)))


def test_failed_append_changes_nothing(tmp_path: Path) -> None:
    """Case 2: an append that fails half-way (an image of another shape after acquisitions
    that fit) leaves the file byte for byte as it was: no acquisitions, no header change."""
    out = tmp_path / "images.h5"
    _file_with_images(out)
    before, content = digest(out), hdf5_content(out)
    failing = stream_of(Header(XML_A), acquisition(0), acquisition(1), image(4), image(8))
    proc = run_cli("stream_to_mrdhdf5", str(out), input=failing, check=False)
    assert digest(out) == before
    assert hdf5_content(out) == content
    line = one_error_line(proc)
    assert "(1, 1, 4, 4)" in line and "(1, 1, 8, 4)" in line
    assert "unchanged" in line
    assert leftovers(tmp_path, out.name) == []


def test_failed_append_with_a_new_header_keeps_the_old_one(tmp_path: Path) -> None:
    """Case 2, the reported form: the stream's header was written before its images were
    refused.  Even when the header may be replaced, a failing append changes nothing."""
    out = tmp_path / "images.h5"
    _file_with_images(out)
    before = digest(out)
    failing = stream_of(Header(XML_B), image(8))
    proc = run_cli("stream_to_mrdhdf5", str(out), "--replace-header", input=failing, check=False)
    one_error_line(proc)
    assert read_header_xml(out) == XML_A
    assert count_images(out, "dataset", "image_0") == 2
    assert digest(out) == before


def test_successful_append_keeps_existing_content_and_file_metadata(tmp_path: Path) -> None:
    out = tmp_path / "images.h5"
    _file_with_images(out)
    out.chmod(0o640)
    content = hdf5_content(out)
    run_cli("stream_to_mrdhdf5", str(out), input=stream_of(Header(XML_A), image(4), acquisition(7)))
    assert count_images(out, "dataset", "image_0") == 3
    assert count_acquisitions(out) == 1
    after = hdf5_content(out)
    assert after["dataset/xml"] == content["dataset/xml"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    with h5py.File(out, "r") as handle:
        assert handle["dataset/image_0/data"].shape[0] == 3
    assert leftovers(tmp_path, out.name) == []


def test_append_through_a_symlink_replaces_the_target(tmp_path: Path) -> None:
    target = tmp_path / "real.h5"
    _file_with_images(target)
    link = tmp_path / "link.h5"
    link.symlink_to(target.name)
    run_cli("stream_to_mrdhdf5", str(link), input=stream_of(Header(XML_A), image(4)))
    assert link.is_symlink()
    assert count_images(target, "dataset", "image_0") == 3


# ------------------------------------------------------------------ 3. no empty outputs
@pytest.mark.parametrize(
    ("name", "stdin"),
    [("an HDF5 file given as the stream", None), ("an empty stdin", b"")],
)
def test_invalid_stream_creates_no_output(tmp_path: Path, name: str, stdin: bytes | None) -> None:
    """Case 3: nothing valid arrived, so no file appears (``info`` rejected the empty one)."""
    raw = tmp_path / "raw.h5"
    run_cli("mrd_phantom", "-m", "16", "-c", "1", "-o", str(raw))
    out = tmp_path / "x.h5"
    args = ["-i", str(raw), "-o", str(out)] if stdin is None else ["-o", str(out)]
    one_error_line(run_cli("stream_to_mrdhdf5", *args, input=stdin, check=False))
    assert not out.exists(), name
    assert leftovers(tmp_path, raw.name) == []


def test_stream_damaged_after_valid_messages_keeps_them_in_a_readable_file(
    phantom_stream: bytes, tmp_path: Path
) -> None:
    """The documented exception: a stream cut after valid messages still stores them, in a
    complete file that ``info`` reads."""
    out = tmp_path / "partial.h5"
    cut = phantom_stream[: len(phantom_stream) // 2]
    line = one_error_line(run_cli("stream_to_mrdhdf5", str(out), input=cut, check=False))
    assert "truncated" in line
    assert count_acquisitions(out) > 0
    run_cli("parallel-recon", "info", str(out))
    assert leftovers(tmp_path, out.name) == []


def test_failed_recon_leaves_no_output_file(tmp_path: Path) -> None:
    """Stream outputs too: ``-o FILE`` appears only when the command succeeds."""
    bad = tmp_path / "bad.bin"
    bad.write_bytes(stream_of(Text("no header")))
    out = tmp_path / "images.bin"
    one_error_line(run_cli("mrd_stream_recon", "-i", str(bad), "-o", str(out), check=False))
    assert leftovers(tmp_path, bad.name) == []


def test_failed_recon_keeps_the_previous_output(phantom_stream: bytes, tmp_path: Path) -> None:
    out = tmp_path / "images.bin"
    out.write_bytes(b"previous result")
    one_error_line(
        run_cli("mrd_stream_recon", "-o", str(out), input=phantom_stream[:-100], check=False)
    )
    assert out.read_bytes() == b"previous result"
    assert leftovers(tmp_path, out.name) == []


# ------------------------------------------------------------------ 4. phantom re-runs
def test_phantom_rerun_does_not_grow_the_file(tmp_path: Path) -> None:
    """Case 4: replacing the group rewrites the file, so re-runs reclaim the old scan's space."""
    out = tmp_path / "raw.h5"
    args = ["mrd_phantom", "-m", "32", "-c", "4", "-o", str(out)]
    sizes, contents = [], []
    for _ in range(3):
        run_cli(*args)
        sizes.append(out.stat().st_size)
        contents.append(hdf5_content(out))
    assert sizes[0] == sizes[1] == sizes[2], sizes
    assert contents[0] == contents[1] == contents[2]
    assert leftovers(tmp_path, out.name) == []


def test_phantom_rerun_keeps_other_groups(tmp_path: Path) -> None:
    out = tmp_path / "raw.h5"
    run_cli("mrd_phantom", "-m", "16", "-c", "2", "-o", str(out), "-d", "other")
    other = {k: v for k, v in hdf5_content(out).items() if k.startswith("other/")}
    sizes = []
    for seed in ("1", "2", "3"):
        run_cli("mrd_phantom", "-m", "32", "-c", "4", "-o", str(out), "--seed", seed)
        sizes.append(out.stat().st_size)
    assert sorted(list_groups(out)) == ["dataset", "other"]
    assert {k: v for k, v in hdf5_content(out).items() if k.startswith("other/")} == other
    assert sizes[0] == sizes[1] == sizes[2], sizes


def test_phantom_refuses_to_overwrite_a_file_that_is_not_hdf5(tmp_path: Path) -> None:
    out = tmp_path / "notes.txt"
    out.write_text("keep me")
    line = one_error_line(run_cli("mrd_phantom", "-m", "16", "-o", str(out), check=False))
    assert "not an HDF5 file" in line
    assert out.read_text() == "keep me"


# ------------------------------------------------------------------ 8. a full disk
def test_full_disk_new_hdf5_file(large_stream: bytes, tmp_path: Path) -> None:
    """Case 8: one clear line, exit 1, and no file (not even a hidden temporary one)."""
    with small_tmpfs(tmp_path / "small", "1m") as disk:
        out = disk / "images.h5"
        line = one_error_line(
            run_cli("stream_to_mrdhdf5", str(out), input=large_stream, check=False)
        )
        assert "no space left" in line and str(out) in line
        assert leftovers(disk) == []


def test_full_disk_append_keeps_the_file_readable(
    phantom_stream: bytes, large_stream: bytes, tmp_path: Path
) -> None:
    """Case 8: appending on a full disk leaves the existing file as it was, readable."""
    with small_tmpfs(tmp_path / "small", "2m") as disk:
        out = disk / "raw.h5"
        run_cli("stream_to_mrdhdf5", str(out), input=phantom_stream)
        before, content = digest(out), hdf5_content(out)
        proc = run_cli("stream_to_mrdhdf5", str(out), "-g", "more", input=large_stream, check=False)
        assert digest(out) == before
        assert hdf5_content(out) == content
        line = one_error_line(proc)
        assert "no space left" in line and "unchanged" in line
        assert run_cli("mrdhdf5_to_stream", str(out)).stdout == phantom_stream
        assert leftovers(disk, out.name) == []


def test_full_disk_when_the_copy_for_an_append_does_not_fit(
    phantom_stream: bytes, tmp_path: Path
) -> None:
    with small_tmpfs(tmp_path / "small", "1m") as disk:
        out = disk / "raw.h5"
        run_cli("stream_to_mrdhdf5", str(out), input=phantom_stream)
        filler = disk / "filler"
        free = shutil.disk_usage(disk).free
        filler.write_bytes(bytes(max(0, free - out.stat().st_size // 2)))
        before = digest(out)
        line = one_error_line(
            run_cli("stream_to_mrdhdf5", str(out), input=phantom_stream, check=False)
        )
        assert "no space left" in line
        assert digest(out) == before
        assert leftovers(disk, out.name, filler.name) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["mrd_phantom", "-m", "128", "-c", "8", "-o", "{out}.h5"],
        ["mrd_phantom", "-m", "128", "-c", "8", "--stream", "-o", "{out}.bin"],
        ["mrdhdf5_to_stream", "{raw}", "-o", "{out}.bin"],
        [
            "mrd_stream_recon",
            "-i",
            "{stream}",
            "-o",
            "{out}.bin",
            "--image-type",
            "complex",
            "--recon-option",
            "coils=channels",
        ],
    ],
    ids=["phantom-hdf5", "phantom-stream", "to-stream", "recon"],
)
def test_full_disk_other_commands(large_stream: bytes, tmp_path: Path, argv: list[str]) -> None:
    raw = tmp_path / "raw.h5"
    run_cli("stream_to_mrdhdf5", str(raw), input=large_stream)
    stream = tmp_path / "raw.bin"
    stream.write_bytes(large_stream)
    with small_tmpfs(tmp_path / "small", "256k") as disk:
        filled = [a.format(out=disk / "out", raw=raw, stream=stream) for a in argv]
        line = one_error_line(run_cli(*filled, check=False))
        assert "no space left" in line.lower(), line
        assert leftovers(disk) == []


# ------------------------------------------------------------------ 9. a different header
def _raw_file(path: Path) -> None:
    run_cli("stream_to_mrdhdf5", str(path), input=stream_of(Header(XML_A), acquisition(0)))


def test_append_with_a_different_header_is_refused(tmp_path: Path) -> None:
    """Case 9: the stored header describes the stored data; another one is refused."""
    out = tmp_path / "raw.h5"
    _raw_file(out)
    before = digest(out)
    line = one_error_line(
        run_cli(
            "stream_to_mrdhdf5",
            str(out),
            input=stream_of(Header(XML_B), acquisition(1)),
            check=False,
        )
    )
    assert "different XML header" in line and "--replace-header" in line
    assert digest(out) == before
    assert read_header_xml(out) == XML_A


def test_header_with_a_nul_byte_is_refused_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "raw.h5"
    _raw_file(out)
    before = digest(out)
    bad = stream_of(Header("<ismrmrdHeader>\0</ismrmrdHeader>"), acquisition(1))
    line = one_error_line(
        run_cli("stream_to_mrdhdf5", str(out), "--replace-header", input=bad, check=False)
    )
    assert "NUL" in line
    assert digest(out) == before
    fresh = tmp_path / "fresh.h5"
    one_error_line(run_cli("stream_to_mrdhdf5", str(fresh), input=bad, check=False))
    assert not fresh.exists()


def test_same_header_appends_and_replace_header_replaces(tmp_path: Path) -> None:
    out = tmp_path / "raw.h5"
    _raw_file(out)
    run_cli("stream_to_mrdhdf5", str(out), input=stream_of(Header(XML_A), acquisition(1)))
    assert count_acquisitions(out) == 2
    run_cli(
        "stream_to_mrdhdf5", str(out), "--replace-header",
        input=stream_of(Header(XML_B), acquisition(2)),
    )  # fmt: skip
    assert read_header_xml(out) == XML_B
    assert count_acquisitions(out) == 3
