"""Usage errors exit 2 everywhere, with one line that names the option as the user typed it.

The README promises exit status 2 for a usage error (an unknown option or value, a number out
of range); these used to exit 1, and ``mrd_phantom -m 7`` named the internal field
``matrix`` rather than ``-m/--matrix``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerated_helpers import phantom_bytes
from conftest import run_cli

from parallel_recon.phantom import PhantomSpec

RAW = phantom_bytes(PhantomSpec(matrix=16, coils=2))


def _usage_error(proc, prog: str, *needles: str) -> str:  # type: ignore[no-untyped-def]
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert err.startswith(f"{prog}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["-m", "7"], ["-m/--matrix must be an integer in [8, 16384], got 7"]),
        (["-m", "15"], ["-m/--matrix must be even, got 15"]),
        (["-m", "64", "-a", "40"], ["-a/--acceleration must be <= -m/--matrix / 2 = 32"]),
        (["--noise-dwell", "-1"], ["--noise-dwell must be"]),
        (["--orientation", "sideways"], ["--orientation must be one of"]),
    ],
    ids=["matrix-small", "matrix-odd", "acceleration", "noise-dwell", "orientation"],
)
def test_phantom_values_out_of_range_name_the_option(
    args: list[str], needles: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "raw.h5"
    proc = run_cli("mrd_phantom", *args, "-o", str(out), check=False)
    err = _usage_error(proc, "mrd_phantom", *needles)
    assert "matrix must" not in err.replace("--matrix must", "")  # never the bare field name
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--recon", "grapa"], ["--recon 'grapa'", "did you mean grappa?"]),
        (["--recon", "missing_kernel.py"], ["--recon 'missing_kernel.py'"]),
        (["--memory-limit", "200%"], ["--memory-limit '200%'", "(0, 100]"]),
        (["--memory-limit", "lots"], ["--memory-limit 'lots'"]),
        (["--recon-option", "lamda=1"], ["--recon-option lamda", "lambda"]),
        (["--recon-option", "lambda=abc"], ["--recon-option lambda=abc"]),
        (["--recon-option", "novalue"], ["--recon-option 'novalue': expected KEY=VALUE"]),
    ],
    ids=["kernel-typo", "kernel-file", "percent", "size", "option-key", "option-value", "pair"],
)
def test_recon_usage_errors_exit_2_before_reading(args: list[str], needles: list[str]) -> None:
    proc = run_cli("mrd_stream_recon", *args, input=RAW, check=False)
    _usage_error(proc, "mrd_stream_recon", *needles)
    assert proc.stdout == b""


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:", "host:port", ":9222"])
def test_send_without_a_port_is_a_usage_error(address: str) -> None:
    proc = run_cli("parallel-recon", "send", address, input=RAW, check=False)
    _usage_error(proc, "parallel-recon send", "expected HOST:PORT")
    assert proc.stdout == b""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--recon", "grapa"], "--recon 'grapa'"),
        (["--memory-limit", "200%"], "--memory-limit '200%'"),
    ],
)
def test_batch_usage_errors_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    (tmp_path / "raw.bin").write_bytes(RAW)
    out = tmp_path / "out"
    proc = run_cli("parallel-recon", "batch", str(tmp_path / "raw.bin"), "-o", str(out), *args,
                   check=False)  # fmt: skip
    _usage_error(proc, "parallel-recon batch", needle)
    assert not out.exists()


def test_serve_with_a_kernel_typo_exits_2_at_start_up() -> None:
    proc = run_cli("parallel-recon", "serve", "--port", "0", "--recon", "grapa", check=False)
    _usage_error(proc, "parallel-recon serve", "--recon 'grapa'", "did you mean grappa?")


def test_api_usage_errors_are_still_configuration_errors() -> None:
    """The Python API raises the same class tree: a UsageError is a ConfigurationError."""
    import parallel_recon as pr
    from parallel_recon.errors import ConfigurationError, UsageError

    with pytest.raises(UsageError, match="did you mean grappa"):
        pr.reconstruct(RAW, recon="grapa", workers=1)
    assert issubclass(UsageError, ConfigurationError)
