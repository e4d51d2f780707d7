"""Clear answers to the mistakes a new user makes with ``mrd_stream_recon`` and friends.

Each test is one mistake, made at the command line: an unusable ``--profile-json`` path, an
HDF5 file where a stream belongs, out-of-range numbers, a failing or mistyped user kernel,
the old ``--output TYPE`` spelling, a terminal where binary data belongs, ``--version``,
and what ``--profile`` says about its numbers.  The answer is always one line on stderr
(exit 1, or 2 for a usage error), given before any work starts, never a traceback.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, script

from parallel_recon.cli import recon as recon_cli
from parallel_recon.phantom import PhantomSpec, iter_messages
from parallel_recon.protocol import Acquisition, Image, StreamReader, StreamWriter

RECON = "mrd_stream_recon"
CONSOLE_SCRIPTS = ("mrd_phantom", "mrdhdf5_to_stream", "stream_to_mrdhdf5", RECON)


def phantom_stream(**spec: int) -> bytes:
    sink = io.BytesIO()
    with StreamWriter(sink) as writer:
        for msg in iter_messages(PhantomSpec(**{"matrix": 16, "coils": 2, **spec})):
            writer.write(msg)
    return sink.getvalue()


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("raw") / "raw.bin"
    path.write_bytes(phantom_stream())
    return path


def one_line(proc: subprocess.CompletedProcess[bytes], prog: str = RECON) -> str:
    err = proc.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: "), lines[0]
    return lines[0]


def images_of(data: bytes) -> list[Image]:
    return [m for m in StreamReader(io.BytesIO(data)) if isinstance(m, Image)]


def silent_stdin_run(argv: list[str], within: float = 30) -> tuple[int, str]:
    """Run with a stdin that never delivers a byte: only a check made before reading the
    input can end the command (otherwise it waits for the stream and is killed)."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _, err = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"{argv} still waited for its input after {within} s") from None
    return proc.returncode, err.decode(errors="replace")


# ----------------------------------------------------------------- 1. --profile-json
@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("missing/profile.json", "does not exist"),
        (".", "is a directory"),
        ("/sys/profile.json", "cannot create"),  # a folder that refuses new files, even to root
    ],
    ids=["missing-folder", "a-directory", "refusing-folder"],
)
def test_unusable_profile_json_fails_before_the_recon(
    tmp_path: Path, target: str, words: str
) -> None:
    path = target if target.startswith("/") else str(tmp_path / target)
    code, err = silent_stdin_run([script(RECON), "--profile-json", path])
    assert code == 1 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and words in err, err


def test_profile_json_is_written_on_success(raw: Path, tmp_path: Path) -> None:
    target = tmp_path / "profile.json"
    run_cli(RECON, "-i", str(raw), "-o", os.devnull, "--profile-json", str(target))
    assert json.loads(target.read_text())["output"]["images"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["profile.json"]  # no temporary left


# ----------------------------------------------------------------- 3. HDF5 for a stream
def test_an_hdf5_file_where_a_stream_belongs_is_named(tmp_path: Path) -> None:
    h5 = tmp_path / "raw.h5"
    run_cli("mrd_phantom", "-m", "16", "-c", "2", "-o", str(h5))
    runs = {
        RECON: run_cli(RECON, "-i", str(h5), check=False),
        "stream_to_mrdhdf5": run_cli(
            "stream_to_mrdhdf5", str(tmp_path / "out.h5"), input=h5.read_bytes(), check=False
        ),
        "parallel-recon info": run_cli(
            "parallel-recon", "info", "-", input=h5.read_bytes(), check=False
        ),
    }
    for prog, proc in runs.items():
        line = one_line(proc, prog)
        assert proc.returncode == 1
        assert "this is an HDF5 file" in line and "mrdhdf5_to_stream" in line, line
    stream = tmp_path / "raw.bin"
    stream.write_bytes(phantom_stream())
    line = one_line(run_cli("mrdhdf5_to_stream", str(stream), check=False), "mrdhdf5_to_stream")
    assert "is not an HDF5 file" in line and "stream" in line  # and the reverse


# ----------------------------------------------------------------- 4. ranges
@pytest.mark.parametrize(
    "argv",
    [["--series-index", "-1"], ["--series-index", "70000"], ["--workers", "0"],
     ["--calibration-lines", "0"]],
    ids=["series-negative", "series-too-large", "no-workers", "no-calibration-lines"],
)  # fmt: skip
def test_numbers_out_of_range_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        recon_cli.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and argv[0] in err[0] and "expected" in err[0], err


def test_too_many_workers_are_capped_with_the_reason(raw: Path, tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    proc = run_cli(
        RECON, "-i", str(raw), "-o", os.devnull, "--workers", "1000",
        "--profile-json", str(profile),
    )  # fmt: skip
    most = recon_cli.max_workers()
    line = one_line(proc)
    assert f"--workers 1000: using {most}" in line and "per core" in line
    assert json.loads(profile.read_text())["workers"]["count"] == most


# ----------------------------------------------------------------- 5. user kernel errors
FAILING_KERNEL = """
from helper import scale


def reconstruct(kspace, context):
    return scale(kspace)
"""

HELPER = """
import numpy as np


def scale(kspace):
    factor = np.float32(2)
    raise ValueError(f"cannot scale by {factor}")
"""


def test_kernel_failure_names_file_and_line_and_helpers_import(raw: Path, tmp_path: Path) -> None:
    folder = tmp_path / "kernels"
    folder.mkdir()
    (folder / "my_kernel.py").write_text(FAILING_KERNEL)
    (folder / "helper.py").write_text(HELPER)
    proc = run_cli(RECON, "-i", str(raw), "--recon", str(folder / "my_kernel.py"), check=False)
    line = one_line(proc)
    assert proc.returncode == 1
    assert "ValueError: cannot scale by 2.0 (helper.py line 7, in scale)" in line, line
    verbose = run_cli(
        RECON, "-v", "-i", str(raw), "--recon", str(folder / "my_kernel.py"), check=False
    ).stderr.decode()
    assert "Traceback" in verbose and f'"{folder / "helper.py"}", line 7' in verbose
    assert verbose.strip().splitlines()[-1] == line  # the one line still ends it


def test_kernel_import_failure_names_file_and_line(raw: Path, tmp_path: Path) -> None:
    kernel = tmp_path / "broken.py"
    kernel.write_text("import numpy\n\nvalue = numpy.nothing_here\n")
    line = one_line(run_cli(RECON, "-i", str(raw), "--recon", str(kernel), check=False))
    assert "AttributeError" in line and "(broken.py line 3, in <module>)" in line, line


# ----------------------------------------------------------------- 6. kernel options
USER_KERNEL = """
from parallel_recon.workers.cartesian import images_from_coils, to_image_space


def reconstruct(kspace, context):
    return images_from_coils(to_image_space(kspace, context.space), context)
"""

DECLARED = """
from parallel_recon.workers.options import KernelOption

OPTIONS = (KernelOption("strength", "1", "filter strength", float),)
"""


@pytest.mark.parametrize("declares", [False, True], ids=["no-table", "own-table"])
def test_unknown_option_of_a_user_kernel_is_an_error(
    raw: Path, tmp_path: Path, declares: bool
) -> None:
    kernel = tmp_path / "user_kernel.py"
    kernel.write_text(USER_KERNEL + (DECLARED if declares else ""))
    proc = run_cli(
        RECON, "-i", str(raw), "--recon", str(kernel), "--recon-option", "coil=channels",
        check=False,
    )  # fmt: skip
    line = one_line(proc)
    assert proc.returncode == 2 and "--recon-option coil" in line and "prewhiten" in line
    assert ("strength" in line) is declares, line
    if declares:  # a declared option is accepted
        run_cli(RECON, "-i", str(raw), "-o", os.devnull, "--recon", str(kernel),
                "--recon-option", "strength=2")  # fmt: skip


def test_unknown_option_of_a_bundled_kernel_lists_the_known_ones(raw: Path) -> None:
    line = one_line(run_cli(RECON, "-i", str(raw), "--recon-option", "coil=channels",
                            check=False))  # fmt: skip
    assert "--recon-option coil" in line and "coils (default rss)" in line


# ----------------------------------------------------------------- 7. --output vs type
@pytest.mark.parametrize("word", ["magnitdue", "complex", "Phase"])
def test_an_image_type_word_as_output_file_is_refused(
    word: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        recon_cli.main(["--output", word])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--image-type" in line and f"-o ./{word}" in line, line
    assert not (tmp_path / word).exists()


def test_output_file_and_image_type_options(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run_cli(RECON, "-i", str(raw), "-o", "./magnitdue")  # -o is always the file
    run_cli(RECON, "-i", str(raw), "--output", "images.bin", "--image-type", "complex")
    assert images_of(Path("magnitdue").read_bytes())[0].data.dtype == np.float32
    assert images_of(Path("images.bin").read_bytes())[0].data.dtype == np.complex64
    old = run_cli(RECON, "-i", str(raw), "-o", "phase.bin", "--image-output", "phase")
    assert "--image-output is deprecated; use --image-type phase" in one_line(old)
    (image,) = images_of(Path("phase.bin").read_bytes())
    assert int(image.head["image_type"]) == 2


# ----------------------------------------------------------------- 10. terminals
def _pty_run(argv: list[str], terminal: str, stdin_path: Path | None = None) -> tuple[int, str]:
    """Run with stdin or stdout on a pseudo-terminal; returns (exit code, stderr)."""
    master, slave = pty.openpty()
    stdin = slave if terminal == "stdin" else open(stdin_path or os.devnull, "rb")  # noqa: SIM115
    stdout = slave if terminal == "stdout" else subprocess.DEVNULL
    proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
    os.close(slave)
    if terminal != "stdin":
        stdin.close()  # type: ignore[union-attr]
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"{argv} waited on its terminal") from None
    finally:
        while select.select([master], [], [], 0)[0]:
            try:
                if not os.read(master, 65536):
                    break
            except OSError:
                break
        os.close(master)
    return proc.returncode, err.decode(errors="replace")


@pytest.mark.parametrize("command", [RECON, "stream_to_mrdhdf5"])
def test_a_terminal_on_stdin_is_refused_at_once(command: str, tmp_path: Path) -> None:
    extra = [str(tmp_path / "out.h5")] if command == "stream_to_mrdhdf5" else []
    code, err = _pty_run([script(command), *extra], "stdin")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "standard input is a terminal: expected an MRD stream" in err
    assert not (tmp_path / "out.h5").exists()


def test_binary_output_to_a_terminal_needs_force(raw: Path, tmp_path: Path) -> None:
    h5 = tmp_path / "raw.h5"
    run_cli("mrd_phantom", "-m", "16", "-c", "2", "-o", str(h5))
    for argv in (
        [script(RECON), "--workers", "1"],
        [script("mrdhdf5_to_stream"), str(h5)],
        [script("mrd_phantom"), "-m", "16", "-c", "2", "-o", "-"],
    ):
        code, err = _pty_run(argv, "stdout", raw)
        assert code == 1 and "binary output is not written to a terminal" in err, err
        assert "--force" in err and len(err.strip().splitlines()) == 1
    code, err = _pty_run([script(RECON), "--workers", "1", "--force"], "stdout", raw)
    assert code == 0 and err == "", err


# ----------------------------------------------------------------- 11. --version
def test_every_command_has_version() -> None:
    from importlib.metadata import version

    from parallel_recon import __version__

    assert __version__ == version("parallel-recon")  # the facade's and pyproject.toml's
    for name in CONSOLE_SCRIPTS:
        proc = run_cli(name, "--version")
        assert proc.stdout.decode().strip() == f"{name} (parallel-recon) {__version__}"
    from parallel_recon.cli.umbrella import VERBS

    for verb in VERBS:
        out = run_cli("parallel-recon", verb, "--version").stdout.decode().strip()
        assert out.endswith(__version__) and out.split()[0] in ("parallel-recon", *CONSOLE_SCRIPTS)


# ----------------------------------------------------------------- 15 and 18. --profile
def test_profile_says_what_busy_means_and_reports_data_after_close(raw: Path) -> None:
    data = raw.read_bytes() + b"trailing bytes"
    proc = run_cli(RECON, "--workers", "2", "--profile", input=data)
    err = proc.stderr.decode()
    workers = next(line for line in err.splitlines() if line.startswith("  workers"))
    found = re.search(
        r"busy ([\d.]+), ([\d.]+) s of their ([\d.]+), ([\d.]+) s alive \((\d+)%, (\d+)%: wall "
        r"time in kernels and image delivery\); CPU ([\d.]+), ([\d.]+) s",
        workers,
    )
    assert found, workers
    busy, alive = [float(found.group(i)) for i in (1, 2)], [float(found.group(i)) for i in (3, 4)]
    assert all(b <= a + 0.01 for b, a in zip(busy, alive, strict=True)), workers
    after = [line for line in err.splitlines() if line.startswith("  after")]
    assert len(after) == 1 and "ignored data after the CLOSE message" in after[0], err
    assert "worker CPU" not in err  # CPU sits next to the busy time it explains


def test_nan_samples_give_no_numpy_warnings(tmp_path: Path) -> None:
    """Averaged lines with inf and -inf samples (inf + -inf = NaN in the reader's sum)."""
    sink = io.BytesIO()
    spec = PhantomSpec(matrix=16, coils=2, averages=2)
    with StreamWriter(sink) as writer:
        for number, msg in enumerate(iter_messages(spec)):
            if isinstance(msg, Acquisition):
                msg.data[:, 3] = np.inf if number % 2 else -np.inf
            writer.write(msg)
    proc = run_cli(RECON, "--workers", "2", input=sink.getvalue())
    assert proc.stderr == b"", proc.stderr.decode()
    assert len(images_of(proc.stdout)) == 1


def test_unknown_header_elements_leave_stderr_quiet(raw: Path) -> None:
    data = raw.read_bytes()
    length = int.from_bytes(data[2:6], "little")
    xml = data[6 : 6 + length].decode()
    xml = xml.replace("</encoding>", "<vendorThing>7</vendorThing></encoding>", 1)
    payload = xml.encode()
    stream = data[:2] + len(payload).to_bytes(4, "little") + payload + data[6 + length :]
    proc = run_cli(RECON, "--workers", "1", input=stream)
    assert proc.stderr == b"", proc.stderr.decode()
    assert len(images_of(proc.stdout)) == 1
