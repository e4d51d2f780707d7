"""Benchmark of MRD v2 (yardl) streams: decoding, reconstruction, mrd-python's tools.

Writes ``perf/results/mrd2.md``.  Every ratio comes from one run of this script, each
measurement the best of ``--repeat`` tries taken in turn:

1. Decoding the large stream (32 coils x 512 samples, ~1.5 GB, the one of
   ``bench_codec.py``) fed through a pipe: our reader on its MRD v2 form against our reader
   on the MRD v1 form (target: within 1.1x of the v1 time).
2. Decoding a small-acquisition stream (1 coil x 128 samples, 200k acquisitions) in v2:
   our reader against ``mrd.BinaryMrdReader`` (target: >= 10x its items per second).
3. ``mrd_stream_recon`` on a v2 stream against the same stream in v1 (target: within 1.1x).
4. ``python -m mrd.tools.stream_recon`` against ``mrd_stream_recon`` on mrd-python's own
   phantom (``python -m mrd.tools.phantom -m 256 -c 32 -r 16``), both whole commands on
   the same cores (goal: ours >= 3x faster).

Readers run in a child process that says "ready" before ``cat`` starts (start-up excluded,
as in ``bench_codec.py``); the commands of 3 and 4 are timed whole.  ``--quick`` uses small
sizes to check the script; its numbers are not the benchmark.

    python perf/bench_mrd2.py            # the full run (a quiet machine: ~10 minutes)
    python perf/bench_mrd2.py --quick    # a check of the script
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

PERF = Path(__file__).resolve().parent
sys.path.insert(0, str(PERF))
sys.path.insert(0, str(PERF.parent))

from bench_codec import (  # noqa: E402
    DATA,
    RESULTS,
    Row,
    StreamCase,
    _cpu_seconds,
    _warm,
    acquisitions,
    ensure_stream,
    header_xml,
    interleaved,
    machine,
    time_pipe,
    verdict,
)

from parallel_recon.protocol import Header  # noqa: E402
from parallel_recon.protocol.mrd2 import Mrd2StreamWriter, Notes  # noqa: E402

_READY_CPU = [0.0]


# ------------------------------------------------------------ reader children
def _ready() -> None:
    _READY_CPU[0] = _cpu_seconds()
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def _child_ours() -> tuple[int, int]:
    from parallel_recon.files.inputs import open_input
    from parallel_recon.protocol import open_reader

    with open_input(None) as source, contextlib.closing(source):
        _ready()
        reader = open_reader(source)
        count = sum(1 for _ in reader)
        return count + 1, reader.offset


def _child_mrd() -> tuple[int, int]:
    import mrd

    from parallel_recon.files.inputs import open_input

    with open_input(None) as source, contextlib.closing(source):
        _ready()
        with mrd.BinaryMrdReader(source) as reader:
            header = reader.read_header()
            count = sum(1 for _ in reader.read_data())
        return count + (header is not None) + 1, -1


CHILDREN: dict[str, Callable[[], tuple[int, int]]] = {"ours": _child_ours, "mrd": _child_mrd}


def run_child(kind: str) -> int:
    messages, nbytes = CHILDREN[kind]()
    cpu = _cpu_seconds() - _READY_CPU[0]
    sys.stdout.write(json.dumps({"messages": messages, "bytes": nbytes, "cpu": cpu}) + "\n")
    return 0


def child(kind: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", kind]


# -------------------------------------------------------------------- streams
def v2_path(case: StreamCase) -> Path:
    return ensure_stream(case).with_suffix(".mrd2")


def ensure_v2(case: StreamCase) -> Path:
    """The v2 form of the ``bench_codec`` stream of ``case`` (generated once)."""
    path = v2_path(case)
    if path.exists():
        return path
    partial = path.with_suffix(".partial")
    with open(partial, "wb", buffering=1 << 20) as sink, Mrd2StreamWriter(sink, Notes()) as w:
        w.write(Header(header_xml(case)))
        for acq in acquisitions(case):
            w.write(acq)
    partial.rename(path)
    return path


def ensure_mrd_phantom(quick: bool) -> Path:
    """mrd-python's phantom, ``-m 256 -c 32 -r 16`` (smaller with ``--quick``)."""
    args = ["-m", "64", "-c", "8", "-r", "2"] if quick else ["-m", "256", "-c", "32", "-r", "16"]
    path = DATA / f"mrdpython_phantom{'_'.join(args).replace('-', '')}.mrd2"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".partial"), "wb") as sink:
            subprocess.run(
                [sys.executable, "-m", "mrd.tools.phantom", *args], stdout=sink, check=True
            )
        path.with_suffix(".partial").rename(path)
    return path


def alternate(
    paths: dict[str, Path], command: list[str], repeat: int
) -> dict[str, tuple[float, float]]:
    """Best wall and CPU seconds of one reader on several streams, tried in turn."""
    best = {name: (float("inf"), float("inf")) for name in paths}
    for _ in range(repeat):
        for name, path in paths.items():
            wall, info = time_pipe(path, command, True)
            best[name] = (min(best[name][0], wall), min(best[name][1], info["cpu"]))
    return best


def time_command(command: list[str], stream: Path) -> float:
    """Wall seconds of ``command < stream > /dev/null`` (start-up included)."""
    with open(stream, "rb") as source:
        start = time.perf_counter()
        subprocess.run(command, stdin=source, stdout=subprocess.DEVNULL, check=True)
        return time.perf_counter() - start


def best_of(commands: dict[str, tuple[list[str], Path]], repeat: int) -> dict[str, float]:
    best = {name: float("inf") for name in commands}
    for _ in range(repeat):
        for name, (command, stream) in commands.items():
            best[name] = min(best[name], time_command(command, stream))
    return best


# ------------------------------------------------------------------ measuring
def measure(quick: bool, repeat: int) -> tuple[list[Row], list[str]]:
    scale = 16 if quick else 1
    large = StreamCase("large", coils=32, samples=512, lines=256, repetitions=45 // scale + 1)
    small = StreamCase("small", coils=1, samples=128, lines=1000, repetitions=200 // scale)
    rows: list[Row] = []
    notes: list[str] = []

    # 1. large stream: v2 against v1, our reader both times
    v1, v2 = ensure_stream(large), ensure_v2(large)
    _warm(v1)
    _warm(v2)
    count = large.messages + 2
    label = f"{large.messages:,} acquisitions of {large.coils} coils x {large.samples} samples"
    _, check = time_pipe(v2, child("ours"), True)
    if check["messages"] != count:
        raise RuntimeError(f"the v2 reader read {check}, expected {count} messages")
    best = alternate({"v1": v1, "v2": v2}, child("ours"), repeat)
    (t1, c1), (t2, c2) = best["v1"], best["v2"]
    rows.append(
        Row(
            f"`cat v1 \\| reader`, {v1.stat().st_size / 1e9:.2f} GB, {label}",
            t1,
            v1.stat().st_size,
            count,
            "1.00",
            cpu=c1,
        )
    )
    rows.append(
        Row(
            f"`cat v2 \\| reader`, {v2.stat().st_size / 1e9:.2f} GB",
            t2,
            v2.stat().st_size,
            count,
            f"{t2 / t1:.2f}x the v1 time ({c2 / c1:.2f}x in CPU)",
            f"<= 1.10x {verdict(t2 / t1 <= 1.1)}",
            cpu=c2,
        )
    )
    notes.append(
        f"large stream: the v2 reader's CPU time beyond the v1 reader's is "
        f"{(c2 - c1) / large.messages * 1e6:.1f} us per readout (its header is ~45 varints: "
        "checked against a layout template with one mask, then only the fields that changed "
        "since the previous readout are decoded)"
    )

    # 2. small acquisitions: ours against mrd-python's reader, both on the v2 stream
    path = ensure_v2(small)
    _warm(path)
    count = small.messages + 2
    both = interleaved(
        path, {"ours": (child("ours"), True, 0), "mrd": (child("mrd"), True, 0)}, repeat
    )
    (ours, ours_cpu), (theirs, theirs_cpu) = both["ours"], both["mrd"]
    size = path.stat().st_size
    rows.append(
        Row(
            f"`cat v2 \\| mrd.BinaryMrdReader`, {size / 1e9:.2f} GB, {small.messages:,} "
            f"acquisitions of 1 coil x 128 samples",
            theirs,
            size,
            count,
            "1.00",
            cpu=theirs_cpu,
        )
    )
    rows.append(
        Row(
            "`cat v2 \\| reader` (ours)",
            ours,
            size,
            count,
            f"{theirs / ours:.1f}x its items per second",
            f">= 10x {verdict(theirs / ours >= 10)}",
            cpu=ours_cpu,
        )
    )

    # 3. reconstruction: the same stream in v2 and v1
    recon_case = StreamCase("recon", coils=32, samples=512, lines=256, repetitions=8 // scale + 1)
    rv1, rv2 = ensure_stream(recon_case), ensure_v2(recon_case)
    recon = [str(Path(sys.executable).parent / "mrd_stream_recon")]
    times = best_of({"v1": (recon, rv1), "v2": (recon, rv2)}, repeat)
    what = (
        f"{recon_case.messages:,} acquisitions of 32 coils x 512 samples "
        f"({recon_case.repetitions} repetitions)"
    )
    rows.append(
        Row(
            f"`mrd_stream_recon < v1`, {what}",
            times["v1"],
            rv1.stat().st_size,
            recon_case.messages,
            "1.00",
        )
    )
    rows.append(
        Row(
            "`mrd_stream_recon < v2`",
            times["v2"],
            rv2.stat().st_size,
            recon_case.messages,
            f"{times['v2'] / times['v1']:.2f}x the v1 time",
            f"<= 1.10x {verdict(times['v2'] / times['v1'] <= 1.1)}",
        )
    )

    # 4. mrd-python's own recon on its own phantom
    phantom = ensure_mrd_phantom(quick)
    theirs_cmd = [sys.executable, "-m", "mrd.tools.stream_recon"]
    plain = [*recon, "--recon-option", "prewhiten=off"]
    times = best_of(
        {"mrd": (theirs_cmd, phantom), "ours": (recon, phantom), "plain": (plain, phantom)},
        max(1, repeat // 2),
    )
    items = 16 * 256 if not quick else 2 * 64
    rows.append(
        Row(
            f"`python -m mrd.tools.stream_recon < phantom` (mrd-python), "
            f"`mrd.tools.phantom {'-m 64 -c 8 -r 2' if quick else '-m 256 -c 32 -r 16'}`",
            times["mrd"],
            phantom.stat().st_size,
            items,
            "1.00",
        )
    )
    rows.append(
        Row(
            "`mrd_stream_recon < phantom` (ours)",
            times["ours"],
            phantom.stat().st_size,
            items,
            f"{times['mrd'] / times['ours']:.1f}x faster",
            f">= 3x {verdict(times['mrd'] / times['ours'] >= 3)}",
        )
    )
    rows.append(
        Row(
            "`mrd_stream_recon --recon-option prewhiten=off < phantom` (ours, the same work)",
            times["plain"],
            phantom.stat().st_size,
            items,
            f"{times['mrd'] / times['plain']:.1f}x faster",
            f">= 3x {verdict(times['mrd'] / times['plain'] >= 3)}",
        )
    )
    notes.append(
        "the recon rows (the last five) time whole commands (interpreter start-up included), "
        "on the same cores; "
        "mrd-python's stream_recon is an FFT and root-sum-of-squares per repetition in one "
        "process; it skips the phantom's noise readouts, while our default run whitens every "
        "readout with them (a 32 x 32 coil mixing of each 512-sample line), so the last row "
        "turns that off to compare the same work"
    )
    notes.append(f"streams in `{DATA.relative_to(PERF.parent)}/` (generated once, git-ignored)")
    return rows, notes


def report(rows: list[Row], notes: list[str], quick: bool, repeat: int) -> str:
    from importlib.metadata import version

    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "## MRD v2 streams (`perf/bench_mrd2.py`)",
        "",
        f"Made by `python perf/bench_mrd2.py{' --quick' if quick else ''}` on {when}; "
        f"{machine()}; mrd-python {version('mrd-python')}.  Each time is the best of "
        f"{repeat} tries taken in turn; all ratios come from this one run."
        + ("  **--quick: small sizes, provisional numbers.**" if quick else ""),
        "",
        "| measurement | seconds | reader CPU s | MB/s | messages/s | ratio | target |",
        "|---|---|---|---|---|---|---|",
        *(row.cells() for row in rows),
        "",
        *(f"- {note}" for note in notes),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument("--repeat", type=int, default=5, help="tries per measurement (best)")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=RESULTS / "mrd2.md")
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args.child)
    rows, notes = measure(args.quick, args.repeat)
    text = report(rows, notes, args.quick, args.repeat)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}", file=sys.stderr)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
