"""``parallel-recon serve`` and ``send`` with MRD v2 streams, detected per connection.

A v2 client gets v2 images, the bytes ``mrd_stream_recon`` writes locally, whether it
half-closes its side or (as streaming clients do) waits after the end-of-stream mark; v1
clients of the same server keep working.  A v2 client's failure reaches the log (v2 has no
TEXT item to tell the client).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from conftest import run_cli
from server_helpers import exchange
from test_server import send, serve  # noqa: F401  (fixture)

from parallel_recon.protocol import Acquisition, Header, open_reader
from parallel_recon.protocol.mrd2 import Mrd2StreamWriter


def test_v2_client_gets_v2_images(serve, shared_data: Path) -> None:  # noqa: F811
    v2 = (shared_data / "mrd2/sirf_grappa2_1rep.mrd2").read_bytes()
    v1 = (shared_data / "golden/sirf_grappa2_1rep.stream").read_bytes()
    local = run_cli("mrd_stream_recon", "--workers", "1", input=v2).stdout
    assert local.startswith(b"yardl")
    server = serve("--workers", "1")
    assert send(server.address, v2).stdout == local
    assert exchange(server.port, v2, half_close=False) == local
    assert (
        send(server.address, v1).stdout
        == run_cli("mrd_stream_recon", "--workers", "1", input=v1).stdout
    )
    lines = server.wait_for_connections(3)
    assert len(lines) == 3 and all(line.endswith(": ok") for line in lines), lines
    assert f"in={len(v2)} B out={len(local)} B images=1" in lines[0]


def test_broken_v2_client_is_logged_and_gets_no_text(serve, shared_data: Path) -> None:  # noqa: F811
    v2 = (shared_data / "mrd2/sirf_grappa2_1rep.mrd2").read_bytes()
    server = serve("--workers", "1")
    reply = exchange(server.port, v2[: len(v2) // 2])
    (line,) = server.wait_for_connections(1)
    assert b"\x05\x00" not in reply[:2], reply[:16]  # no v1 TEXT message sent to a v2 client
    assert ": error: " in line or ": client" in line, line


def test_v2_opening_is_bounded(serve, shared_data: Path, tmp_path: Path) -> None:  # noqa: F811
    """A v2 client whose first acquisition is larger than the 12 MiB the server holds before
    starting a reconstruction (its samples come before its trajectory, so the item is made
    whole) is refused, and the server grows by less than 64 MiB however much it sends."""
    v2 = (shared_data / "mrd2/sirf_grappa2_1rep.mrd2").read_bytes()
    header = next(m for m in open_reader(io.BytesIO(v2)) if isinstance(m, Header))
    attack = tmp_path / "wide.mrd2"
    with attack.open("wb") as sink:
        writer = Mrd2StreamWriter(sink)
        writer.write(header)
        acquisition = Acquisition.from_arrays(np.zeros((256, 32768), np.complex64))
        writer.write(acquisition)  # 64 MiB of samples in the first item
        writer.close()
    server = serve("--workers", "1")
    assert send(server.address, v2).returncode == 0  # every import done: a fair baseline
    before = server.peak_rss()
    proc = run_cli(
        "parallel-recon", "send", server.address, "-i", str(attack), check=False, timeout=120
    )
    assert proc.returncode == 1
    line = server.wait_for_connections(2)[1]
    assert " pid=" not in line, line  # refused before any reconstruction started
    assert "expected the first acquisition's header within 12582912 bytes" in line, line
    assert server.peak_rss() - before < 64 * (1 << 20)
