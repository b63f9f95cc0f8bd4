"""The Dask client a run uses: a local cluster of worker processes, an existing scheduler, or the caller's client."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import FocusFuseError, UsageError

INSTALL_HINT = "pip install 'focusfuse[dask]'"
ALLOWED_FAILURES = 3  # worker deaths a task may cause before it is reported as failed (Dask's default)


def require_distributed(option: str = "client") -> Any:
    """The ``distributed`` module, or a one-line error naming the extra that provides it."""
    try:
        import distributed
    except ImportError:
        raise UsageError(f"running on a Dask cluster needs Dask's distributed scheduler ({INSTALL_HINT})",
                         option=option) from None
    return distributed


def check_cluster_options(workers: int | None, scheduler: str | None) -> None:
    """Refuse impossible combinations before any work (and a missing Dask)."""
    if workers is not None and scheduler is not None:
        raise UsageError("give either a number of local workers or a scheduler address, not both",
                         option="dask_workers")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise UsageError(f"dask workers {workers!r}: give a whole number of at least 1", option="dask_workers")
    if scheduler is not None and not str(scheduler).strip():
        raise UsageError("scheduler address is empty", option="scheduler")
    if workers is not None or scheduler is not None:
        require_distributed("dask_workers" if workers is not None else "scheduler")


def local_cluster_threads(workers: int) -> int:
    """Threads each of ``workers`` local worker processes may use for the network (the cores shared out)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, cpus // workers)


def local_worker_environment(workers: int) -> dict[str, str]:
    """Environment of a local worker process, set before it starts: the cores shared out between ``workers``
    processes, and one malloc arena (tasks run in worker threads: see backends/malloc.py)."""
    threads = str(local_cluster_threads(workers))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
            "MALLOC_ARENA_MAX": "1"}


@contextmanager
def environment_kept(names: set[str]) -> Iterator[None]:
    """The environment variables ``names`` as they were, once the block ends (changes to others are kept).

    Dask's nannies write their workers' variables (``distributed.nanny.pre-spawn-environ``: one thread, one
    malloc arena, a low trim threshold; and ``PYTHONHASHSEED``) into the process that starts them, where every
    later child process (a tool, a test's subprocess) would inherit them."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def cluster_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A Dask client: on a new local cluster of ``workers`` processes (closed at the end), or connected to the
    scheduler at ``scheduler``; None when neither is given (run in this process).

    Local workers run one task at a time each (a stack or a tile uses every thread it is given) with the cores
    shared out between them (CPU convolutions sum in an order that depends on the thread count: outputs are
    byte-identical to a single-process run with as many threads as a worker has, and otherwise differ by at
    most 1 in a few pixels per million); Dask's own per-worker memory limit is off, since each fusion plans its memory
    from what the machine has. A task whose worker dies is retried on another worker, at most
    ALLOWED_FAILURES times.
    """
    check_cluster_options(workers, scheduler)
    if workers is None and scheduler is None:
        yield None
        return
    distributed = require_distributed()
    import dask

    settings = {"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}
    spawn_environ: dict[str, Any] = {}
    if workers is not None:
        spawn_environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}),
                         **local_worker_environment(workers)}
        settings["distributed.nanny.pre-spawn-environ"] = spawn_environ
        settings["distributed.worker.profile.enabled"] = False  # its stack sampling slows Python-heavy tasks
    with dask.config.set(settings):
        if scheduler is not None:
            try:
                client = distributed.Client(scheduler, timeout="20s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise UsageError(f"scheduler {scheduler}: cannot connect ({str(exc).splitlines()[0]})",
                                 option="scheduler") from None
            with client:
                yield client
            return
        with environment_kept({*spawn_environ, "PYTHONHASHSEED"}):  # the nannies write their workers' environment into this process
            try:
                cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                   memory_limit=0, dashboard_address=None)
            except (RuntimeError, OSError) as exc:
                raise FocusFuseError(f"could not start a local Dask cluster ({str(exc).splitlines()[0]}); from a "
                                     "script, start it under `if __name__ == '__main__':`") from None
            with cluster, distributed.Client(cluster) as client:
                yield client


def check_client(client: Any, timeout: float = 60) -> None:
    """Refuse, before any work, a client that is not a running Dask client or whose cluster has no worker
    within ``timeout`` seconds (a run would wait forever)."""
    distributed = require_distributed()
    if not isinstance(client, distributed.Client):
        raise UsageError(f"client: expected a dask.distributed Client, got {type(client).__name__}", option="client")
    if client.status != "running":
        raise UsageError(f"client: the Dask client is {client.status}, not running", option="client")
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, OSError):
        raise UsageError(f"client: the Dask cluster has no worker (waited {timeout:.0f} s)", option="client") from None


def local_workers(client: Any) -> int:
    """How many of the client's workers run on this machine (their memory is this machine's too)."""
    import socket

    here = {"127.0.0.1", "localhost", "::1", socket.gethostname()}
    try:
        here.add(socket.gethostbyname(socket.gethostname()))
    except OSError:
        pass
    workers = client.scheduler_info().get("workers", {})
    return sum(1 for info in workers.values() if str(info.get("host", "")) in here)


def shared_memory_limit(client: Any) -> int | None:
    """A memory limit for each process of a run whose workers share this machine with it: three quarters of the
    available memory split between them and this process (at most the usual 8 GiB each); None when no worker
    runs here (each machine then plans with its own memory)."""
    from ..backends.base import GIB, host_available_memory

    sharing = local_workers(client)
    if sharing == 0:
        return None
    return min(8 * GIB, host_available_memory() * 3 // 4 // (sharing + 1))


def worker_threads(client: Any) -> int:
    """How many tasks the client's workers run at once now (their threads; at least 1)."""
    workers = client.scheduler_info().get("workers", {})
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


__all__ = ["cluster_client", "check_cluster_options", "check_client", "local_workers", "shared_memory_limit",
           "require_distributed",
           "worker_threads", "INSTALL_HINT", "ALLOWED_FAILURES"]
