"""A batch's stacks as Dask tasks: each worker runs the same stack job as a single-process batch and writes the
stack's outputs and sidecar itself, so a worker that dies loses no finished stack; its stack is retried."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..jobs.batch import BatchStack, run_batch_stack
from .weights import register_weights, unregister_weights, worker_weights

StackTask = Callable[[BatchStack, str, str], dict[str, Any]]


def fuse_batch_stack(stack: BatchStack, weights: str, device: str) -> dict[str, Any]:
    """The task: one stack fused on a worker with the weights its plugin ``weights`` loaded there."""
    return run_batch_stack(stack, worker_weights(weights), None, device)


def fuse_stacks_on_cluster(client: Any, stacks: Sequence[BatchStack], model: Any, method: str, device: Any, *,
                           task: StackTask = fuse_batch_stack) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, entry) of every stack, as they finish on ``client``'s workers. A stack whose workers died as many
    times as the scheduler allows (``distributed.scheduler.allowed-failures``) is reported as failed; the
    others go on."""
    from distributed import as_completed

    name = register_weights(client, method, model, str(device))
    try:
        futures = {client.submit(task, stack, name, str(device), pure=False, key=f"focusfuse-stack-{stack.name}-"
                                 f"{name[-12:]}"): stack for stack in stacks}
        for future in as_completed(futures):
            stack = futures[future]
            entry = _entry(future, stack)
            future.release()  # nothing left on the worker to lose
            yield stack.name, entry
    finally:
        unregister_weights(client, name)


def _entry(future: Any, stack: BatchStack) -> dict[str, Any]:
    """The stack's entry from its finished task; a task that killed its workers or failed outside the job's own
    error handling is a failed stack."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        return {"name": stack.name, "status": "failed",
                "error": "worker processes died while fusing it, on every retry (out of memory, or a crash); "
                         "the other stacks went on"}
    except Exception as exc:  # noqa: BLE001 - one broken stack must not end the batch
        return {"name": stack.name, "status": "failed",
                "error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'}"}


__all__ = ["fuse_stacks_on_cluster", "fuse_batch_stack"]
