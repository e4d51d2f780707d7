"""How many worker processes to start by default, and the model behind the choice.

The pipeline has one reader (one core at most: it is one process) and ``W`` workers on ``C``
cores.  With per-unit costs ``R`` (reader CPU seconds) and ``K`` (kernel CPU seconds) and
``N`` units, the steady state runs at the pace of its slowest constraint, so

    wall ~ T0 + N * max(R, K / W, (R + K) / C) + R + K

``T0`` is the start-up (interpreter, imports, forking), ``R + K`` the pipeline's fill and
drain (the first unit is read before any kernel runs, the last kernel runs after the last
read).  Workers beyond ``ceil(K / max(R, (R + K) / C))`` only wait, so one per core is never
slower; each costs two k-space slots of memory.  What a second worker cannot do is make the
reader faster: when ``K <= (C - 1) * R`` the reader is the bottleneck, it needs a core of its
own, and on many cores one core is kept for it.

The reader's share of the work, ``R / (R + K)``, was measured on the 2D benchmark stream with
the cheapest bundled kernel (Cartesian, 32 coils; see perf/RESULTS.md): about 0.4.  So the
reader needs a whole core of its own once ``C * 0.4 >= 1`` and there are cores to spare (3 or
more): the default is then ``C - 1`` workers, else ``C``.
"""

from __future__ import annotations

import os

__all__ = [
    "READER_SHARE",
    "available_cores",
    "default_workers",
    "single_threaded_environment",
    "single_threaded_math",
]

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

READER_SHARE = 0.4
"""Measured ``R / (R + K)`` of the Cartesian kernel on a 32-coil 2D stream: the most CPU the
reader takes of a run with a bundled kernel (every other kernel costs more per byte)."""


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under ``taskset`` or a cgroup
    cpuset), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_workers(cores: int | None = None, reader_share: float = READER_SHARE) -> int:
    """Workers to start when ``--workers`` is not given: one per available core, less one
    kept for the reader when there are 3 or more cores and its share fills one."""
    count = available_cores() if cores is None else max(1, cores)
    reserve = 1 if count >= 3 and count * reader_share >= 1 else 0
    return count - reserve


def single_threaded_math() -> None:
    """One BLAS/OpenMP thread per process (set before numpy is imported): the pool is the
    parallelism, and N workers x M threads would only oversubscribe the cores."""
    for name in _THREAD_VARIABLES:
        os.environ.setdefault(name, "1")


def single_threaded_environment() -> dict[str, str]:
    """This process's environment with one BLAS/OpenMP thread, for a child that imports
    numpy before it could call :func:`single_threaded_math` itself (its BLAS must run the
    same single-threaded kernels as the command line's, or the images differ in the last
    bits)."""
    env = dict(os.environ)
    for name in _THREAD_VARIABLES:
        env.setdefault(name, "1")
    return env
