"""The supervisor: sizes the rings, starts the reader, workers and writer, watches them all.

Start-up happens in the supervisor so that every child inherits what it needs by ``fork``:
it reads the stream up to the first acquisition's header (the XML header and the coil count
size the slots), loads the kernel, creates the shared-memory rings (in /dev/shm without a
name, so nothing can stay there whatever happens next) and starts the children.

Then it waits on the children's sentinels and a status pipe.  Any failure (bad input, a
kernel error, a child killed by a signal, a closed downstream pipe, SIGINT, SIGTERM) kills
every child, and the command ends with one line on stderr and the matching exit code.
Children die with the supervisor (``PR_SET_PDEATHSIG``), so none can be orphaned.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from parallel_recon.workers.api import UnitKey
from parallel_recon.workers.noise import DEFAULT_RECEIVER_BANDWIDTH

from ..errors import PipelineError, ReconError
from ..progress import Progress
from ..protocol import MessageId, Notes, StreamReader, open_reader
from .calibration import CalibrationKeeper, CalibrationStore
from .derived import DerivedStore
from .kernels import (
    check_options,
    check_trajectories,
    is_non_cartesian,
    kernel_label,
    load_kernel,
    warm_imports,
)
from .lifetime import die_with_parent
from .noise import NoiseBlock, NoiseGate, noise_from_file
from .pool import WorkerLoop, describe_unit
from .prelude import Prelude, no_acquisitions, read_prelude
from .profiling import (
    TreeSampler,
    build_profile,
    cpu_seconds,
    format_profile,
    write_profile_json,
)
from .reader import StreamIngest
from .readout_ingest import ReadoutIngest
from .ring import Shared, SharedRing, default_memory_limit
from .sizing import plan_memory
from .trace import Trace, make_trace, process_start_monotonic, write_trace

__all__ = ["EXIT_TERMINATED", "PipelineOptions", "run_pipeline"]

EXIT_TERMINATED = 143
_STOP_GRACE_S = 2.0


class _Terminated(Exception):
    """SIGTERM reached the supervisor."""


@dataclass(frozen=True)
class PipelineOptions:
    """What the command line decides."""

    workers: int = 1
    recon: str = "auto"
    output: str = "magnitude"
    series_index: int = 1
    options: Mapping[str, str] = field(default_factory=dict)
    memory_limit: int | None = None
    profile: bool = False
    profile_json: str | None = None
    progress: bool = False
    verbose: bool = False
    prog: str = "mrd_stream_recon"
    noise_file: str | None = None
    """``--noise FILE``: the noise scan comes from this MRD stream or HDF5 file."""
    calibration_lines: int | None = None
    """Calibration lines one slice may have (None: a quarter of the k1 x k2 grid, >= 64)."""
    trace: str | None = None
    """``--trace FILE.json``: write the run's timeline there (Chrome trace-event format)."""
    announce_stop: bool = True
    """Print ``<prog>: terminated`` when SIGTERM stops the run (a batch runner does not: the
    batch reports the stop once, for all its files)."""
    output_format: str | None = None
    """``--format ismrmrd|mrd2``: the output's stream generation (None: the input's)."""
    recon_from_stream: bool = False
    """Whether a CONFIG_FILE message in the stream chooses the kernel (when the command
    line did not: ``--recon`` and ``-c`` win)."""


# ------------------------------------------------------------------- children
def _child(role: str, shared: Shared, parent: int, body: Callable[[], dict[str, Any]]) -> None:
    """Common frame of every child: signals, error reporting, a hard exit."""
    die_with_parent(parent, role)
    _quiet_numerics()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's business
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    code = 0
    try:
        shared.report("stats", role, body())
    except ReconError as exc:
        if isinstance(exc, PipelineError) and exc.detail:
            shared.report("detail", role, exc.detail)
        shared.report("error", role, str(exc))
        code = 1
    except BrokenPipeError:
        shared.report("broken_pipe", role)
    except Exception as exc:
        if os.environ.get("PARALLEL_RECON_DEBUG"):
            import traceback

            traceback.print_exc()
        shared.report("error", role, f"internal error in the {role}: {type(exc).__name__}: {exc}")
        code = 1
    os._exit(code)


def _quiet_numerics() -> None:
    """No numpy floating-point warnings from the children: a NaN or an overflow in the data
    (``invalid value encountered in add``) is carried into the images, and a warning printed
    from a child would only push the one line that matters off the user's screen."""
    np.seterr(all="ignore")
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="numpy")


# ----------------------------------------------------------------- start-up


class _Supervisor:
    """One run: owns the rings and the children from start to teardown."""

    def __init__(self, opts: PipelineOptions, origin: float):
        self.opts = opts
        self.origin = origin
        self.trace = make_trace(opts.trace is not None, origin)
        self.trace.start_process("supervisor")
        self.ctx = multiprocessing.get_context("fork")
        self.procs: dict[str, Any] = {}
        self.rings: list[SharedRing] = []
        self.stats: dict[str, dict[str, Any]] = {}
        self.failure: str | None = None
        self.broken_pipe = False
        self.sampler = TreeSampler(interval=0.1)
        self.sample_memory = bool(opts.profile or opts.profile_json)
        """Peak memory is sampled only when a profile will report it (psutil costs CPU)."""
        self.warnings: list[str] = []
        self.details: list[str] = []
        """Full tracebacks behind a failure (printed with --verbose)."""

    def start(self, source: BinaryIO, sink: BinaryIO) -> None:
        """Read the prelude, allocate, fork (a stream without acquisitions is an error)."""
        trace = self.trace
        trace.begin("start-up", "startup")
        trace.begin("import the header model", "startup")
        from .plan import plan_from_header, read_header, receiver_noise_bandwidth

        trace.end()
        opts = self.opts
        trace.begin("read the header", "startup")
        stream: StreamReader = open_reader(
            source, notes=Notes(lambda text: _warn(opts.prog, text), fields=False)
        )
        self.output_generation = opts.output_format or stream.generation
        prelude = read_prelude(stream)
        trace.end()
        if opts.recon_from_stream:
            opts = self.opts = _recon_from_config(opts, prelude)
        trace.begin("load the kernel", "startup")
        kernel = load_kernel(opts.recon)
        typed = check_options(opts.recon, dict(opts.options))
        preset = noise_from_file(opts.noise_file) if opts.noise_file else None
        trace.end()
        self.prelude = prelude
        xml = prelude.header_xml
        plan = plan_from_header(
            xml,
            output=opts.output,
            series_index=opts.series_index,
            options=dict(opts.options),
        )
        trajectories = [space.trajectory for space in plan.spaces]
        first = prelude.first_head
        first_dims = int(first["trajectory_dimensions"]) if first is not None else 0
        non_cartesian = is_non_cartesian(opts.recon, trajectories, first_dims)
        check_trajectories(opts.recon, trajectories, non_cartesian)
        bent = read_header(xml).warning()
        if bent:
            _warn(opts.prog, bent)
        if prelude.first_head is None:
            raise no_acquisitions(prelude.others.get(MessageId.IMAGE.name, 0))
        trace.begin("plan and shared memory", "startup")
        limit = opts.memory_limit if opts.memory_limit is not None else default_memory_limit()
        sizes = plan_memory(
            plan,
            xml,
            int(prelude.first_head["active_channels"]),
            workers=opts.workers,
            memory_limit=limit,
            calibration_lines=opts.calibration_lines,
            non_cartesian=non_cartesian,
            unit_samples=int(typed.get("unit_samples", 0) or 0),
            kernel=opts.recon,
        )
        layout, slots, calibration = sizes.layout, sizes.kspace_slots, sizes.calibration
        readouts = sizes.readouts
        kspace = SharedRing("k", sizes.kspace_slot_bytes, slots)
        self.rings.append(kspace)
        images = SharedRing("img", sizes.image_slot_bytes, sizes.image_slots)
        self.rings.append(images)
        store = CalibrationStore(calibration) if calibration.buffers else None
        if store is not None:
            self.rings.append(store.ring)
            _warm_imports(opts.recon)
        derived = DerivedStore(self.ctx, sizes.derived) if sizes.derived.entries else None
        if derived is not None:
            self.rings.append(derived.ring)
        self.memory = {
            "calibration_buffers": calibration.buffers,
            "calibration_buffer_bytes": calibration.buffer_bytes,
            "calibration_lines_per_buffer": calibration.capacity,
            "derived_entries": sizes.derived.entries,
            "derived_entry_bytes": sizes.derived.entry_bytes,
            "memory_limit_bytes": limit,
            "units_per_repetition": sizes.units_per_repetition,
            "kspace_slots": slots,
            "kspace_slot_bytes": kspace.slot_bytes,
            "image_slots": sizes.image_slots,
            "image_slot_bytes": images.slot_bytes,
            "noise_bytes": sizes.noise_bytes,
            "shared_bytes": sizes.total_bytes,
        }
        shared, self.status = Shared.create(self.ctx, kspace, images, layout, opts.workers)
        shared.noise = NoiseBlock(self.ctx, layout.coils)
        shared.calibration = store
        shared.readouts = readouts
        shared.derived = derived
        self.shared = shared
        noise = NoiseGate(
            shared.noise,
            prewhiten=bool(typed.get("prewhiten", True)),
            receiver_bandwidth=receiver_noise_bandwidth(xml, DEFAULT_RECEIVER_BANDWIDTH),
            preset=preset,
            source=opts.noise_file or "stream",
        )
        for slot in range(slots):
            shared.free_slots.put(slot)
        trace.end()
        parent = os.getpid()
        extra: dict[str, Any] = {}
        if readouts is not None:
            extra = {"layout": readouts, "traj_units": str(typed.get("traj_units", "auto"))}
        ingest = (ReadoutIngest if readouts is not None else StreamIngest)(
            stream,
            plan,
            shared,
            first_head=prelude.first_head,
            slot_count=slots,
            workers=opts.workers,
            noise=noise,
            calibration=CalibrationKeeper(store, shared.calibration_release),
            trace=self._child_trace(),
            **extra,
        )
        bodies: dict[str, Callable[[], dict[str, Any]]] = {"reader": ingest.run}
        name = kernel_label(opts.recon)
        for number in range(1, opts.workers + 1):
            loop = WorkerLoop(number, kernel, name, plan, shared, trace=self._child_trace())
            bodies[f"worker {number}"] = loop.run
        bodies["writer"] = _writer_body(
            sink, prelude, shared, self._child_trace(), self.output_generation, opts.prog
        )
        trace.begin("start the processes", "startup")
        gc.freeze()  # no collection in a child writes to the objects it shares with us
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for role, body in bodies.items():
                proc = self.ctx.Process(
                    target=_child, args=(role, shared, parent, body), name=role, daemon=False
                )
                proc.start()
                self.procs[role] = proc
        finally:
            gc.unfreeze()
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        source.close()
        sink.close()
        trace.end()
        trace.end()

    def _child_trace(self) -> Trace:
        """A recorder for one child (it starts its own track after the fork)."""
        return make_trace(self.trace.enabled, self.origin)

    def release(self) -> None:
        """Unmap every ring in this process now that the children are gone.

        A long-lived caller (the batch runners, the Python API) must not keep a finished
        run's shared memory until its objects happen to be collected.
        """
        for ring in self.rings:
            ring.close()
        self.rings.clear()

    # ----------------------------------------------------------------- watch
    def _handle(self, message: tuple[Any, ...]) -> None:
        kind, role = message[0], message[1]
        if kind == "stats":
            self.stats[role] = message[2]
        elif kind == "broken_pipe":
            self.broken_pipe = True
        elif kind == "detail":
            self.details.append(message[2])
        elif kind == "warning":
            if message[2] not in self.warnings:
                self.warnings.append(message[2])
                print(f"{self.opts.prog}: warning: {message[2]}", file=sys.stderr)
        elif self.failure is None:
            self.failure = message[2]

    def _drain(self) -> None:
        with contextlib.suppress(EOFError, OSError):
            while self.status.poll():
                self._handle(self.status.recv())

    def _death(self, role: str, proc: Any) -> str:
        code = proc.exitcode
        if code < 0:
            try:
                how = f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with status {code}"
        text = f"{role} (pid {proc.pid}) {how}"
        if role.startswith("worker "):
            base = (int(role.split()[1]) - 1) * Shared.CURRENT_FIELDS
            current = list(self.shared.current[base : base + Shared.CURRENT_FIELDS])
            if current[0] >= 0:
                text += f" while reconstructing {describe_unit(UnitKey(*current[1:]), current[0])}"
        return text

    def watch(self, progress: Progress | None) -> None:
        """Wait until every child has finished or one has failed."""
        live = dict(self.procs)
        interval = 0.1 if progress is not None or self.sample_memory else 0.25
        self.trace.begin("wait for the children", "wait")
        while live:
            waitables = [*(p.sentinel for p in live.values()), self.status]
            multiprocessing.connection.wait(waitables, interval)
            self._drain()
            for role, proc in list(live.items()):
                if proc.exitcode is None:
                    continue
                del live[role]
                if proc.exitcode != 0 and self.failure is None:
                    self._drain()
                    if self.failure is None:
                        self.failure = self._death(role, proc)
            if self.failure is not None or self.broken_pipe:
                return
            if self.sample_memory:
                self.sampler.sample()
            if progress is not None:
                progress.label = f"{self.opts.prog}: {self.shared.images_out.value} images out"
                progress.update(self.shared.acquisitions_in.value - progress.count)
        self._drain()
        self.trace.end()

    def stop(self) -> None:
        """Kill every child that is still running and reap them all."""
        for proc in self.procs.values():
            if proc.exitcode is None:
                with contextlib.suppress(Exception):
                    proc.kill()
        deadline = time.monotonic() + _STOP_GRACE_S
        for proc in self.procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))


def _recon_from_config(opts: PipelineOptions, prelude: Prelude) -> PipelineOptions:
    """``opts`` with the kernel the stream's first CONFIG_FILE names (Gadgetron's names
    included, see :mod:`.configs`); unchanged when it names none."""
    from dataclasses import replace

    from .configs import kernel_for_config

    names = [c.split(" ", 1)[1] for c in prelude.configs if c.startswith("CONFIG_FILE ")]
    if not names:
        return opts
    kernel, warning = kernel_for_config(names[0])
    if warning:
        _warn(opts.prog, f"CONFIG_FILE {warning}")
    return replace(opts, recon=kernel)


def _warm_imports(spec: str) -> None:
    """Import, once and before forking, what the kernel would import at its first
    calibration (GRAPPA: scipy.linalg, a tenth of a second of CPU): otherwise every worker
    that calibrates a slice pays for it again.  Called only when the header declares
    parallel imaging, so fully sampled data never pays."""
    import importlib

    for module in warm_imports(spec):
        importlib.import_module(module)


def _writer_body(
    sink: BinaryIO,
    prelude: Prelude,
    shared: Shared,
    trace: Trace,
    generation: str = "ismrmrd",
    prog: str = "mrd_stream_recon",
) -> Callable[[], dict[str, Any]]:
    from .output import output_for
    from .writer import OrderedWriter

    output = output_for(generation, Notes(lambda text: _warn(prog, text), fields=False))
    writer = OrderedWriter(
        sink, prelude.header_xml, prelude.texts, shared, trace=trace, output=output
    )
    return writer.run


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


def run_pipeline(source: BinaryIO, sink: BinaryIO, opts: PipelineOptions) -> int:
    """Reconstruct ``source`` into ``sink``; returns the exit code.

    User errors raise :class:`ReconError` (one line, exit 1), a closed downstream pipe raises
    BrokenPipeError (quiet, 141), Ctrl-C raises KeyboardInterrupt (130); SIGTERM returns 143.
    """
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    started = time.monotonic()
    cpu_start = cpu_seconds()
    supervisor = _Supervisor(opts, started)
    progress = Progress(opts.prog, enabled=opts.progress, unit="acquisitions in")
    try:
        supervisor.start(source, sink)
        supervisor.watch(progress if opts.progress else None)
        progress.finish()
    except _Terminated:
        supervisor.stop()
        supervisor.release()
        progress.finish()
        if opts.announce_stop:
            print(f"{opts.prog}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except BaseException:
        supervisor.stop()
        supervisor.release()
        progress.finish()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(Exception):
            source.close()
    if supervisor.failure is not None or supervisor.broken_pipe:
        supervisor.stop()
        supervisor.release()
        if supervisor.failure is not None and not supervisor.broken_pipe:
            if opts.verbose:
                for detail in supervisor.details:
                    print(detail, file=sys.stderr)
            raise PipelineError(supervisor.failure)
        raise BrokenPipeError()
    supervisor.trace.begin("shut down", "shutdown")
    supervisor.stop()
    supervisor.release()
    supervisor.trace.end()
    _report(supervisor, supervisor.opts, time.monotonic() - started, cpu_start)
    return 0


def _warn(prog: str, text: str) -> None:
    print(f"{prog}: warning: {text}", file=sys.stderr)


def _report(supervisor: _Supervisor, opts: PipelineOptions, wall: float, cpu_start: float) -> None:
    stats = supervisor.stats
    if stats.get("reader", {}).get("after_close"):
        _warn(opts.prog, stats["reader"]["after_close"])
    prelude = supervisor.prelude
    workers = [stats[r] for r in sorted(stats) if r.startswith("worker ")]
    profile = build_profile(
        wall_s=wall,
        cpu_start_s=cpu_start,
        reader=stats.get("reader", {}),
        workers=workers,
        writer=stats.get("writer", {}),
        memory=supervisor.memory,
        sampler=supervisor.sampler,
        prelude={"configs": prelude.configs, "texts": len(prelude.texts), "others": prelude.others},
        kernel=kernel_label(opts.recon),
        warnings=supervisor.warnings,
    )
    if opts.verbose:
        for config in profile["input"]["config_messages"]:
            print(
                f"{opts.prog}: received {config} (not used by this reconstruction)", file=sys.stderr
            )
    if opts.profile:
        print(format_profile(profile, opts.prog), file=sys.stderr)
    if opts.profile_json:
        write_profile_json(profile, opts.profile_json)
    if opts.trace:
        _write_run_trace(supervisor, opts.trace, profile)


def _write_run_trace(supervisor: _Supervisor, path: str, profile: dict[str, Any]) -> None:
    """The supervisor's track (with the interpreter's start-up before the run) and every
    child's, in one file."""
    trace = supervisor.trace
    began = process_start_monotonic()
    if began is not None and began < supervisor.origin:
        trace.span("interpreter start-up and imports", "startup", began, supervisor.origin)
    events = list(trace.events)
    for role in sorted(supervisor.stats):
        events.extend(supervisor.stats[role].get("trace", []))
    write_trace(
        path,
        events,
        {
            "command": supervisor.opts.prog,
            "kernel": profile["kernel"]["name"],
            "workers": profile["workers"]["count"],
            "input_bytes": profile["input"]["bytes"],
            "output_bytes": profile["output"]["bytes"],
            "wall_s": profile["wall_s"],
            "cores": profile["cpu"]["cores"],
            "origin_monotonic_s": supervisor.origin,
        },
    )
