"""``parallel-recon serve`` and ``send`` with MRD v2 streams, detected per connection.

A v2 client gets v2 images, the bytes ``mrd_stream_recon`` writes locally, whether it
half-closes its side or (as streaming clients do) waits after the end-of-stream mark; v1
clients of the same server keep working.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli
from tests.test_server import _raw_exchange, send, serve  # noqa: F401  (fixture)


def test_v2_client_gets_v2_images(serve, shared_data: Path) -> None:  # noqa: F811
    v2 = (shared_data / "mrd2/sirf_grappa2_1rep.mrd2").read_bytes()
    v1 = (shared_data / "golden/sirf_grappa2_1rep.stream").read_bytes()
    local = run_cli("mrd_stream_recon", "--workers", "1", input=v2).stdout
    assert local.startswith(b"yardl")
    server = serve("--workers", "1")
    assert send(server.address, v2).stdout == local
    assert _raw_exchange(server.port, v2, half_close=False) == local
    assert (
        send(server.address, v1).stdout
        == run_cli("mrd_stream_recon", "--workers", "1", input=v1).stdout
    )
    lines = server.wait_for_connections(3)
    assert len(lines) == 3 and all(line.endswith(": ok") for line in lines), lines
    assert f"in={len(v2)} B out={len(local)} B images=1" in lines[0]
