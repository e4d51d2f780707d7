"""The container images, built and run as users run them (podman, no Docker engine needed).

The module's fixture builds both Dockerfile targets with ``docker/build-images.sh`` (what
``make images`` runs), reusing the engine's layer cache and the local Debian base, then
every test pipes real data through ``podman run -i IMAGE`` from a shell pipeline, serves
over a published port, feeds bad input, or kills a container mid-stream. Outputs are
compared byte for byte with the same pipeline run on the host. Containers are started with
``--rm`` and a unique name, and each test checks that none is left behind.

The images are built under tags of this run's own (``localhost/parallel-recon:test-XXXX``),
never the global names ``make images`` uses, so a concurrent run from another checkout can
neither replace them mid-module nor be replaced; the tags are removed when the module ends
(the engine keeps the cached layers).

Host and container run the same numpy wheels, whose OpenBLAS picks its kernels by the CPU it
detects unless ``OPENBLAS_CORETYPE`` says otherwise; a host that sets OPENBLAS_* variables
(e.g. ``OPENBLAS_CORETYPE=Haswell`` on an AVX-512 machine) would otherwise run other kernels
than the container, and the prewhitened recon could differ in the last bit.  Every recon
container therefore gets the host's OPENBLAS_* variables (:data:`SAME_BLAS`), so that the
byte-for-byte comparison compares the same arithmetic.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from conftest import BIN_DIR, REPO_ROOT, run_cli, script
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from test_cpp_recon import build_cpp
from test_server import _free_port, _wait_listening

# the first test also builds the images (two to three minutes with empty caches, most of it
# in debootstrap, the Debian mirror and dpkg); every command below has its own, shorter
# timeout
pytestmark = pytest.mark.timeout(900)

PYTHON_IMAGE = "parallel-recon"
CPP_IMAGE = "parallel-recon-cpp"
"""The images' names (as ``make images`` tags them); this module builds them under
:func:`tagged` names."""
RUN_TAG = f"test-{uuid.uuid4().hex[:12]}"
SAME_BLAS = [
    f"--env={name}={value}" for name, value in sorted(os.environ.items())
    if name.startswith("OPENBLAS_")
]  # fmt: skip
"""``podman run`` options giving a container the host's OPENBLAS_* settings."""
LOCAL_BASE = "localhost/debian-base:bookworm"
BUILD_TIMEOUT_S = 840
RUN_TIMEOUT_S = 120
STARTUP_S = 60
SERVE_PORT = 9222


@dataclass(frozen=True)
class Images:
    """Both images as built for this module, and how to reach podman with this host's
    settings (CONTAINERS_CONF written by the build script)."""

    env: dict[str, str]
    ids: dict[str, str]


def _podman_env() -> dict[str, str]:
    conf = REPO_ROOT / "build" / "images" / "containers.conf"
    path = f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "CONTAINERS_CONF": str(conf)}


def tagged(image: str) -> str:
    """This run's build of ``image`` (``parallel-recon`` or ``parallel-recon-cpp``)."""
    return f"localhost/{image}:{RUN_TAG}"


def _build() -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ENGINE": "podman",
        "PYTHON": sys.executable,
        "PYTHON_IMAGE": tagged(PYTHON_IMAGE),
        "CPP_IMAGE": tagged(CPP_IMAGE),
    }
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "docker" / "build-images.sh")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"docker/build-images.sh failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_podman(
    env: dict[str, str], *args: str, input: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(
        ["podman", *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        env=env,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {shlex.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def podman(
    images: Images, *args: str, input: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    return run_podman(images.env, *args, input=input, check=check)


def _image_ids(env: dict[str, str]) -> dict[str, str]:
    ids = {}
    for image in (tagged(PYTHON_IMAGE), tagged(CPP_IMAGE), LOCAL_BASE):
        proc = run_podman(env, "image", "inspect", "--format", "{{.Id}}", image, check=False)
        if proc.returncode == 0:
            ids[image] = proc.stdout.decode().strip()
    return ids


@pytest.fixture(scope="module")
def images() -> Iterator[Images]:
    """Both images, built under this run's tags; the tags are removed at the end (the
    layers stay in the engine's cache: --no-prune)."""
    try:
        _build()
        env = _podman_env()
        yield Images(env=env, ids=_image_ids(env))
    finally:
        env = _podman_env()
        for image in (tagged(PYTHON_IMAGE), tagged(CPP_IMAGE)):
            run_podman(env, "rmi", "--ignore", "--no-prune", image)
            gone = run_podman(env, "image", "exists", image, check=False)
            assert gone.returncode == 1, f"{image} is still there"


@pytest.fixture
def name(images: Images) -> Iterator[str]:
    """A unique container name; the test fails if a container of that name outlives it."""
    container = f"parallel-recon-test-{uuid.uuid4().hex[:10]}"
    yield container
    left = _containers(images, f"name=^{container}$")
    if left:
        podman(images, "rm", "--force", container, check=False)
    assert not left, f"container {container} was left behind"


def _containers(images: Images, selector: str, timeout: float = 30) -> list[str]:
    """Ids of the containers that podman's ``--filter selector`` picks, waiting up to
    ``timeout`` s for the removal of ``--rm`` containers that have just ended."""
    deadline = time.monotonic() + timeout
    while True:
        out = podman(images, "ps", "--all", "--quiet", "--filter", selector)
        ids = out.stdout.decode().split()
        if not ids or time.monotonic() > deadline:
            return ids
        time.sleep(0.2)


def shell_pipeline(
    images: Images, tmp_path: Path, *stages: list[str], output: Path | None = None
) -> tuple[list[int], list[str]]:
    """Run ``stage1 | stage2 | ...`` in bash as typed at a prompt (stdout of the last
    stage to ``output`` when given); returns each stage's exit status and stderr."""
    errs = [tmp_path / f"stage{i}.err" for i in range(len(stages))]
    parts = [
        f"{shlex.join(cmd)} 2>{shlex.quote(str(err))}"
        for cmd, err in zip(stages, errs, strict=True)
    ]
    line = " | ".join(parts) + (f" >{shlex.quote(str(output))}" if output else "")
    proc = subprocess.run(
        ["bash", "-c", f'{line}; echo "${{PIPESTATUS[@]}}"'],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=images.env,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    codes = [int(code) for code in proc.stdout.split()[-len(stages) :]]
    return codes, [err.read_text() for err in errs]


def _local_h5_pipeline(raw: Path, out: Path, recon: list[str]) -> None:
    """The same pipeline on the host, with no container."""
    stream = run_cli("mrdhdf5_to_stream", str(raw)).stdout
    images_stream = subprocess.run(
        recon, input=stream, capture_output=True, timeout=RUN_TIMEOUT_S, check=True
    ).stdout
    run_cli("stream_to_mrdhdf5", str(out), input=images_stream)


@pytest.fixture(scope="module")
def stream(golden: Path) -> bytes:
    return (golden / "phantom_m128_c8_noise.stream").read_bytes()


# ------------------------------------------------------------ pipelines through images
def _local_recon(image: str) -> list[str]:
    """What the image runs, as installed or built on the host."""
    return [script("mrd_stream_recon")] if image == PYTHON_IMAGE else [str(build_cpp())]


@pytest.mark.parametrize(
    ("image", "raw_name"),
    [
        (PYTHON_IMAGE, "golden/phantom_m128_c8_noise.h5"),
        (PYTHON_IMAGE, "sirf_grappa2_1rep.h5"),  # accelerated: GRAPPA
        (CPP_IMAGE, "golden/phantom_m128_c8_noise.h5"),
    ],
)
def test_image_in_a_pipe_gives_the_local_bytes(
    images: Images, shared_data: Path, tmp_path: Path, name: str, image: str, raw_name: str
) -> None:
    raw = shared_data / raw_name
    out, local = tmp_path / "out.h5", tmp_path / "local.h5"
    codes, errs = shell_pipeline(
        images,
        tmp_path,
        ["mrdhdf5_to_stream", str(raw)],
        ["podman", "run", "-i", "--rm", "--name", name, *SAME_BLAS, tagged(image)],
        ["stream_to_mrdhdf5", str(out)],
    )
    assert codes == [0, 0, 0] and errs == ["", "", ""], errs
    _local_h5_pipeline(raw, local, _local_recon(image))
    assert out.read_bytes() == local.read_bytes()


def test_every_step_in_containers_with_a_mounted_folder(
    images: Images, tmp_path: Path, name: str
) -> None:
    """The README's all-container pipeline: phantom, to-stream, recon, to-hdf5."""
    data = tmp_path / "data"
    data.mkdir()
    mount = ["--user", f"{os.getuid()}:{os.getgid()}", "-v", f"{data}:/data"]
    run = ["podman", "run", "-i", "--rm", *SAME_BLAS]
    phantom = ["-m", "64", "-c", "4", "-r", "2", "--seed", "3"]
    python = tagged(PYTHON_IMAGE)
    podman(images, "run", "--rm", "--name", name, *SAME_BLAS, *mount, python, "phantom",
           *phantom, "-o", "/data/raw.h5")  # fmt: skip
    codes, errs = shell_pipeline(
        images,
        tmp_path,
        [*run, *mount, python, "to-stream", "/data/raw.h5"],
        [*run, python, "--workers", "2"],
        [*run, *mount, python, "to-hdf5", "/data/images.h5"],
    )
    assert codes == [0, 0, 0] and errs == ["", "", ""], errs
    run_cli("mrd_phantom", *phantom, "-o", str(tmp_path / "raw.h5"))
    assert (data / "raw.h5").read_bytes() == (tmp_path / "raw.h5").read_bytes()
    _local_h5_pipeline(data / "raw.h5", tmp_path / "local.h5", [script("mrd_stream_recon")])
    assert (data / "images.h5").read_bytes() == (tmp_path / "local.h5").read_bytes()


# ----------------------------------------------------------- serve over a published port
def _wait_listening_inside(images: Images, container: str, port: int) -> None:
    """Until the container has a TCP socket listening on ``port`` (from /proc/net/tcp*)."""
    pattern = re.compile(rf"^\s*\d+: [0-9A-F]+:{port:04X} [0-9A-F]+:0000 0A ", re.MULTILINE)
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        proc = podman(images, "exec", container, "cat", "/proc/net/tcp", "/proc/net/tcp6",
                      check=False)  # fmt: skip
        if pattern.search(proc.stdout.decode()):
            return
        time.sleep(0.2)
    logs = podman(images, "logs", container, check=False)
    raise AssertionError(f"{container} did not listen on {port}: {logs.stderr.decode()}")


@pytest.mark.parametrize("image", [PYTHON_IMAGE, CPP_IMAGE])
def test_serve_in_a_container_over_a_published_port(
    images: Images, stream: bytes, name: str, image: str
) -> None:
    expected = subprocess.run(
        _local_recon(image), input=stream, capture_output=True, timeout=RUN_TIMEOUT_S, check=True
    ).stdout
    podman(images, "run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1::{SERVE_PORT}",
           *SAME_BLAS, tagged(image), "serve")  # fmt: skip
    try:
        _wait_listening_inside(images, name, SERVE_PORT)
        published = podman(images, "port", name, f"{SERVE_PORT}/tcp").stdout.decode().split()[0]
        host, port = published.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) != 0
        for _ in range(2):  # one recon per connection, the server stays up
            reply = run_cli("parallel-recon", "send", published, input=stream)
            assert reply.stdout == expected
    finally:
        podman(images, "stop", "--time", "20", name, check=False)


def test_socat_starts_one_container_per_connection(images: Images, stream: bytes) -> None:
    """The README's remote recipe without the ssh hop: socat forks ``podman run -i`` for
    each connection, and each container ends (and is removed) with its connection."""
    expected = run_cli("mrd_stream_recon", input=stream).stdout
    label = f"parallel-recon-test={uuid.uuid4().hex[:10]}"
    image_id = images.ids[tagged(PYTHON_IMAGE)]  # socat's EXEC address cannot hold the tag's ':'
    port = _free_port()
    socat = subprocess.Popen(
        ["socat", "-t30", f"TCP4-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr",
         f"EXEC:podman run -i --rm --label {label} {' '.join(SAME_BLAS)} {image_id}"],
        stdin=subprocess.DEVNULL,
        env=images.env,
    )  # fmt: skip
    try:
        _wait_listening(socat.pid, port)
        for _ in range(2):
            reply = run_cli("parallel-recon", "send", f"127.0.0.1:{port}", input=stream)
            assert reply.stdout == expected
    finally:
        socat.terminate()
        socat.wait(timeout=STARTUP_S)
    assert not _containers(images, f"label={label}")


# ------------------------------------------------------------------- failures
@pytest.mark.parametrize(
    ("image", "prog"), [(PYTHON_IMAGE, "mrd_stream_recon"), (CPP_IMAGE, "mrd_stream_recon_cpp")]
)  # fmt: skip
def test_bad_input_through_a_container_is_one_line(
    images: Images, name: str, image: str, prog: str
) -> None:
    garbage = b"\x37\x13" + bytes(range(200))
    proc = podman(
        images, "run", "-i", "--rm", "--name", name, tagged(image), input=garbage, check=False
    )
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert proc.stdout == b""
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: "), err
    assert "unknown message id" in err and "byte offset 0" in err


def _wait_running(images: Images, container: str) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        proc = podman(images, "inspect", "--format", "{{.State.Status}}", container, check=False)
        if proc.stdout.decode().strip() == "running":
            return
        time.sleep(0.1)
    raise AssertionError(f"container {container} did not start")


@pytest.mark.parametrize("image", [PYTHON_IMAGE, CPP_IMAGE])
def test_killed_container_ends_the_host_pipeline(
    images: Images, stream: bytes, tmp_path: Path, name: str, image: str
) -> None:
    """``... | podman run -i IMAGE | stream_to_mrdhdf5 out.h5``, the container killed while
    half the stream is still to come: the host side ends at once with one clear line."""
    consumer = subprocess.Popen(
        [script("stream_to_mrdhdf5"), str(tmp_path / "out.h5")],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert consumer.stdin is not None and consumer.stderr is not None
    container = subprocess.Popen(
        ["podman", "run", "-i", "--rm", "--name", name, tagged(image)],
        stdin=subprocess.PIPE,
        stdout=consumer.stdin,
        stderr=subprocess.PIPE,
        env=images.env,
    )
    consumer.stdin.close()
    assert container.stdin is not None and container.stderr is not None
    try:
        container.stdin.write(stream[: len(stream) // 2])
        container.stdin.flush()
        _wait_running(images, name)
        podman(images, "kill", name)
        container.stdin.close()
        assert container.wait(timeout=STARTUP_S) == 128 + 9
        assert consumer.wait(timeout=STARTUP_S) == 1
        err = consumer.stderr.read().decode()
        assert err.count("\n") == 1 and err.startswith("stream_to_mrdhdf5: error: "), err
        assert "expected a CLOSE message" in err, err
    finally:
        for proc in (container, consumer):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        container.stderr.close()
        consumer.stderr.close()
    assert not _containers(images, f"name=^{name}$")


# ---------------------------------------------------------------- what the images hold
def _runtime_closure(project: str) -> set[str]:
    """The project and the distributions it needs at run time (no extras), by the host
    environment's metadata: what the python image must hold, and nothing else."""
    needed, todo = set(), [project]
    while todo:
        dist = canonicalize_name(todo.pop())
        if dist in needed:
            continue
        needed.add(dist)
        for text in metadata.requires(dist) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return needed


INSPECT_PYTHON_IMAGE = """
import importlib.metadata as md, json, shutil, subprocess, sysconfig, os
print(json.dumps({
    "dists": sorted(d.metadata["Name"] for d in md.distributions()),
    "tools": [t for t in ("cc", "gcc", "g++", "c++", "clang", "ld", "as", "make", "cmake",
                          "pip", "pip3") if shutil.which(t)],
    "python_h": os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")),
    "packages": subprocess.run(["dpkg-query", "-W", "-f", "${Package}\\n"],
                               capture_output=True, text=True, check=True).stdout.split(),
}))
"""


def test_python_image_holds_only_the_runtime(images: Images) -> None:
    proc = podman(images, "run", "--rm", "--entrypoint", "python3", tagged(PYTHON_IMAGE), "-c",
                  INSPECT_PYTHON_IMAGE)  # fmt: skip
    found = json.loads(proc.stdout)
    dists = {canonicalize_name(name) for name in found["dists"]}
    assert dists == _runtime_closure("parallel-recon")
    for tool in ("pytest", "hypothesis", "pytest-timeout", "mypy", "ruff", "setuptools", "pip"):
        assert tool not in dists
    assert found["tools"] == [] and not found["python_h"], found
    build_packages = re.compile(r"^(gcc|g\+\+|cpp|clang|binutils|make|cmake)(-[0-9.]+)?$|-dev$")
    assert [p for p in found["packages"] if build_packages.search(p)] == []


def test_python_image_has_every_console_script(images: Images) -> None:
    entry_points = metadata.distribution("parallel-recon").entry_points
    scripts = [ep.name for ep in entry_points if ep.group == "console_scripts"]
    assert len(scripts) >= 5, scripts
    check = " && ".join(f"{name} --help >/dev/null" for name in scripts)
    proc = podman(images, "run", "--rm", "--entrypoint", "bash", tagged(PYTHON_IMAGE), "-c",
                  f"{check} && command -v {' '.join(scripts)}")  # fmt: skip
    assert proc.stdout.decode().split() == [f"/opt/venv/bin/{name}" for name in scripts]


@pytest.mark.parametrize("image", [PYTHON_IMAGE, CPP_IMAGE])
def test_images_run_as_an_unprivileged_user(images: Images, image: str) -> None:
    user = podman(images, "image", "inspect", "--format", "{{.Config.User}}", tagged(image))
    assert user.stdout.decode().strip() == "recon"
    uid = podman(images, "run", "--rm", "--entrypoint", "id", tagged(image), "-u")
    assert int(uid.stdout) != 0


def test_a_second_build_reuses_the_base_and_every_layer(images: Images) -> None:
    again = _build()
    assert _image_ids(images.env) == images.ids
    assert "debootstrap" not in again.stderr
