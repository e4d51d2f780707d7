"""Benchmark of ``mrd_stream_recon``: does the parallel engine pay for itself?

Writes ``perf/results/recon.md``.  Three streams, every command fed through a pipe from a
warm page cache, all measured side by side in one run (rounds interleaved, best of
``--rounds``), kernel ``--recon cartesian``:

- the 2D stream ``mrd_phantom -m 256 -c 32 -O 2 -r 16 -o -`` (538 MB),
- the 3D stream ``mrd_phantom -m 128 -c 16 -p 32 -r 8 -o -`` (1.08 GB),
- a compute-bound 3D stream (written here: 16 coils, 128x64x16, 24 repetitions, zero-filled
  4x interpolation along y and z, so each unit's FFT work is 16x its k-space).

For each: ``cat | cat``; ``mrd_stream_recon --workers 1`` and ``--workers 2`` with their
``--profile-json``, each run's wall time beside its own lower bound
``max(cat | cat, reader CPU-s, busiest worker's CPU-s, (reader + workers CPU-s) / cores)``;
the reader's CPU-s per GB;
a single-process numpy/scipy recon doing the same work with the same kernel (``--baseline``
mode of this script).  On the 2D stream also a straightforward single-process recon in the
style of ismrmrd-python's examples (``--ismrmrd-style``: ``ProtocolDeserializer``, numpy FFT
per repetition, root-sum-of-squares), and the cost of ``--trace``.

``--quick`` uses much smaller streams, to check the script.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

PERF = Path(__file__).resolve().parent
RESULTS = PERF / "results"
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Case:
    """A synthetic Cartesian acquisition (2x readout oversampling)."""

    name: str
    matrix: int
    coils: int
    slices: int = 1
    partitions: int = 1
    repetitions: int = 1
    interpolation: int = 1
    """Recon-space matrix / encoded matrix along y and z (zero-filled interpolation: more FFT
    work per input byte, which makes a stream compute-bound)."""

    @property
    def k0(self) -> int:
        return 2 * self.matrix

    @property
    def line_bytes(self) -> int:
        return 2 + 340 + self.coils * self.k0 * 8

    @property
    def nbytes(self) -> int:
        lines = self.matrix * self.partitions * self.slices * self.repetitions
        return lines * self.line_bytes


def header_xml(case: Case) -> str:
    def limit(name: str, maximum: int, center: int = 0) -> str:
        return (
            f"<{name}><minimum>0</minimum><maximum>{maximum}</maximum>"
            f"<center>{center}</center></{name}>"
        )

    m, z, f = case.matrix, case.partitions, case.interpolation
    limits = (
        limit("kspace_encoding_step_1", m - 1, m // 2)
        + limit("kspace_encoding_step_2", z - 1, z // 2)
        + limit("slice", case.slices - 1)
        + limit("repetition", case.repetitions - 1)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
        "<experimentalConditions><H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz>"
        "</experimentalConditions><encoding>"
        f"<encodedSpace><matrixSize><x>{2 * m}</x><y>{m}</y><z>{z}</z></matrixSize>"
        f"<fieldOfView_mm><x>512</x><y>256</y><z>{2 * z}</z></fieldOfView_mm></encodedSpace>"
        f"<reconSpace><matrixSize><x>{m}</x><y>{m * f}</y><z>{z * f}</z></matrixSize>"
        f"<fieldOfView_mm><x>256</x><y>256</y><z>{2 * z}</z></fieldOfView_mm></reconSpace>"
        f"<encodingLimits>{limits}</encodingLimits><trajectory>cartesian</trajectory>"
        "</encoding></ismrmrdHeader>"
    )


def _unit_kspace(case: Case, seed: int) -> np.ndarray:
    """k-space ``[k2, k1, coils, k0]`` of a disc phantom seen by smooth coil sensitivities."""
    import scipy.fft

    rng = np.random.default_rng(seed)
    z, y, x = case.partitions, case.matrix, case.k0
    zz, yy, xx = np.meshgrid(
        np.linspace(-1, 1, z), np.linspace(-1, 1, y), np.linspace(-2, 2, x), indexing="ij"
    )
    image = ((xx**2 + yy**2 + 0.5 * zz**2) < 0.7).astype(np.complex64)
    out = np.empty((z, y, case.coils, x), np.complex64)
    for c in range(case.coils):
        angle = 2 * np.pi * c / case.coils
        sens = np.exp(-((xx - np.cos(angle)) ** 2 + (yy - np.sin(angle)) ** 2)).astype(np.complex64)
        coil = image * sens + 0.01 * rng.standard_normal(image.shape).astype(np.float32)
        axes = (0, 1, 2)
        k = scipy.fft.fftshift(scipy.fft.fftn(scipy.fft.ifftshift(coil, axes), axes=axes), axes)
        out[:, :, c, :] = k.astype(np.complex64)
    return out


def write_stream(case: Case, sink: BinaryIO) -> None:
    """Header, then every line (interleaved slices, repetitions outermost), then CLOSE."""
    from parallel_recon.protocol import (
        ACQUISITION_HEADER_DTYPE,
        Header,
        MessageId,
        encode_message,
        message_id_bytes,
    )

    sink.write(encode_message(Header(header_xml(case))))
    kspace = [_unit_kspace(case, s) for s in range(case.slices)]
    head = np.zeros(1, ACQUISITION_HEADER_DTYPE)[0]
    head["version"] = 1
    head["number_of_samples"] = case.k0
    head["active_channels"] = head["available_channels"] = case.coils
    head["center_sample"] = case.matrix
    head["read_dir"], head["phase_dir"], head["slice_dir"] = (1, 0, 0), (0, 1, 0), (0, 0, 1)
    acq_id = message_id_bytes(MessageId.ACQUISITION)
    order = [*range(0, case.slices, 2), *range(1, case.slices, 2)]
    scan = 0
    for rep in range(case.repetitions):
        for k2 in range(case.partitions):
            for k1 in range(case.matrix):
                last = k2 == case.partitions - 1 and k1 == case.matrix - 1
                for n, s in enumerate(order):
                    flags = (1 << 7) if last else 0  # LAST_IN_SLICE
                    if last and n == len(order) - 1:
                        flags |= 1 << 13  # LAST_IN_REPETITION
                    head["flags"] = flags
                    head["scan_counter"] = scan
                    head["idx"]["kspace_encode_step_1"] = k1
                    head["idx"]["kspace_encode_step_2"] = k2
                    head["idx"]["slice"] = s
                    head["idx"]["repetition"] = rep
                    sink.write(acq_id + head.tobytes())
                    sink.write(kspace[s][k2, k1].tobytes())
                    scan += 1
    sink.write(message_id_bytes(MessageId.CLOSE))


# ------------------------------------------------------------------ baseline
def baseline(source: BinaryIO, sink: BinaryIO) -> None:
    """Single process, plain numpy/scipy: the same reading, placement, kernel and writing."""
    from parallel_recon.engine.plan import plan_from_header
    from parallel_recon.protocol import Acquisition, Header, StreamWriter
    from parallel_recon.protocol import StreamReader as Reader
    from parallel_recon.workers.api import ReconContext, UnitInfo, UnitKey
    from parallel_recon.workers.cartesian import reconstruct

    reader = Reader(source)
    plan = None
    units: dict[UnitKey, tuple[np.ndarray, bytes, int]] = {}
    sequence = 0
    index_per_series: dict[int, int] = {}
    with StreamWriter(sink) as writer:
        for msg in reader:
            if isinstance(msg, Header):
                plan = plan_from_header(msg.xml)
                writer.write(msg)
                continue
            if not isinstance(msg, Acquisition) or plan is None:
                continue
            h = msg.head
            idx = h["idx"]
            key = UnitKey(
                int(h["encoding_space_ref"]),
                int(idx["slice"]),
                int(idx["contrast"]),
                int(idx["phase"]),
                int(idx["set"]),
                int(idx["repetition"]),
            )
            space = plan.spaces[key.encoding_space]
            k2n, k1n, k0n = space.kspace_shape
            if key not in units:
                shape = (k2n, k1n, msg.data.shape[0], k0n)
                units[key] = (np.zeros(shape, np.complex64), h.tobytes(), 0)
            kspace, ref, lines = units[key]
            k1 = int(idx["kspace_encode_step_1"]) - space.k1_center + k1n // 2
            k2 = int(idx["kspace_encode_step_2"]) - space.k2_center + k2n // 2
            kspace[k2, k1] = msg.data
            if k1 == k1n // 2 and k2 == k2n // 2:
                ref = h.tobytes()
            units[key] = (kspace, ref, lines + 1)
            if int(h["flags"]) & (1 << 7):
                kspace, ref, lines = units.pop(key)
                info = UnitInfo(key, sequence, ref, kspace.shape[2], lines)
                sequence += 1
                context = ReconContext(plan, info, overwrite_kspace=True)  # as a worker
                for image in reconstruct(kspace, context):
                    series = int(image.head["image_series_index"])
                    index_per_series[series] = index_per_series.get(series, 0) + 1
                    image.head["image_index"] = index_per_series[series]
                    writer.write(image)
                sink.flush()


# ------------------------------------------------------------- ismrmrd-python
def ismrmrd_style(source: BinaryIO, sink: BinaryIO) -> None:
    """A straightforward single-process recon as ismrmrd-python's examples write one.

    ``ProtocolDeserializer`` gives the header and the acquisitions; each repetition's lines
    are put in a ``[coils, ky, kx]`` array; at its last line it is transformed with numpy's
    centred 2D inverse FFT, the readout oversampling cropped, the coils combined by root
    sum of squares, and the image written with ``ProtocolSerializer``.
    """
    import ismrmrd
    import ismrmrd.xsd
    from ismrmrd.serialization import ProtocolDeserializer, ProtocolSerializer

    last_in_slice = 8
    kspace: dict[tuple[int, int], np.ndarray] = {}
    serializer = ProtocolSerializer(sink)
    matrix = recon = (0, 0)
    for item in ProtocolDeserializer(source).deserialize():
        if isinstance(item, ismrmrd.xsd.ismrmrdHeader):
            encoding = item.encoding[0]
            matrix = (encoding.encodedSpace.matrixSize.y, encoding.encodedSpace.matrixSize.x)
            recon = (encoding.reconSpace.matrixSize.y, encoding.reconSpace.matrixSize.x)
            serializer.serialize(item)
            continue
        if not isinstance(item, ismrmrd.Acquisition) or item.is_flag_set(19):  # noise
            continue
        key = (item.idx.slice, item.idx.repetition)
        if key not in kspace:
            kspace[key] = np.zeros((item.active_channels, *matrix), np.complex64)
        kspace[key][:, item.idx.kspace_encode_step_1, :] = item.data
        if item.is_flag_set(last_in_slice):
            data = kspace.pop(key)
            image = np.fft.fftshift(
                np.fft.ifft2(np.fft.ifftshift(data, axes=(1, 2)), axes=(1, 2)), axes=(1, 2)
            )
            start = (matrix[1] - recon[1]) // 2
            image = image[:, :, start : start + recon[1]]
            rss = np.sqrt(np.sum(np.abs(image) ** 2, axis=0)).astype(np.float32)
            out = ismrmrd.Image.from_array(rss[np.newaxis, np.newaxis])
            out.slice, out.repetition = key
            serializer.serialize(out)
    serializer.close()


# ------------------------------------------------------------------- running
def _burn(_: int) -> float:
    """About a second of single-threaded FFT work; returns its wall time."""
    data = np.ones((16, 128, 256), np.complex64)
    start = time.perf_counter()
    for _ in range(100):
        np.fft.fftn(data, axes=(1, 2))
    return time.perf_counter() - start


def parallel_capacity() -> float:
    """Speed-up that two independent CPU-bound processes get on this machine right now.

    2.0 on two idle cores; less when other work shares them.  The ceiling for any
    ``--workers 2`` measurement taken at the same time.
    """
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_burn, [0, 0])  # warm up (imports, FFT plans)
        _burn(0)
        start = time.perf_counter()
        _burn(0)
        one = time.perf_counter() - start
        start = time.perf_counter()
        pool.map(_burn, [0, 0])
        two = time.perf_counter() - start
    return 2 * one / two


def _timed(command: str) -> float:
    start = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", command], check=True)
    return time.perf_counter() - start


def _cores() -> int:
    from parallel_recon.engine.cores import available_cores

    return available_cores()


@dataclass
class Run:
    """One ``mrd_stream_recon`` run: wall seconds outside and its profile."""

    wall: float
    profile: dict

    @property
    def reader_cpu(self) -> float:
        return float(self.profile["reader"]["cpu_s"])

    @property
    def workers_cpu(self) -> float:
        return float(sum(self.profile["workers"]["cpu_s"]))

    @property
    def engine_wall(self) -> float:
        """From the engine's start to its last image: the profile's wall time."""
        return float(self.profile["wall_s"])

    @property
    def busiest_worker_cpu(self) -> float:
        return float(max(self.profile["workers"]["cpu_s"]))

    def bound(self, cat: float, cores: int) -> float:
        """No run is faster than its input pipe, than any one of its processes (a process
        runs on one core at a time: with one worker on a compute-bound stream, that worker's
        CPU time), or than all their CPU time spread over the cores."""
        total = self.reader_cpu + self.workers_cpu
        return max(cat, self.reader_cpu, self.busiest_worker_cpu, total / cores)


@dataclass
class StreamResult:
    label: str
    path: Path
    cat: float = float("inf")
    runs: dict[str, Run] = field(default_factory=dict)
    baseline: float = float("inf")
    ismrmrd_style: float | None = None


def _recon(stream: Path, workers: int, profile: Path, *extra: str) -> Run:
    cmd = (
        f"cat {shlex.quote(str(stream))} | {shlex.quote(str(BIN / 'mrd_stream_recon'))} "
        f"--recon cartesian --workers {workers} --profile-json {shlex.quote(str(profile))} "
        f"{' '.join(shlex.quote(e) for e in extra)} > /dev/null"
    )
    seconds = _timed(cmd)
    return Run(seconds, json.loads(profile.read_text()))


def _keep_best(result: StreamResult, name: str, run: Run) -> None:
    if name not in result.runs or run.wall < result.runs[name].wall:
        result.runs[name] = run


def _phantom(args: str, path: Path) -> None:
    _timed(f"{shlex.quote(str(BIN / 'mrd_phantom'))} {args} -o - > {shlex.quote(str(path))}")


def _streams(tmp: Path, quick: bool) -> list[StreamResult]:
    two_d, three_d = "-m 256 -c 32 -O 2 -r 16", "-m 128 -c 16 -p 32 -r 8"
    compute = Case("compute-bound 3D", matrix=64, coils=16, partitions=16, repetitions=24,
                   interpolation=4)  # fmt: skip
    if quick:
        two_d, three_d = "-m 128 -c 16 -O 2 -r 4", "-m 64 -c 8 -p 16 -r 2"
        compute = Case("compute-bound 3D", matrix=32, coils=8, partitions=8, repetitions=4,
                       interpolation=4)  # fmt: skip
    results = []
    for label, args in (
        (f"2D (`mrd_phantom {two_d}`)", two_d),
        (f"3D (`mrd_phantom {three_d}`)", three_d),
    ):
        path = tmp / f"{len(results)}.stream"
        _phantom(args, path)
        results.append(StreamResult(label, path))
    path = tmp / "compute.stream"
    with open(path, "wb", buffering=1 << 22) as sink:
        write_stream(compute, sink)
    results.append(
        StreamResult(
            f"compute-bound 3D ({compute.coils} coils, {compute.k0}x{compute.matrix}x"
            f"{compute.partitions}, {compute.repetitions} reps, recon {compute.matrix}x"
            f"{compute.matrix * 4}x{compute.partitions * 4})",
            path,
        )
    )
    for result in results:
        print(f"wrote {result.path} ({result.path.stat().st_size / 1e9:.2f} GB)", file=sys.stderr)
    return results


def measure(results: list[StreamResult], tmp: Path, rounds: int) -> dict[str, float]:
    """Every command of every stream, ``rounds`` times in turn; best of each kept."""
    me = f"{shlex.quote(sys.executable)} {shlex.quote(__file__)}"
    extra: dict[str, float] = {"trace_on": float("inf"), "trace_off": float("inf")}
    for result in results:
        _timed(f"cat {shlex.quote(str(result.path))} > /dev/null")  # warm the page cache
    for round_ in range(rounds):
        for index, result in enumerate(results):
            q = shlex.quote(str(result.path))
            result.cat = min(result.cat, _timed(f"cat {q} | cat > /dev/null"))
            for workers in (1, 2):
                run = _recon(result.path, workers, tmp / f"p{index}_{workers}.json")
                _keep_best(result, f"--workers {workers}", run)
            result.baseline = min(result.baseline, _timed(f"cat {q} | {me} --baseline > /dev/null"))
            if index == 0:
                seconds = _timed(f"cat {q} | {me} --ismrmrd-style > /dev/null")
                result.ismrmrd_style = min(result.ismrmrd_style or seconds, seconds)
                trace = tmp / "trace.json"
                on = _recon(result.path, 2, tmp / "pt.json", "--trace", str(trace))
                extra["trace_on"] = min(extra["trace_on"], on.wall)
                extra["trace_events"] = len(json.loads(trace.read_text())["traceEvents"])
                extra["trace_off"] = min(extra["trace_off"], result.runs["--workers 2"].wall)
        print(f"round {round_ + 1} of {rounds} done", file=sys.stderr)
    return extra


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _stream_rows(result: StreamResult, cores: int) -> list[str]:
    gb = result.path.stat().st_size / 1e9
    rows = [
        f"| {result.label}, {gb:.2f} GB: `cat \\| cat` | {result.cat:.2f} | | | | | | |",
    ]
    for run in result.runs.values():
        bound = run.bound(result.cat, cores)
        w = run.profile["workers"]
        rows.append(
            f"| `--workers {w['count']}` | {run.wall:.2f} | {run.engine_wall:.2f} | "
            f"{bound:.2f} | {run.wall / bound:.2f}x / {run.engine_wall / bound:.2f}x | "
            f"{run.reader_cpu:.2f} ({run.reader_cpu / gb:.2f}/GB) | "
            + "+".join(f"{c:.2f}" for c in w["cpu_s"])
            + f" | {run.profile['output']['first_image_s']:.2f} |"
        )
    rows.append(f"| single-process numpy/scipy, same kernel | {result.baseline:.2f} | | | | | | |")
    if result.ismrmrd_style is not None:
        rows.append(
            f"| ismrmrd-python style (`ProtocolDeserializer`, numpy FFT, RSS) | "
            f"{result.ismrmrd_style:.2f} | | | | | | |"
        )
    return rows


def _goal_rows(results: list[StreamResult], cores: int) -> list[str]:
    rows = []
    for index, result in enumerate(results):
        one, two = result.runs["--workers 1"], result.runs["--workers 2"]
        speedup = one.wall / two.wall
        wanted = 1.6 if index == 2 else 1.0
        name = result.label.split(" (")[0]
        rows.append(
            f"| {name}: `--workers 2` vs `--workers 1` | {speedup:.2f}x faster | "
            f">= {wanted}x: {_verdict(speedup >= wanted)} |"
        )
        for label, run in (("1", one), ("2", two)):
            ratio = run.wall / run.bound(result.cat, cores)
            engine = run.engine_wall / run.bound(result.cat, cores)
            rows.append(
                f"| {name}, `--workers {label}` wall / lower bound | {ratio:.2f}x "
                f"(engine's own wall: {engine:.2f}x) | <= 1.2x: {_verdict(ratio <= 1.2)} "
                f"(engine's: {_verdict(engine <= 1.2)}) |"
            )
        per_gb = [r.reader_cpu for r in (one, two)]
        spread = abs(per_gb[1] - per_gb[0]) / per_gb[0]
        rows.append(
            f"| {name}: reader CPU-s per GB, 1 vs 2 workers | "
            f"{one.reader_cpu / (result.path.stat().st_size / 1e9):.2f} vs "
            f"{two.reader_cpu / (result.path.stat().st_size / 1e9):.2f} ({spread:.0%} apart) | "
            f"within 15%: {_verdict(spread <= 0.15)} |"
        )
        best = min(one.wall, two.wall)
        rows.append(
            f"| {name}: pipeline vs single-process numpy/scipy baseline | "
            f"{result.baseline / best:.2f}x faster | >= 1.25x: "
            f"{_verdict(result.baseline / best >= 1.25)} |"
        )
        if result.ismrmrd_style is not None:
            rows.append(
                f"| {name}: pipeline vs ismrmrd-python style recon | "
                f"{result.ismrmrd_style / best:.2f}x faster | goal >= 5x: "
                f"{_verdict(result.ismrmrd_style / best >= 5)} |"
            )
    return rows


def run(quick: bool, rounds: int) -> str:
    load_before = os.getloadavg()
    cores = _cores()
    with tempfile.TemporaryDirectory(prefix="bench_recon_") as tmp:
        tmpdir = Path(tmp)
        results = _streams(tmpdir, quick)
        capacity_before = parallel_capacity()
        extra = measure(results, tmpdir, rounds)
        capacity = (capacity_before + parallel_capacity()) / 2
        load_after = os.getloadavg()
        text = _report(results, extra, cores, capacity, load_before, load_after, quick, rounds)
    return text


def _report(
    results: list[StreamResult],
    extra: dict[str, float],
    cores: int,
    capacity: float,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    quick: bool,
    rounds: int,
) -> str:
    trace_cost = extra["trace_on"] / extra["trace_off"] - 1
    return "\n".join(
        [
            "## Reconstruction pipeline (`mrd_stream_recon`)",
            "",
            f"Made by `perf/bench_recon.py{' --quick' if quick else ''}` on "
            f"{time.strftime('%Y-%m-%d %H:%M')}, {cores} cores available; kernel "
            "`--recon cartesian`; streams fed through a pipe from a warm page cache; best of "
            f"{rounds} interleaved rounds.  Load average (1, 5, 15 min) "
            f"{', '.join(f'{v:.2f}' for v in load_before)} before, "
            f"{', '.join(f'{v:.2f}' for v in load_after)} after.  Two independent "
            f"single-threaded FFT processes ran {capacity:.2f}x as fast as one (2.00 on two "
            "idle cores).",
            "",
            "*Wall* is the whole command as a user times it (interpreter start-up, imports "
            "and shut-down included); *engine* is the profile's wall time, from the engine's "
            "start to its last image.  *Bound* is the run's own lower bound "
            "`max(cat | cat, reader CPU-s, busiest worker's CPU-s, (reader + workers CPU-s) / "
            "cores)` from its profile.",
            "",
            "| run | wall s | engine s | bound s | wall / bound (engine / bound) | reader CPU-s "
            "| worker CPU-s | first image s |",
            "|---|---|---|---|---|---|---|---|",
            *(row for result in results for row in _stream_rows(result, cores)),
            "",
            "| target | measured | goal |",
            "|---|---|---|",
            *_goal_rows(results, cores),
            f"| `--trace` on the 2D stream, `--workers 2` | {extra['trace_on']:.2f} s vs "
            f"{extra['trace_off']:.2f} s without ({trace_cost:+.0%}; "
            f"{int(extra.get('trace_events', 0))} events) | off: no cost (no-op calls per "
            "unit) |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small streams, to check the script")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument(
        "--baseline", action="store_true", help="single-process recon, stdin -> stdout"
    )
    parser.add_argument(
        "--ismrmrd-style", action="store_true", help="ismrmrd-python style recon, stdin -> stdout"
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not write results")
    args = parser.parse_args(argv)
    if args.baseline or args.ismrmrd_style:
        source = os.fdopen(sys.stdin.fileno(), "rb", buffering=1 << 20, closefd=False)
        sink = os.fdopen(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False)
        (baseline if args.baseline else ismrmrd_style)(source, sink)
        sink.flush()
        return 0
    text = run(args.quick, 1 if args.quick else args.rounds)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "recon.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
