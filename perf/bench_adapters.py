"""Benchmark of the HDF5 adapters against the ISMRMRD C++ tools and ismrmrd-python.

Writes ``perf/results/adapters.md``.  Three data sets are generated once into ``perf/data/``
with numpy + :class:`MrdHdf5Writer` (and reused when present):

(a) ``large``: 32 coils, 512 samples, 256 lines x 36 repetitions (about 1.2 GB);
(b) ``medium``: the same readouts, 256 lines x 8 repetitions (2048 acquisitions, 269 MB);
(c) ``small``: 1 coil, 128 samples, 128 lines x 782 repetitions (100 096 acquisitions).

For each, in one run:

* against the ISMRMRD C++ tools (``ismrmrd_stream_to_hdf5``, ``ismrmrd_hdf5_to_stream``,
  from ``--cpp-tools DIR`` or ``$ISMRMRD_TOOLS``; named "not measured" where absent): the
  commands as a user runs them (start-up included), interleaved, best of ``--rounds``:
  stream -> new HDF5 file, stream appended to a file that already holds it (each tool's
  own file, copied afresh before every try), HDF5 -> stream file;
* against ismrmrd-python: ``ismrmrd.Dataset.read_acquisition`` + ``ProtocolSerializer``
  and ``ProtocolDeserializer`` + ``Dataset.append_acquisition`` (in this process);
* for reference, ``cat stream | cat > /dev/null``.

ismrmrd-python works one acquisition per HDF5 call and is slow; it is timed on the first
``--subset`` acquisitions of each file and its rate is reported as measured on that subset
(rates, not totals, are compared).  ``--quick`` uses small sizes to check the script.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ismrmrd
import numpy as np

from parallel_recon.hdf5 import MrdHdf5Writer, read_header_xml
from parallel_recon.protocol.messages import Acquisition, Header

PERF = Path(__file__).resolve().parent
REPO = PERF.parent
DATA = PERF / "data"
RESULTS = PERF / "results"
BIN = Path(sys.executable).parent
HEADER_SOURCE = REPO.parent / "shared" / "data" / "golden" / "phantom_m128_c8_noise.h5"


@dataclass
class Case:
    """One generated data set."""

    name: str
    coils: int
    samples: int
    lines: int
    repetitions: int

    @property
    def count(self) -> int:
        return self.lines * self.repetitions

    @property
    def h5(self) -> Path:
        return DATA / f"adapters_{self.name}_c{self.coils}_s{self.samples}_n{self.count}.h5"


def _generate(case: Case, xml: str) -> None:
    """Write the case's HDF5 file: smooth-ish random k-space, correct counters and flags."""
    if case.h5.exists():
        return
    DATA.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = (
        rng.standard_normal((case.coils, case.samples))
        + 1j * rng.standard_normal((case.coils, case.samples))
    ).astype(np.complex64)
    partial = case.h5.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    with MrdHdf5Writer(partial) as writer:
        writer.write(Header(xml))
        template = Acquisition.from_arrays(base)
        for i in range(case.count):
            line, rep = i % case.lines, i // case.lines
            acq = Acquisition.from_arrays(base * np.float32(1 + line * 1e-3), head=template.head)
            acq.head["scan_counter"] = i
            acq.head["acquisition_time_stamp"] = i
            acq.head["idx"]["kspace_encode_step_1"] = line
            acq.head["idx"]["repetition"] = rep
            acq.head["flags"] = (1 << 13) if line == case.lines - 1 else 0
            writer.write(acq)
    partial.rename(case.h5)


REPEAT = 2
"""Each ismrmrd-python measurement is the best of this many runs (the machine is shared)."""
CPP_TOOLS = ("ismrmrd_stream_to_hdf5", "ismrmrd_hdf5_to_stream")


def _timed(fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(REPEAT):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _run(*cmd: str, stdin: Path | None = None) -> None:
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as source:
        subprocess.run(cmd, stdin=source, check=True, stdout=subprocess.DEVNULL)


def _python_to_stream(h5: Path, limit: int) -> int:
    """ismrmrd-python: Dataset reads + ProtocolSerializer, to a discarded buffer."""
    sink = io.BytesIO()
    dataset = ismrmrd.Dataset(str(h5), "dataset", create_if_needed=False, mode="r")
    try:
        serializer = ismrmrd.serialization.ProtocolSerializer(sink)
        serializer.serialize(ismrmrd.xsd.CreateFromDocument(dataset.read_xml_header()))
        for i in range(min(limit, dataset.number_of_acquisitions())):
            serializer.serialize(dataset.read_acquisition(i))
            if sink.tell() > 256 << 20:
                sink.seek(0)
                sink.truncate()
        serializer.close()
    finally:
        dataset.close()
    return 0


def _python_to_hdf5(stream: Path, out: Path, limit: int) -> None:
    """ismrmrd-python: ProtocolDeserializer + Dataset.append_acquisition."""
    out.unlink(missing_ok=True)
    dataset = ismrmrd.Dataset(str(out), "dataset", create_if_needed=True)
    try:
        with open(stream, "rb") as source:
            deserializer = ismrmrd.serialization.ProtocolDeserializer(source)
            done = 0
            for item in deserializer.deserialize():
                if isinstance(item, ismrmrd.Acquisition):
                    dataset.append_acquisition(item)
                    done += 1
                    if done >= limit:
                        break
                elif isinstance(item, ismrmrd.xsd.ismrmrdHeader):
                    dataset.write_xml_header(item.toXML())
    finally:
        dataset.close()


def cpp_tools(option: str | None) -> Path | None:
    """The folder of the ISMRMRD C++ stream tools, or None where they are not built."""
    folder = option or os.environ.get("ISMRMRD_TOOLS")
    if folder and all((Path(folder) / tool).is_file() for tool in CPP_TOOLS):
        return Path(folder)
    return None


def _timed_run(*cmd: str) -> float:
    start = time.perf_counter()
    _run(*cmd)
    return time.perf_counter() - start


def _versus_cpp(case: Case, tools: Path, rounds: int) -> list[str]:
    """Our commands against the C++ tools, interleaved, best of ``rounds`` each; rows of
    the table (ratio: the C++ tool's time over ours, >= 1.0 is as fast or faster)."""
    stream = case.h5.with_suffix(".stream")
    _run(str(BIN / "mrdhdf5_to_stream"), str(case.h5), "-o", str(stream))
    work = {name: case.h5.with_suffix(f".{name}.h5") for name in ("ours", "cpp")}
    base = {name: case.h5.with_suffix(f".{name}-base.h5") for name in ("ours", "cpp")}
    ours_in = [str(BIN / "stream_to_mrdhdf5"), "-i", str(stream), "-o"]
    cpp_in = [str(tools / "ismrmrd_stream_to_hdf5"), "-i", str(stream), "-o"]
    writers = {"ours": ours_in, "cpp": cpp_in}
    for name, command in writers.items():
        base[name].unlink(missing_ok=True)
        _run(*command, str(base[name]))
    best: dict[tuple[str, str], float] = {}

    def keep(key: tuple[str, str], seconds: float) -> None:
        best[key] = min(best.get(key, float("inf")), seconds)

    for _ in range(rounds):
        for name, command in writers.items():
            work[name].unlink(missing_ok=True)
            keep(("new", name), _timed_run(*command, str(work[name])))
        for name, command in writers.items():
            shutil.copyfile(base[name], work[name])  # not timed: the file to append to
            os.sync()
            keep(("append", name), _timed_run(*command, str(work[name])))
        out = case.h5.with_suffix(".out.stream")
        keep(
            ("read", "ours"),
            _timed_run(str(BIN / "mrdhdf5_to_stream"), str(case.h5), "-o", str(out)),
        )
        keep(
            ("read", "cpp"),
            _timed_run(str(tools / "ismrmrd_hdf5_to_stream"), "-i", str(case.h5), "-o", str(out)),
        )
        out.unlink()
    for path in (*work.values(), *base.values(), stream):
        path.unlink(missing_ok=True)
    nbytes = case.count * (case.coils * case.samples * 8 + 342)
    rows = []
    for what, label in (
        ("new", "stream -> new HDF5 file"),
        ("append", "stream appended to a file holding it once"),
        ("read", "HDF5 -> stream"),
    ):
        ours, cpp = best[(what, "ours")], best[(what, "cpp")]
        rows.append(
            f"| {case.name} | {label} | {ours:.3f} | {cpp:.3f} | {nbytes / ours / 1e6:,.0f} | "
            f"{cpp / ours:.2f}x |"
        )
    return rows


def _bench(case: Case, subset: int) -> list[str]:
    stream = case.h5.with_suffix(".stream")
    ours_h5 = case.h5.with_suffix(".ours.h5")
    theirs_h5 = case.h5.with_suffix(".ismrmrd.h5")
    t_ours_out = _timed(
        lambda: _run(str(BIN / "mrdhdf5_to_stream"), str(case.h5), "-o", str(stream))
    )
    nbytes = stream.stat().st_size
    per_msg = nbytes / case.count
    n_py = min(subset, case.count)
    t_py_out = _timed(lambda: _python_to_stream(case.h5, n_py))

    def ours_in() -> None:
        ours_h5.unlink(missing_ok=True)  # the command appends: start from nothing each time
        _run(str(BIN / "stream_to_mrdhdf5"), "-i", str(stream), "-o", str(ours_h5))

    t_ours_in = _timed(ours_in)
    t_py_in = _timed(lambda: _python_to_hdf5(stream, theirs_h5, n_py))
    t_cat = _timed(
        lambda: subprocess.run(f"cat '{stream}' | cat > /dev/null", shell=True, check=True)
    )
    for path in (ours_h5, theirs_h5):
        path.unlink(missing_ok=True)
    stream.unlink()

    def row(what: str, t_ours: float, t_py: float) -> str:
        ours_rate, py_rate = case.count / t_ours, n_py / t_py
        return (
            f"| {case.name} | {what} | {nbytes / t_ours / 1e6:.0f} | {ours_rate:,.0f} | "
            f"{n_py * per_msg / t_py / 1e6:.1f} | {py_rate:,.0f} | {ours_rate / py_rate:.1f}x |"
        )

    size = (
        f"{case.coils} coil(s) x {case.samples} samples x {case.count:,} acquisitions, "
        f"stream {nbytes / 1e6:,.1f} MB; ismrmrd-python timed on the first {n_py:,}; "
        f"`cat | cat` {nbytes / t_cat / 1e6:.0f} MB/s"
    )
    return [
        size,
        row("hdf5 -> stream", t_ours_out, t_py_out),
        row("stream -> hdf5", t_ours_in, t_py_in),
    ]


def _ram_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument(
        "--subset", type=int, default=None, help="acquisitions timed for ismrmrd-python"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated HDF5 files")
    parser.add_argument("--output", default=str(RESULTS / "adapters.md"))
    parser.add_argument("--cpp-tools", help="folder with the ISMRMRD C++ stream tools")
    parser.add_argument("--rounds", type=int, default=3, help="tries of each C++ comparison")
    args = parser.parse_args(argv)
    tools = cpp_tools(args.cpp_tools)
    xml = read_header_xml(HEADER_SOURCE)
    assert xml is not None
    if args.quick:
        cases = [Case("large", 4, 256, 64, 2), Case("small", 1, 128, 128, 16)]
    else:
        cases = [
            Case("large", 32, 512, 256, 36),
            Case("medium", 32, 512, 256, 8),
            Case("small", 1, 128, 128, 782),
        ]
    subsets = {"large": args.subset or 1000, "medium": args.subset or 1000}
    subsets["small"] = args.subset or 5000
    lines = []
    versus: list[str] = []
    load_before = os.getloadavg()[0]
    for case in cases:
        _generate(case, xml)
        if tools is not None:
            versus += _versus_cpp(case, tools, 1 if args.quick else args.rounds)
        summary, *rows = _bench(case, subsets[case.name])
        lines.append((summary, rows))
        if not args.keep:
            case.h5.unlink()
    command = ".venv/bin/python perf/bench_adapters.py" + (" --quick" if args.quick else "")
    report = [
        "# HDF5 adapters vs the ISMRMRD C++ tools and ismrmrd-python",
        "",
        f"Date: {time.strftime('%Y-%m-%d %H:%M')}; machine: {platform.machine()}, "
        f"nproc {os.cpu_count()}, RAM {_ram_gb():.0f} GiB, Python {platform.python_version()}, "
        f"ismrmrd-python {getattr(ismrmrd, '__version__', '?')}; 1-minute load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after.",
        "",
        "## Against the ISMRMRD C++ tools",
        "",
    ]
    if tools is None:
        report += [
            "Not measured: the ISMRMRD C++ stream tools were not found (build them from the "
            "ismrmrd repository and give `--cpp-tools DIR` or `ISMRMRD_TOOLS`).",
            "",
        ]
    else:
        report += [
            "Both as commands (start-up included), writing a file on the same disk; best of "
            f"{1 if args.quick else args.rounds} interleaved tries.  *ratio* is the C++ "
            "tool's time over ours: >= 1.0x is as fast or faster.  An append writes to a "
            "copy of the file that replaces it when complete (so a failed append changes "
            "nothing, see README); the C++ tool appends in place.",
            "",
            "| data | what | ours s | C++ s | ours MB/s | ratio |",
            "|---|---|---|---|---|---|",
            *versus,
            "",
        ]
    report += [
        "## Against ismrmrd-python",
        "",
        f"Command: `{command}` (data generated into perf/data/, deleted afterwards); "
        f"each time is the best of {REPEAT} runs.",
        "Ours: the console scripts in a fresh process (start-up included), writing/reading a",
        "file. ismrmrd-python: `Dataset.read_acquisition` + `ProtocolSerializer`, and",
        "`ProtocolDeserializer` + `Dataset.append_acquisition`, in-process, on a subset",
        "(rates compared, measured in the same run).",
        "",
    ]
    for summary, _ in lines:
        report.append(f"- {summary}")
    report += [
        "",
        "| data | direction | ours MB/s | ours msg/s | ismrmrd-python MB/s | "
        "ismrmrd-python msg/s | ratio (msg/s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, rows in lines:
        report += rows
    text = "\n".join(report) + "\n"
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
