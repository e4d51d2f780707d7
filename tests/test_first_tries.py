"""First tries of a new user that deserve a hint rather than a puzzle.

Each case is what someone with the README in hand typed first; each answer is one line that
says what the input is and what to type instead.
"""

from __future__ import annotations

import io
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from accelerated_helpers import phantom_bytes
from conftest import SHARED_DATA, run_cli, script

import parallel_recon as pr
from parallel_recon.errors import InputFileError, ProtocolError
from parallel_recon.phantom import PhantomSpec, write_hdf5
from parallel_recon.protocol import StreamReader

SPEC = PhantomSpec(matrix=16, coils=2)


def _one_line(proc: subprocess.CompletedProcess[bytes], prog: str, code: int) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert err.startswith(f"{prog}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


# ------------------------------------------------------------- a file as a positional
def test_recon_of_a_positional_hdf5_file_suggests_mrdhdf5_to_stream(tmp_path: Path) -> None:
    raw = tmp_path / "raw.h5"
    write_hdf5(SPEC, raw)
    proc = run_cli("mrd_stream_recon", str(raw), check=False)
    err = _one_line(proc, "mrd_stream_recon", 2)
    assert f"mrdhdf5_to_stream {raw} | mrd_stream_recon" in err
    assert proc.stdout == b""


def test_recon_of_a_positional_stream_file_suggests_i(tmp_path: Path) -> None:
    raw = tmp_path / "raw.bin"
    raw.write_bytes(phantom_bytes(SPEC))
    err = _one_line(run_cli("mrd_stream_recon", str(raw), check=False), "mrd_stream_recon", 2)
    assert f"-i {raw}" in err and f"< {raw}" in err


# ------------------------------------------------------------- export without --to
@pytest.fixture(scope="module")
def image_stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "images.bin"
    path.write_bytes(run_cli("mrd_stream_recon", input=phantom_bytes(SPEC)).stdout)
    return path


def test_export_infers_nifti_from_the_name(image_stream: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.nii.gz"
    run_cli("parallel-recon", "export", str(image_stream), "-o", str(out))
    assert nib.load(out).shape == (16, 16, 1)


def test_export_infers_npz_and_a_dicom_folder(image_stream: Path, tmp_path: Path) -> None:
    run_cli("parallel-recon", "export", str(image_stream), "-o", str(tmp_path / "x.npz"))
    with np.load(tmp_path / "x.npz", allow_pickle=False) as archive:
        assert archive["data"].shape == (1, 1, 1, 16, 16)
    run_cli("parallel-recon", "export", str(image_stream), "-o", f"{tmp_path / 'dicom'}/")
    assert len(list((tmp_path / "dicom").rglob("*.dcm"))) == 1


def test_export_with_a_name_that_says_nothing_asks_for_to(
    image_stream: Path, tmp_path: Path
) -> None:
    proc = run_cli("parallel-recon", "export", str(image_stream), "-o", str(tmp_path / "out"),
                   check=False)  # fmt: skip
    err = _one_line(proc, "parallel-recon export", 2)
    assert "--to is missing" in err and ".nii.gz" in err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------- text instead of a stream
@pytest.mark.parametrize("text", [b"hello\n", b"notes about the scan\nsecond line\n"])
def test_a_text_file_given_as_a_stream_is_called_text(text: bytes, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(text)
    err = _one_line(run_cli("mrd_stream_recon", input=text, check=False), "mrd_stream_recon", 1)
    assert "expected an MRD stream" in err and "found what looks like a text file" in err
    assert f"(it starts with {text[:2].decode()!r})" in err
    assert "unknown message id" not in err
    info = run_cli("parallel-recon", "info", str(notes), check=False)
    err = _one_line(info, "parallel-recon info", 1)
    assert "looks like a text file" in err and f"cannot read {str(notes)!r}" in err
    assert info.stdout == b""  # no "stream, 6 bytes" summary of a file that is no stream


def test_an_mrd_v2_stream_given_to_the_v1_reader_is_named_as_such() -> None:
    """Every command reads both generations; code that uses the v1 ``StreamReader`` itself
    (a user's script) is told what it was given instead of "unknown message id"."""
    v2 = (SHARED_DATA / "mrd2" / "sirf_grappa2_1rep.mrd2").read_bytes()
    with pytest.raises(ProtocolError) as raised:
        list(StreamReader(io.BytesIO(v2)))
    assert "found an MRD v2 (yardl) stream" in str(raised.value)
    assert "unknown message id" not in str(raised.value)


# ------------------------------------------------------------- the API and a folder
def test_reconstruct_of_a_folder_says_it_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(InputFileError) as raised:
        pr.reconstruct(tmp_path)
    message = str(raised.value)
    assert "it is a folder" in message and "parallel-recon batch" in message
    assert "no such file" not in message


# ------------------------------------------------------------- < f > f in a shell
def _recon_in_shell(folder: Path, redirections: str) -> subprocess.CompletedProcess[bytes]:
    """``mrd_stream_recon REDIRECTIONS`` run by bash in ``folder``."""
    return subprocess.run(
        ["bash", "-c", f"'{script('mrd_stream_recon')}' {redirections}"],
        cwd=folder,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_redirecting_a_stream_onto_itself_says_the_shell_emptied_it(tmp_path: Path) -> None:
    scan = tmp_path / "r3.bin"
    scan.write_bytes(phantom_bytes(SPEC))
    err = _one_line(_recon_in_shell(tmp_path, "< r3.bin > r3.bin"), "mrd_stream_recon", 1)
    assert "the shell's '>' redirection emptied it before this command started" in err
    assert "would destroy" not in err


def test_appending_a_stream_onto_itself_still_protects_the_input(tmp_path: Path) -> None:
    scan = tmp_path / "r3.bin"
    data = phantom_bytes(SPEC)
    scan.write_bytes(data)
    err = _one_line(_recon_in_shell(tmp_path, "< r3.bin >> r3.bin"), "mrd_stream_recon", 1)
    assert "writing it would destroy the input" in err
    assert scan.read_bytes() == data


# ------------------------------------------------------------- send with a short input
@pytest.fixture
def silent_server() -> Iterator[int]:
    """A server that reads a request to its end, then closes without a reply."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while conn.recv(1 << 16):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(timeout=10)


def test_send_says_its_own_input_ended_early(silent_server: int) -> None:
    stream = phantom_bytes(SPEC)
    proc = run_cli("parallel-recon", "send", f"127.0.0.1:{silent_server}",
                   input=stream[:2622], check=False)  # fmt: skip
    err = _one_line(proc, "parallel-recon send", 1)
    assert "the input ended after 2622 bytes without a CLOSE message" in err


def test_send_blames_the_server_when_the_input_was_complete(silent_server: int) -> None:
    stream = phantom_bytes(SPEC)
    proc = run_cli("parallel-recon", "send", f"127.0.0.1:{silent_server}", input=stream,
                   check=False)  # fmt: skip
    err = _one_line(proc, "parallel-recon send", 1)
    assert "closed the connection after 0 bytes without sending CLOSE" in err
    assert "input ended" not in err
