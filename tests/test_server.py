"""``parallel-recon serve`` on 127.0.0.1: same bytes as the local pipe, isolation, draining.

Every server runs as a real process on port 0 (it prints the port it got) and is always
stopped by the fixture; socat processes are killed in ``finally`` blocks.  Counts and data
are small: the golden 128x128 8-coil phantom, ``--workers 1`` per connection.
"""

from __future__ import annotations

import ctypes
import io
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import BIN_DIR, run_cli, script
from server_helpers import (
    STARTUP_S,
    ServerProcess,
    connect,
    exchange,
    read_to_end,
    reset,
    wait_until,
)

from parallel_recon.engine.ring import SEGMENT_PREFIX
from parallel_recon.net.server import ServerConfig, choose_kernel
from parallel_recon.protocol import (
    Acquisition,
    Close,
    ConfigFile,
    Header,
    Image,
    MessageId,
    StreamReader,
    StreamWriter,
    Text,
    encode_message,
)

SHM = Path("/dev/shm")


@pytest.fixture
def serve() -> Iterator[Callable[..., ServerProcess]]:
    servers: list[ServerProcess] = []

    def start(*args: str, cwd: Path | None = None) -> ServerProcess:
        server = ServerProcess(*args, cwd=cwd)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def stream(golden: Path) -> bytes:
    return (golden / "phantom_m128_c8_noise.stream").read_bytes()


@pytest.fixture(scope="module")
def local_output(stream: bytes) -> bytes:
    """``mrd_stream_recon --workers 1 < stream``: what every remote path must reproduce."""
    return run_cli("mrd_stream_recon", "--workers", "1", input=stream).stdout


def send(address: str, data: bytes, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return run_cli("parallel-recon", "send", address, input=data, timeout=120, check=check)


def images(data: bytes) -> list[Image]:
    return [m for m in StreamReader(io.BytesIO(data)) if isinstance(m, Image)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -------------------------------------------------------------- same bytes as a pipe
def test_our_client_to_our_server(serve, stream: bytes, local_output: bytes) -> None:
    server = serve("--workers", "1")
    assert send(server.address, stream).stdout == local_output
    (line,) = server.wait_for_connections(1)
    assert f"in={len(stream)} B out={len(local_output)} B images=1" in line
    assert line.endswith(": ok") and "kernel=auto" in line


def test_socat_client_to_our_server(serve, stream: bytes, local_output: bytes) -> None:
    server = serve("--workers", "1")
    proc = subprocess.run(
        ["socat", "-t30", "-", f"TCP4:127.0.0.1:{server.port}"],
        input=stream,
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert proc.stdout == local_output


def _listening(pid: int, port: int) -> bool:
    return any(
        conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
        for conn in psutil.Process(pid).net_connections(kind="tcp")
    )


def _wait_listening(pid: int, port: int, timeout: float = STARTUP_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _listening(pid, port):
            return
        time.sleep(0.05)
    raise AssertionError(f"socat did not listen on port {port}")


def test_our_client_to_socat_exec_server(stream: bytes, local_output: bytes) -> None:
    port = _free_port()
    env = {**os.environ, "PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"}
    socat = subprocess.Popen(
        ["socat", f"TCP4-LISTEN:{port},bind=127.0.0.1,reuseaddr", "EXEC:mrd_stream_recon"],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_listening(socat.pid, port)
        assert send(f"127.0.0.1:{port}", stream).stdout == local_output
        assert socat.wait(timeout=30) == 0
    finally:
        if socat.poll() is None:
            socat.kill()
        socat.wait()
        assert socat.stderr is not None
        socat.stderr.close()


def test_server_runs_another_filter(serve, stream: bytes, tmp_path: Path) -> None:
    """--command: the C++ recon behind the same server; bytes equal its local pipe."""
    from test_cpp_recon import build_cpp

    binary = build_cpp()
    expected = subprocess.run([str(binary)], input=stream, capture_output=True, check=True).stdout
    server = serve("--command", str(binary))
    assert send(server.address, stream).stdout == expected


# ------------------------------------------------------ python-ismrmrd-server clients
def _config_then_nul_header(stream: bytes, name: str) -> bytes:
    """CONFIG_FILE, then the HEADER with a trailing NUL counted in its length."""
    reader = StreamReader(io.BytesIO(stream))
    header = reader.read_message()
    assert isinstance(header, Header)
    xml = header.xml.encode() + b"\0"
    head = struct.pack("<HI", MessageId.HEADER, len(xml)) + xml
    return encode_message(ConfigFile(name)) + head + stream[reader.offset :]


@pytest.mark.parametrize("name", ["default", "cartesian"])
def test_config_file_and_nul_terminated_header(
    serve, stream: bytes, local_output: bytes, name: str
) -> None:
    server = serve("--workers", "1")
    reply = exchange(server.port, _config_then_nul_header(stream, name), half_close=False)
    assert reply == local_output
    (line,) = server.wait_for_connections(1)
    expected = "auto" if name == "default" else "cartesian"  # the default kernel, or the name
    assert f"kernel={expected}" in line and line.endswith(": ok")


def test_config_map_chooses_the_kernel(serve, stream: bytes) -> None:
    kernel = str(Path(__file__).resolve().parent.parent / "workers" / "example_user_kernel.py")
    server = serve("--workers", "1", "--config-map", f"hann={kernel}")
    filtered = exchange(server.port, _config_then_nul_header(stream, "hann"))
    plain = exchange(server.port, _config_then_nul_header(stream, "default"))
    lines = server.wait_for_connections(2)
    assert any(f"kernel={kernel}" in line and line.endswith(": ok") for line in lines)
    a, b = images(filtered), images(plain)
    assert len(a) == len(b) == 1 and not np.array_equal(a[0].data, b[0].data)


def test_choose_kernel_rules() -> None:
    config = ServerConfig(recon="mine.py", config_map={"special": "other.py"})
    assert choose_kernel("special", config) == "other.py"
    assert choose_kernel(" cartesian ", config) == "cartesian"
    assert choose_kernel("default.xml", config) == "mine.py"
    assert choose_kernel("default_short", config) == "mine.py"
    assert choose_kernel("Generic_Cartesian_Grappa.xml", config) == "grappa"
    assert choose_kernel("Generic_Cartesian_FFT", config) == "cartesian"
    assert choose_kernel("my_site_recon.xml", config) == "mine.py"
    assert choose_kernel(None, config) == "mine.py"


# -------------------------------------------------------------------- concurrency
def _scaled_stream(stream: bytes, scale: float) -> bytes:
    """The same acquisitions with samples times ``scale`` (a power of two: exact).

    The noise scan is left as it is: prewhitening (the same for every client then) keeps the
    scale of the imaging lines, so each client's images differ from the others'.
    """
    sink = io.BytesIO()
    with StreamWriter(sink) as writer:
        for msg in StreamReader(io.BytesIO(stream)):
            if isinstance(msg, Acquisition) and not int(msg.head["flags"]) & (1 << 18):
                msg = Acquisition(msg.head, msg.traj, msg.data * np.complex64(scale))
            writer.write(msg)
    return sink.getvalue()


def _segments_of(pids: list[int]) -> set[str]:
    """Shared-memory segments in /dev/shm made by these recon processes (named by pid)."""
    names = set(os.listdir(SHM)) if SHM.is_dir() else set()
    return {n for n in names for pid in pids if n.startswith(f"{SEGMENT_PREFIX}{pid}_")}


def test_eight_clients_at_once_with_a_garbage_and_a_vanishing_one(
    serve, stream: bytes, local_output: bytes, tmp_path: Path
) -> None:
    server = serve("--workers", "1", "--max-connections", "11")
    assert server.children() == []
    base = images(local_output)[0]
    # The vanishing client first: half its stream, and once its reconstruction runs (the
    # server's only child), a reset.  Its outcome is then always the same one.
    vanishing = connect(server.port)
    vanished = vanishing.getsockname()[1]
    vanishing.sendall(stream[: len(stream) // 2])
    wait_until(lambda: len(server.recons()) == 1, "the vanishing client's recon")
    inputs = []
    for i in range(8):
        path = tmp_path / f"in{i}.stream"
        path.write_bytes(_scaled_stream(stream, 2.0**i))
        inputs.append(path)
    garbage_after_header = stream[: len(stream) // 3] + os.urandom(4096)
    clients = []
    for path in inputs:
        with path.open("rb") as source:
            clients.append(
                subprocess.Popen(
                    [script("parallel-recon"), "send", server.address],
                    stdin=source,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
    troublemakers = [
        threading.Thread(target=exchange, args=(server.port, b"\x99\x99" + os.urandom(999))),
        threading.Thread(target=exchange, args=(server.port, garbage_after_header)),
    ]
    for thread in troublemakers:
        thread.start()
    reset(vanishing)
    outputs = [client.communicate(timeout=180) for client in clients]
    for thread in troublemakers:
        thread.join(timeout=60)
    for i, (client, (out, err)) in enumerate(zip(clients, outputs, strict=True)):
        assert client.returncode == 0, err
        (image,) = images(out)
        np.testing.assert_array_equal(image.data, base.data * np.float32(2.0**i))
        assert out.endswith(encode_message(Close()))
    lines = server.wait_for_connections(11)
    assert len(lines) == 11
    assert sum(line.endswith(": ok") for line in lines) == 8
    failed = [line for line in lines if not line.endswith(": ok")]
    assert len(failed) == 3
    (garbage,) = [line for line in failed if " pid=" not in line]  # no recon for it
    assert ": error: unknown message id: expected one of " in garbage, garbage
    (gone,) = [line for line in failed if line.startswith(f"serve: 127.0.0.1:{vanished} ")]
    # (what the server had received when the reset came: the rest was still on its way)
    received = re.search(
        r" in=(\d+) B .*: client disconnected mid-stream \(connection reset\): no CLOSE after "
        r"(\d+) bytes$",
        gone,
    )
    assert received and received[1] == received[2], gone
    assert 0 < int(received[1]) <= len(stream) // 2
    (broken,) = [line for line in failed if line not in (garbage, gone)]
    assert ": error: reconstruction exited with status 1: mrd_stream_recon: error: " in broken
    wait_until(lambda: server.children() == [], "every recon to end")
    pids = [int(m.group(1)) for line in lines if (m := re.search(r" pid=(\d+) ", line))]
    # every connection with a complete header started one recon: all but the garbage one
    assert len(pids) == 10
    wait_until(lambda: not _segments_of(pids), "no shared memory left")
    assert server.proc.poll() is None  # still serving
    assert send(server.address, stream).stdout == local_output


# -------------------------------------------------------------------- shutdown
def test_sigterm_drains_a_running_connection(serve, stream: bytes, local_output: bytes) -> None:
    server = serve("--workers", "1")
    with connect(server.port) as sock:
        sock.sendall(stream[: len(stream) // 2])
        wait_until(lambda: len(server.recons()) == 1, "the recon")
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for(lambda lines: any("stopping:" in x for x in lines), "'stopping:'")
        wait_until(lambda: not _listening(server.proc.pid, server.port), "no listener")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
        sock.sendall(stream[len(stream) // 2 :])
        sock.shutdown(socket.SHUT_WR)
        reply = read_to_end(sock)
    assert reply == local_output
    assert server.proc.wait(timeout=30) == 0
    assert server.lines[-1] == "serve: stopped"
    assert any(line.endswith(": ok") for line in server.connection_lines())


@pytest.mark.parametrize(
    ("options", "signals"),
    [(["--drain-timeout", "1"], 1), ([], 2)],
    ids=["after-drain-timeout", "second-signal"],
)
def test_sigterm_stops_a_stalled_connection(
    serve, stream: bytes, options: list[str], signals: int
) -> None:
    server = serve("--workers", "1", *options)
    with connect(server.port) as sock:
        sock.sendall(stream[: len(stream) // 2])
        wait_until(lambda: len(server.recons()) == 1, "the recon")
        children = server.children()
        server.proc.send_signal(signal.SIGTERM)
        if signals == 2:  # the second signal once the first one is being handled
            server.wait_for(lambda lines: any("stopping:" in x for x in lines), "'stopping:'")
            server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0  # does not hang
        reply = read_to_end(sock)
    assert not any(child.is_running() for child in children)
    messages = StreamReader(io.BytesIO(reply), require_close=False)
    (text,) = [m for m in messages if isinstance(m, Text)]
    assert text.text == "stopped by server shutdown"
    (line,) = server.connection_lines()
    assert line.endswith(": stopped by server shutdown"), line


def test_port_in_use_is_one_clear_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = run_cli("parallel-recon", "serve", "--port", str(port), check=False, timeout=30)
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err


def test_missing_command_is_one_clear_line() -> None:
    proc = run_cli("parallel-recon", "serve", "--command", "no_such_recon_program", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.count("\n") == 1
    assert "'no_such_recon_program': expected an executable program" in err


def test_recon_failure_reaches_the_client_as_one_line(serve, stream: bytes, tmp_path: Path) -> None:
    kernel = tmp_path / "failing_kernel.py"
    kernel.write_text("def reconstruct(kspace, context):\n    raise ValueError('no_such_thing')\n")
    server = serve("--workers", "1", "--recon", str(kernel))
    proc = send(server.address, stream, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.count("\n") == 1, err
    assert "without sending CLOSE" in err and "no_such_thing" in err
    (line,) = server.wait_for_connections(1)
    assert "reconstruction exited with status 1" in line and "no_such_thing" in line


_TGKILL = {"x86_64": 234, "aarch64": 131}
"""The ``tgkill`` system call's number: a signal to one thread of another process."""


def _signal_thread(pid: int, tid: int, signum: int) -> None:
    machine = os.uname().machine
    assert machine in _TGKILL, f"no tgkill number known for {machine}"
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(_TGKILL[machine], pid, tid, signum) == 0, ctypes.get_errno()


def test_sigterm_to_a_connection_thread_still_stops_the_server(serve, stream: bytes) -> None:
    """The kernel may deliver SIGTERM to any thread of the server; one that lands in a
    connection's thread must still wake the accept loop (which may wait in ``select`` for as
    long as no client connects) and stop the server."""
    server = serve("--workers", "1", "--drain-timeout", "1")
    with connect(server.port) as sock:
        sock.sendall(stream[: len(stream) // 2])
        wait_until(lambda: len(server.recons()) == 1, "the recon")
        threads = [t.id for t in psutil.Process(server.proc.pid).threads()]
        others = [tid for tid in threads if tid != server.proc.pid]
        assert others, threads
        _signal_thread(server.proc.pid, others[0], signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0  # does not hang
    assert server.lines[-1] == "serve: stopped"


def test_accelerated_data_through_ready_engines_gives_the_local_bytes(serve, golden: Path) -> None:
    """GRAPPA's calibration runs BLAS: the ready engines must run it single-threaded like the
    command line (a fork server that imported numpy with its default thread pool gave images
    that differ in the last bits)."""
    stream = (golden / "sirf_grappa2_1rep.stream").read_bytes()
    local = run_cli("mrd_stream_recon", "--workers", "1", input=stream).stdout
    server = serve("--workers", "1")
    server.wait_for(lambda lines: any("ready engines" in x for x in lines), "the engines")
    assert send(server.address, stream).stdout == local
