"""The container entrypoints, run as the container would run them (no Docker engine needed).

``docker run -i IMAGE`` runs the entrypoint with stdin/stdout attached; here the same
scripts run under bash with the venv's console scripts (Python image) or the built C++
binary (C++ image) standing in for what the image installs.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import BIN_DIR, REPO_ROOT, run_cli
from test_cpp_recon import build_cpp
from test_server import ServerProcess, _free_port, _wait_listening, send

DOCKER = REPO_ROOT / "docker"
PY_ENTRY = DOCKER / "entrypoint-python.sh"
CPP_ENTRY = DOCKER / "entrypoint-cpp.sh"
SERVE = "parallel-recon serve --host 0.0.0.0 --port 9222"
SOCAT = "socat -t30 TCP4-LISTEN:{port},fork,reuseaddr EXEC:mrd_stream_recon_cpp"


def _env(**extra: str) -> dict[str, str]:
    path = f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, **extra}


def _run(entry: Path, *args: str, data: bytes, env: dict[str, str]) -> bytes:
    proc = subprocess.run(
        ["bash", str(entry), *args], input=data, capture_output=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


@pytest.fixture(scope="module")
def stream(golden: Path) -> bytes:
    return (golden / "phantom_m128_c8_noise.stream").read_bytes()


def test_python_entrypoint_is_the_recon_filter(stream: bytes) -> None:
    expected = run_cli("mrd_stream_recon", "--workers", "2", input=stream).stdout
    assert _run(PY_ENTRY, data=stream, env=_env()) == expected
    assert _run(PY_ENTRY, "--workers", "2", data=stream, env=_env()) == expected
    assert _run(PY_ENTRY, "recon", "--workers", "1", data=stream, env=_env()) == expected


def _fake_bin(tmp_path: Path) -> dict[str, str]:
    """PATH with stand-ins that print how the entrypoint called them."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("parallel-recon", "mrd_stream_recon", "mrd_stream_recon_cpp", "socat"):
        tool = fake / name
        tool.write_text(f'#!/usr/bin/env bash\necho "{name} $*"\n')
        tool.chmod(0o755)
    return {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.mark.parametrize(
    ("entry", "args", "called"),
    [
        (PY_ENTRY, [], "mrd_stream_recon"),
        (PY_ENTRY, ["--workers", "4"], "mrd_stream_recon --workers 4"),
        (PY_ENTRY, ["recon", "--profile"], "mrd_stream_recon --profile"),
        (PY_ENTRY, ["serve"], SERVE),
        (PY_ENTRY, ["serve", "--workers", "2"], f"{SERVE} --workers 2"),
        (PY_ENTRY, ["phantom", "-o", "-"], "parallel-recon phantom -o -"),
        (CPP_ENTRY, [], "mrd_stream_recon_cpp"),
        (CPP_ENTRY, ["serve"], SOCAT.format(port=9222)),
        (CPP_ENTRY, ["serve", "7000"], SOCAT.format(port=7000)),
    ],
)  # fmt: skip
def test_entrypoint_dispatch(tmp_path: Path, entry: Path, args: list[str], called: str) -> None:
    out = _run(entry, *args, data=b"", env=_fake_bin(tmp_path))
    assert out.decode().strip() == called


def test_python_entrypoint_serve_on_loopback(stream: bytes) -> None:
    """`serve` as in the container, with the port and host overridden by later options."""
    expected = run_cli("mrd_stream_recon", "--workers", "1", input=stream).stdout
    server = ServerProcess(
        argv=[
            "bash",
            str(PY_ENTRY),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--workers",
            "1",
        ],
        env=_env(),
    )
    try:
        assert send(server.address, stream).stdout == expected
    finally:
        assert server.stop() == 0


def test_cpp_entrypoint_is_the_cpp_filter(stream: bytes) -> None:
    binary = build_cpp()
    expected = subprocess.run([str(binary)], input=stream, capture_output=True, check=True).stdout
    assert _run(CPP_ENTRY, data=stream, env=_env(MRD_RECON_CPP=str(binary))) == expected
    on_path = {**_env(), "PATH": f"{binary.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    assert _run(CPP_ENTRY, data=stream, env=on_path) == expected


def test_cpp_entrypoint_serve(stream: bytes) -> None:
    binary = build_cpp()
    expected = subprocess.run([str(binary)], input=stream, capture_output=True, check=True).stdout
    port = _free_port()
    proc = subprocess.Popen(
        ["bash", str(CPP_ENTRY), "serve", str(port)],
        env=_env(MRD_RECON_CPP=str(binary)),
        stderr=subprocess.PIPE,
    )
    try:
        _wait_listening(proc.pid, port)
        assert send(f"127.0.0.1:{port}", stream).stdout == expected
        assert send(f"127.0.0.1:{port}", stream).stdout == expected  # fork: serves again
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_scripts_are_valid_bash() -> None:
    for entry in (PY_ENTRY, CPP_ENTRY):
        subprocess.run(["bash", "-n", str(entry)], check=True)
        assert os.access(entry, os.X_OK)


def _stages(text: str) -> dict[str, list[str]]:
    """Each stage's name and its instruction lines (continuations joined)."""
    stages: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in text.replace("\\\n", " ").splitlines():
        match = re.match(r"^FROM (\S+) AS (\S+)$", line)
        if match:
            lines = stages.setdefault(match.group(2), [line])
        elif lines and line and not line.startswith("#"):
            lines.append(line)
    return stages


def test_dockerfile_targets_and_sources() -> None:
    """A fast static check; test_container_images builds and runs both targets."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=debian:bookworm\S*$", text, flags=re.MULTILINE)
    stages = _stages(text)
    for name, lines in stages.items():
        base = lines[0].split()[1]
        assert base == "${BASE_IMAGE}" or base in stages, (name, base)
    for target, entry in (("python", "entrypoint-python.sh"), ("cpp", "entrypoint-cpp.sh")):
        assert f'ENTRYPOINT ["/usr/local/bin/{entry}"]' in stages[target]
        assert "USER recon" in stages[target]
    wheelhouse = (REPO_ROOT / "docker" / "wheelhouse.sh").read_text()
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.MULTILINE):
        for source in line.split()[:-1]:
            if source.startswith("build/wheelhouse/"):  # made by docker/wheelhouse.sh
                assert f'>"$dest/{source.removeprefix("build/wheelhouse/")}"' in wheelhouse
            else:
                assert (REPO_ROOT / source).exists(), source
    mounts = re.findall(r"--mount=type=bind,source=([^,\s]+)", text)
    assert mounts and set(mounts) == {"build/wheelhouse"}
    assert "pip" in text and "--no-index" in text and "libfftw3" in text
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    for needed in ("parallel_recon", "workers", "docker", "pyproject.toml", "README.md"):
        assert needed not in ignored
    assert "!build/wheelhouse" in ignored
