"""Ordered, bounded read-ahead: a thread pool prepares the next items while the caller works on the current one.

Decoding, warping, edge-fill search and staging for the device run in worker threads (OpenCV, NumPy and
torch release the GIL in their kernels); the network takes the results in input order. At most
``depth`` results exist at once (waiting or being made), so memory does not grow with the stack.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetched(items: Iterable[T], load: Callable[[T], R], executor: ThreadPoolExecutor | None,
               depth: int) -> Iterator[R]:
    """``load(item)`` for every item, in order, computed up to ``depth`` items ahead on ``executor``.

    Without an executor (or with depth 0) items are loaded in the caller's thread, one at a time. An
    exception in ``load`` is raised here, when its item's turn comes; items still pending are cancelled
    (or waited for) when the iteration stops early, so no worker outlives it.
    """
    if executor is None or depth <= 0:
        for item in items:
            yield load(item)
        return
    pending: deque[Future[R]] = deque()
    source = iter(items)
    try:
        for item in source:
            pending.append(executor.submit(load, item))
            if len(pending) >= depth:
                break
        while pending:
            result = pending.popleft().result()
            for item in source:  # refill: one new item for the one taken
                pending.append(executor.submit(load, item))
                break
            yield result
    finally:
        for future in pending:
            future.cancel()
        for future in pending:
            if not future.cancelled():
                future.exception()  # wait for it: the caller may free what it reads


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


__all__ = ["prefetched", "batches"]
