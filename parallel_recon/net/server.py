"""TCP reconstruction server: one full reconstruction per connection, within one budget.

Each accepted connection gets its own child process running the same pipeline as
``mrd_stream_recon`` (or any stdin-to-stdout filter given with ``command``); see
:mod:`.connection` for what happens on one connection.  A child per connection keeps clients
isolated: a malformed or vanishing client ends only its own child, and the child's own
supervisor cleans up its workers and shared memory.  Children start isolated from the
server's working directory (``python -I``): a ``psutil.py`` in the folder the server was
started from is never imported.

The recon child is not a fresh interpreter: the server keeps ``ready_engines`` processes
forked from a fork server that has already imported numpy, the engine and the kernels
(:mod:`.engines`, :mod:`.forkserver`), and hands each connection to one of them, so a scan's
first image is not delayed by the interpreter's start-up.  With ``ready_engines=0`` (or when
the fork server is gone) each recon starts cold, as ``python -I -c ... mrd_stream_recon``.

What a client can take is bounded before it takes it:

- connections are accepted as they arrive (none waits unseen in the listen backlog); more
  than ``max_per_address`` from one client address, or more than ``max_connections`` +
  :data:`WAITING` in all, are refused at once with one line;
- a connection earns a reconstruction slot (``max_connections`` of them) only with a
  complete opening (its header and its first acquisition's header), which must arrive
  within ``idle_timeout`` seconds and at most :data:`~.opening.MAX_OPENING_BYTES` long;
- its dataset's shared memory comes out of one budget for all connections
  (``memory_limit``, by default what one ``mrd_stream_recon`` may use: 25% of RAM, at most
  /dev/shm's free space): it waits until that much is free, and a dataset larger than the
  whole budget is refused with one line;
- a client that stops sending before its CLOSE, or stops taking its reply, is dropped
  (:mod:`.wire`).

Each connection logs one line: its time waiting for a slot (``queued``) apart from its
reconstruction time (``recon``), and its outcome.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from ..engine.configs import kernel_for_config
from ..engine.kernels import KERNELS
from ..errors import MemoryLimitError
from ..protocol import Text, encode_message
from .admission import Admission
from .connection import ChildProcess, Connection, ConnectionReport, MemoryRefusal, popen
from .engines import EnginePool, EnginesGone
from .linger import LingeringCloser
from .opening import Opening

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_PER_ADDRESS",
    "DEFAULT_READY_ENGINES",
    "WAITING",
    "ConnectionReport",
    "ReconServer",
    "ServerConfig",
    "choose_kernel",
    "recon_arguments",
    "recon_command",
]

DEFAULT_IDLE_TIMEOUT = 60.0
"""Seconds for a client's header, and per 16 KiB of its stream or reply (``--idle-timeout``)."""

DEFAULT_MAX_PER_ADDRESS = 16
"""Connections one client address may have open at once (``--max-per-address``)."""

WAITING = 64
"""Connections open beyond ``max_connections`` (waiting for their header, a slot or memory);
more are refused at once."""

DEFAULT_READY_ENGINES = 2
"""Engines kept ready, forked from the fork server (``--ready-engines``)."""

_CHILD_EXIT_WAIT = 10.0
_ENGINES_READY_S = 60.0
_RECON_ENTRY = "parallel_recon.cli.recon:main"
_RECON_MAIN = "import sys; from parallel_recon.cli.recon import main; sys.exit(main())"


@dataclass(frozen=True)
class ServerConfig:
    """What ``parallel-recon serve`` was asked to do."""

    host: str = "127.0.0.1"
    port: int = 9222
    workers: int = 1
    """``--workers`` of each connection's reconstruction."""
    max_connections: int = 8
    """Connections reconstructed at once; more wait (accepted) for a free slot."""
    recon: str = "auto"
    """Kernel used when the client's config name does not choose one."""
    config_map: Mapping[str, str] = field(default_factory=dict)
    """CONFIG_FILE name -> kernel (name or path), checked before the built-in names."""
    command: Sequence[str] | None = None
    """A filter run per connection instead of the built-in recon (no kernel choice then)."""
    drain_timeout: float = 60.0
    """Seconds that SIGTERM waits for running connections before stopping them."""
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    """Seconds for a client's opening, and per 16 KiB of progress after it (None: no limit)."""
    image_type: str = "magnitude"
    """``--image-type`` of every connection's reconstruction."""
    recon_options: Mapping[str, str] = field(default_factory=dict)
    """``--recon-option`` values of every connection's reconstruction."""
    memory_limit: int | None = None
    """Shared memory for all connections together, in bytes (None: the recon's default)."""
    max_per_address: int = DEFAULT_MAX_PER_ADDRESS
    """Connections one client address may have open at once."""
    ready_engines: int = DEFAULT_READY_ENGINES
    """Recon processes kept ready, forked from an imported process (0: start each cold)."""


def choose_kernel(config_name: str | None, config: ServerConfig) -> str:
    """The kernel for a connection, from the first CONFIG_FILE name the client sent.

    A name listed in ``config.config_map`` maps to its kernel; a name of the recon's kernel
    table (e.g. ``cartesian``) selects that kernel; one of Gadgetron's named configurations
    (``Generic_Cartesian_Grappa.xml``) selects the kernel doing that work, as
    ``mrd_stream_recon -c`` does; anything else (``default``, ``default.xml``, which clients
    send when they mean "the server's reconstruction", an unknown name, no config at all) uses
    ``config.recon``: the server's operator chose it.
    """
    name = (config_name or "").strip()
    if name in config.config_map:
        return config.config_map[name]
    if name in KERNELS:
        return name
    kernel, unknown = kernel_for_config(name)
    if unknown is None and not name.lower().startswith("default"):
        return kernel
    return config.recon


def recon_arguments(config: ServerConfig, kernel: str, memory: int) -> list[str]:
    """``mrd_stream_recon``'s arguments for one connection, with its share of the budget."""
    args = ["--recon", kernel, "--workers", str(config.workers), "--memory-limit", str(memory)]
    args += ["--image-type", config.image_type]
    for key, value in config.recon_options.items():
        args += ["--recon-option", f"{key}={value}"]
    return args


def _cold_recon() -> list[str]:
    """A fresh interpreter running ``mrd_stream_recon``.

    ``-I``: the child's imports never come from the server's working directory (nor from
    PYTHONPATH or the user's site folder), whatever files are there.
    """
    return [sys.executable, "-I", "-c", _RECON_MAIN]


def recon_command(config: ServerConfig, kernel: str, memory: int) -> list[str]:
    """The child command line for one connection started cold (the filter's, with
    ``command``)."""
    if config.command:
        return list(config.command)
    return [*_cold_recon(), *recon_arguments(config, kernel, memory)]


def _mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):.1f} MiB"


def dataset_memory(config: ServerConfig, budget: int, opening: Opening, kernel: str) -> int:
    """Shared memory the connection's reconstruction will allocate (0 for a filter, or a
    stream without acquisitions); the reconstruction gets exactly this as its limit.

    Raises
    ------
    ReconError
        The header cannot be reconstructed (the same error the recon would give).
    MemoryRefusal
        The dataset needs more than the whole budget.
    """
    if config.command or opening.first_channels is None:
        return 0
    from ..engine.kernels import is_non_cartesian
    from ..engine.plan import plan_from_header
    from ..engine.sizing import plan_memory

    plan = plan_from_header(
        opening.header_xml, output=config.image_type, options=dict(config.recon_options)
    )
    trajectories = [space.trajectory for space in plan.spaces]
    try:
        sizes = plan_memory(
            plan,
            opening.header_xml,
            opening.first_channels,
            workers=config.workers,
            memory_limit=budget,
            non_cartesian=is_non_cartesian(kernel, trajectories, opening.first_trajectory_dims),
            unit_samples=int(config.recon_options.get("unit_samples", 0) or 0),
            kernel=kernel,
        )
    except MemoryLimitError as exc:
        needed = _mib(exc.needed_bytes)
        raise MemoryRefusal(
            f"not enough memory for this dataset: it needs at least {needed} of shared "
            f"memory, more than the whole budget of {_mib(exc.limit_bytes)}: raise serve's "
            f"--memory-limit to at least {-(-exc.needed_bytes // (1 << 20))}M",
            f"error: not enough memory for this dataset on this server: it needs at least "
            f"{needed} of shared memory",
        ) from None
    return sizes.total_bytes


class ReconServer:
    """Listens, serves each connection in a thread, drains on :meth:`request_stop`."""

    def __init__(self, config: ServerConfig, log: TextIO | None = None):
        from ..engine.ring import default_memory_limit

        self.config = config
        self.log = log if log is not None else sys.stderr
        self.budget = config.memory_limit or default_memory_limit()
        self.listener = socket.create_server((config.host, config.port), backlog=128)
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self._admission = Admission(max(1, config.max_connections), self.budget)
        self._most_open = max(1, config.max_connections) + WAITING
        self._active: dict[int, tuple[threading.Thread, Connection]] = {}
        self._per_address: dict[str, int] = {}
        self._active_lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = threading.Event()
        self._force = threading.Event()
        self._next_id = 0
        self._cold_warned = False
        self._closer = LingeringCloser()
        self.pool: EnginePool | None = None
        if not config.command and config.ready_engines > 0:
            self.pool = self._start_engines()

    def _start_engines(self) -> EnginePool | None:
        """The fork server with its first engines ready (None, logged, when it fails: the
        recons then start cold)."""
        config = self.config
        kernels = dict.fromkeys([config.recon, *config.config_map.values()])
        pool = EnginePool(_RECON_ENTRY, list(kernels), config.ready_engines, self.say)
        if not pool.wait_ready(_ENGINES_READY_S):
            pool.close()
            self._cold_warned = True
            self.say("the fork server did not start: starting each recon cold")
            return None
        return pool

    def say(self, text: str) -> None:
        """One log line on the server's stderr."""
        with self._log_lock:
            print(f"serve: {text}", file=self.log, flush=True)

    def request_stop(self) -> None:
        """Stop accepting and drain; a second request stops running connections now.

        Safe to call from a signal handler.
        """
        if self._stopping.is_set():
            self._force.set()
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _wait_readable(self) -> bool:
        """Block until the listener has a client (True) or a stop was requested (False)."""
        while not self._stopping.is_set():
            listener = self.listener.fileno()
            ready, _, _ = select.select([listener, self._wake_r], [], [])
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)  # a signal's byte: the handler has run
            if listener in ready and not self._stopping.is_set():
                return True
        return False

    def _wake_on_signals(self) -> int | None:
        """Let a signal wake the accept loop whichever thread the kernel delivers it to.

        A signal that lands in a connection's thread runs its Python handler only when the
        main thread next runs bytecode, and the main thread may sit in ``select`` for as long
        as no client connects: the C-level handler's write to the wake pipe ends that wait.
        Returns the previous wake-up descriptor (None when not on the main thread).
        """
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        try:
            return signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        except ValueError:  # not the main thread (an embedding program's own thread)
            return None

    def serve_forever(self) -> None:
        """Accept until :meth:`request_stop`, then drain running connections."""
        if self.pool is not None:
            pids = ", ".join(map(str, self.pool.ready_pids))
            self.say(
                f"{len(self.pool.ready_pids)} ready engines (pids {pids}), forked from a "
                "process that has imported the recon"
            )
        previous = self._wake_on_signals()
        try:
            while self._wait_readable():
                try:
                    sock, addr = self.listener.accept()
                except OSError:
                    continue
                self._admit(sock, addr[0], f"{addr[0]}:{addr[1]}")
        finally:
            self.listener.close()
            self._drain()
            self._closer.close()
            if previous is not None:
                signal.set_wakeup_fd(previous)
            if self.pool is not None:
                self.pool.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _admit(self, sock: socket.socket, host: str, peer: str) -> None:
        """Start a connection, or refuse it at once when its address or the server has
        too many open."""
        limit = self.config.max_per_address
        with self._active_lock:
            mine = self._per_address.get(host, 0)
            if mine >= limit:
                refusal = (
                    f"too many connections from {host} (--max-per-address {limit})",
                    "too many connections from your address",
                )
            elif len(self._active) >= self._most_open:
                refusal = (
                    f"server busy: {len(self._active)} connections open (--max-connections "
                    f"{self.config.max_connections} and {WAITING} waiting)",
                    "server busy",
                )
            else:
                self._per_address[host] = mine + 1
                self._start(sock, host, peer)
                return
        self._refuse(sock, peer, *refusal)

    def _refuse(self, sock: socket.socket, peer: str, why: str, tell: str) -> None:
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(encode_message(Text(f"error: {tell}; try again later")))
        self._closer.hand_over(sock)
        self.say(ConnectionReport(peer=peer, outcome=f"refused: {why}").line())

    def _start(self, sock: socket.socket, host: str, peer: str) -> None:
        """(with ``_active_lock`` held)"""
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        config = self.config
        conn = Connection(
            sock,
            peer,
            command=lambda kernel, memory: recon_command(config, kernel, memory),
            spawn=self._spawn,
            choose=lambda opening: (
                "" if config.command else choose_kernel(opening.config_name, config)
            ),
            memory=lambda opening, kernel: dataset_memory(config, self.budget, opening, kernel),
            admission=self._admission,
            idle_timeout=config.idle_timeout,
            log=self.say,
        )
        ident = self._next_id
        self._next_id += 1
        thread = threading.Thread(target=self._handle, args=(ident, host, conn), daemon=True)
        self._active[ident] = (thread, conn)
        thread.start()

    def _spawn(self, command: Sequence[str]) -> ChildProcess:
        """A ready engine for a recon command line, else a cold start of it."""
        cold = _cold_recon()
        if self.pool is not None and list(command[: len(cold)]) == cold:
            try:
                return self.pool.spawn(list(command[len(cold) :]))
            except EnginesGone as exc:
                if not self._cold_warned:
                    self._cold_warned = True
                    self.say(f"no ready engines ({exc}): starting each recon cold")
        return popen(command)

    def _handle(self, ident: int, host: str, conn: Connection) -> None:
        try:
            conn.run()
        finally:
            with self._active_lock:
                del self._active[ident]
                self._per_address[host] -= 1
                if not self._per_address[host]:
                    del self._per_address[host]

    def _drain(self) -> None:
        with self._active_lock:
            running = list(self._active.values())
        if not running:
            return
        for _, conn in running:
            conn.interrupt_waiting()  # nothing to finish before its reconstruction starts
        self.say(
            f"stopping: waiting up to {self.config.drain_timeout:g} s for {len(running)} "
            "running connection(s); signal again to stop them now"
        )
        deadline = time.monotonic() + self.config.drain_timeout
        while time.monotonic() < deadline and not self._force.is_set():
            if not any(thread.is_alive() for thread, _ in running):
                break
            self._force.wait(0.1)
        stopped = [(thread, conn) for thread, conn in running if thread.is_alive()]
        for _, conn in stopped:
            conn.stopping = True
            conn.stop_child()  # the connection then tells its client and ends by itself
        for thread, conn in stopped:
            thread.join(timeout=_CHILD_EXIT_WAIT)
            if thread.is_alive():  # a client that neither reads nor closes
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
                thread.join(timeout=_CHILD_EXIT_WAIT)
