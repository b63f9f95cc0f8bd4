"""A batch's stacks as Dask tasks: each worker runs the same stack job as a single-process batch and writes the
stack's outputs and sidecar itself, so a worker that dies loses no finished stack; its stack is retried."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from typing import Any

from ..jobs.batch import BatchStack, record_stack, run_batch_stack
from .connect import worker_threads
from .weights import weights_on_workers, worker_weights

StackTask = Callable[[BatchStack, str, str, "str | None"], dict[str, Any]]
Progress = Callable[[int, int, str], None]


def fuse_batch_stack(stack: BatchStack, weights: str, device: str, topic: str | None = None) -> dict[str, Any]:
    """The task: one stack fused on a worker with the weights its plugin ``weights`` loaded there; its frame
    progress goes to the client as events of ``topic``."""
    from distributed import get_worker

    progress = None
    if topic is not None:
        worker = get_worker()

        def progress(done: int, total: int, frame: str) -> None:
            worker.log_event(topic, {"stack": stack.name, "done": done, "total": total, "frame": frame})

    return run_batch_stack(stack, worker_weights(weights), progress, device)


class StackProgress:
    """Frame progress of the stacks running on the workers, summed for one bar on the client."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.stacks = progress, {}

    def __call__(self, event: tuple[float, dict[str, Any]]) -> None:
        message = event[1]
        self.stacks[message["stack"]] = (message["done"], message["total"])
        done = sum(d for d, _ in self.stacks.values())
        total = sum(t for _, t in self.stacks.values())
        self.progress(done, total, f"{message['stack']}: {message['frame']}")


def fuse_stacks_on_cluster(client: Any, stacks: Sequence[BatchStack], model: Any, method: str, device: Any, *,
                           progress: Progress | None = None,
                           task: StackTask = fuse_batch_stack) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, entry) of every stack, as they finish on ``client``'s workers.

    Only as many stacks as the workers have threads are submitted at a time (the next when one ends): a worker
    that dies then takes down only the stack it was fusing, which is retried elsewhere; a stack whose workers
    died as many times as the scheduler allows (``distributed.scheduler.allowed-failures``) is reported as
    failed and the others go on. Closing the generator early cancels the stacks still running.
    ``progress(done, total, name)``: the frames fused so far in the stacks handed out (events from the workers).
    """
    from distributed import as_completed

    topic = f"focusfuse-progress-{uuid.uuid4().hex[:12]}" if progress is not None else None
    if topic is not None:
        client.subscribe_topic(topic, StackProgress(progress))
    with weights_on_workers(client, method, model, str(device)) as weights:
        todo = iter(stacks)
        running: dict[Any, BatchStack] = {}

        def submit_next() -> Any:
            stack = next(todo, None)
            if stack is None:
                return None
            future = client.submit(task, stack, weights, str(device), topic, pure=False,
                                   key=f"focusfuse-stack-{stack.name}-{weights[-12:]}")
            running[future] = stack
            return future

        first = [f for f in (submit_next() for _ in range(max(1, worker_threads(client)))) if f is not None]
        finished = as_completed(first)
        try:
            for future in finished:
                stack = running.pop(future)
                entry = _entry(future, stack)
                future.release()  # nothing left on the worker to lose
                following = submit_next()
                if following is not None:
                    finished.add(following)
                yield stack.name, entry
        finally:
            client.cancel(list(running))
            if topic is not None:
                client.unsubscribe_topic(topic)


def _entry(future: Any, stack: BatchStack) -> dict[str, Any]:
    """The stack's entry from its finished task. A task that killed its workers, was cancelled or failed outside
    the job's own error handling is a failed stack, recorded in its sidecar like any other."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        error = ("worker processes died while fusing it, on every retry (out of memory, or a crash); the other "
                 "stacks went on")
    except CancelledError:
        error = "its task was cancelled (the cluster lost it, or is shutting down)"
    except Exception as exc:  # noqa: BLE001 - one broken stack must not end the batch
        error = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'}"
    entry = {"name": stack.name, "status": "failed", "error": error}
    try:
        record_stack(stack, entry)
    except OSError:
        pass  # the report still holds it
    return entry


__all__ = ["fuse_stacks_on_cluster", "fuse_batch_stack"]
