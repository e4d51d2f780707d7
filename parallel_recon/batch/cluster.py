"""Running a batch on a Dask distributed cluster: one task per file.

``--scheduler tcp://HOST:PORT`` connects to a running cluster; ``--scheduler local:N``
starts a :class:`distributed.LocalCluster` of N single-threaded worker processes on
127.0.0.1 for this batch.  Each task runs one file on the worker that takes it, through a
runner process that worker thread keeps for the whole batch (:mod:`.service`), so a task
costs the engine's run, not an interpreter start.  Inputs and the output folder must be on a
filesystem every worker sees at the same paths.

Failures of a file are results, not task errors: Dask retries nothing for a bad input.  A
worker that dies mid-file loses its task; Dask's scheduler gives the task to another worker
(up to ``distributed.scheduler.allowed-failures`` times), and the dead worker's partial
output is a ``.partial`` that the batch removes at its end.  Dask is an optional extra:
``pip install parallel-recon[cluster]``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ConfigurationError
from .model import FAILED, BatchSettings, FileJob, FileResult, from_json

__all__ = ["parse_scheduler", "run_dask", "run_on_worker"]

ResultHandler = Callable[[FileResult], bool]
LOCAL_PREFIX = "local:"
RUNNER_PRELOAD = "parallel_recon.batch.service"
"""Worker preload that starts the runners with the worker (see :func:`.service.dask_setup`)."""
_CONNECT_TIMEOUT = "30s"


def parse_scheduler(text: str) -> tuple[str, int]:
    """``("local", N)`` for ``local:N``, ``("address", 0)`` for a scheduler address."""
    if text.startswith(LOCAL_PREFIX):
        count = text[len(LOCAL_PREFIX) :]
        if not count.isdigit() or int(count) < 1:
            raise ConfigurationError(
                f"--scheduler {text!r}: expected local:N with N >= 1 worker processes"
            )
        return "local", int(count)
    if "://" not in text and ":" not in text:
        raise ConfigurationError(
            f"--scheduler {text!r}: expected a Dask scheduler address such as "
            "tcp://host:8786, or local:N for a local cluster of N processes"
        )
    return text, 0


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ConfigurationError(
            "--scheduler needs Dask distributed, which is not installed: "
            "pip install 'parallel-recon[cluster]'"
        ) from None
    return distributed


def run_on_worker(request: str) -> str:
    """The Dask task: one file, on this worker thread's runner; a result as JSON."""
    from .service import borrowed_runner

    with borrowed_runner() as runner:
        reply = runner.ask(request.encode("utf-8"))
        if reply is not None:
            return reply.decode("utf-8")
        death = runner.death()
    job = FileJob(**json.loads(request)["job"])
    error = f"the runner process on this Dask worker {death} while reconstructing"
    return json.dumps(dataclasses.asdict(FileResult.for_job(job, FAILED, error=error)))


def _start(distributed: Any, scheduler: str) -> tuple[Any, Any, int]:
    """Client, the local cluster it owns (or None), and the files a machine runs at once
    (for the default share of each file's engine; 0 lets each worker decide)."""
    address, count = parse_scheduler(scheduler)
    cluster = None
    try:
        if address == "local":
            import dask

            # Forked from this process, which has imported distributed already, each worker
            # starts in a fraction of a second instead of importing it all again (spawn):
            # on a small machine that start-up was most of a local cluster's cost.
            with dask.config.set({"distributed.worker.multiprocessing-method": "fork"}):
                cluster = distributed.LocalCluster(
                    n_workers=count,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    # The batch reports every file's failure itself (task errors, lost
                    # workers); Dask's own shutdown races (a heartbeat to a scheduler already
                    # closing) log tracebacks at ERROR that say nothing about the user's files.
                    silence_logs=logging.CRITICAL,
                    preload=[RUNNER_PRELOAD],
                )
            return distributed.Client(cluster), cluster, count
        return distributed.Client(address, timeout=_CONNECT_TIMEOUT), None, 0
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        raise ConfigurationError(
            f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc})"
        ) from None


def _files_per_machine(client: Any) -> int:
    """The most tasks one machine of the cluster runs at once (threads of its workers)."""
    threads: Counter[str] = Counter()
    for worker in client.scheduler_info(n_workers=-1).get("workers", {}).values():
        threads[str(worker.get("host"))] += int(worker.get("nthreads", 1))
    return max(threads.values(), default=1)


def run_dask(
    jobs: Sequence[FileJob],
    settings: BatchSettings,
    *,
    scheduler: str,
    on_result: ResultHandler,
) -> list[FileJob]:
    """Run ``jobs`` as Dask tasks; ``on_result`` for each; returns the jobs left undone
    because ``on_result`` asked to stop (their tasks are cancelled)."""
    distributed = _import_distributed()
    if not jobs:
        return []
    client, cluster, files_at_once = _start(distributed, scheduler)
    try:
        from .service import start_runners

        client.run(start_runners)
        files_at_once = files_at_once or _files_per_machine(client)
        settings_dict = dataclasses.asdict(settings)
        batch = secrets.token_hex(4)
        futures = {}
        for index, job in enumerate(jobs):
            request: dict[str, Any] = {"job": dataclasses.asdict(job), "settings": settings_dict}
            request["files_at_once"] = files_at_once
            key = f"parallel-recon-{batch}-{index}"
            future = client.submit(run_on_worker, json.dumps(request), key=key, pure=False)
            futures[future] = job
        done: set[Any] = set()
        for future in distributed.as_completed(list(futures)):
            done.add(future)
            job = futures[future]
            try:
                result = from_json(FileResult, future.result())
            except Exception as exc:  # KilledWorker, a lost connection, a cancelled task
                error = f"the Dask task failed: {type(exc).__name__}: {exc}"
                result = FileResult.for_job(job, FAILED, error=error)
            if not on_result(result):
                left = [f for f in futures if f not in done]
                client.cancel(left)
                return [futures[f] for f in left]
        return []
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
