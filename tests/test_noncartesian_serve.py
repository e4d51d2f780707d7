"""Radial data through ``parallel-recon serve``: the server sizes the connection's shared
memory for readouts with trajectories (as the recon will), so the reply is the local one."""

from __future__ import annotations

from conftest import run_cli
from test_server import send, serve  # noqa: F401  (fixture)


def test_radial_stream_through_the_server_gives_the_local_bytes(serve) -> None:  # noqa: F811
    stream = run_cli(
        "mrd_phantom", "-m", "48", "-c", "4", "-s", "2", "--trajectory", "radial", "-o", "-",
        "--force",
    ).stdout  # fmt: skip
    local = run_cli("mrd_stream_recon", "--workers", "1", input=stream).stdout
    server = serve("--workers", "1")
    assert send(server.address, stream).stdout == local
    (line,) = server.wait_for_connections(1)
    assert line.endswith(": ok") and " images=2 " in line, line
