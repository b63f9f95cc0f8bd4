"""One huge stack's tiles as Dask tasks: after this process's alignment and whole-frame statistics passes, each
tile is fused on a worker (the same code and bytes as here) and the cores come back in order for the sink."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator
from typing import Any

from ..engine.tiles import TileResult, TileWork, fuse_work_tiles, on_device
from ..errors import FocusFuseError
from ..io.images import FrameRef
from .connect import worker_count
from .weights import register_weights, unregister_weights, worker_weights

TASKS_AHEAD_PER_WORKER = 2  # tiles submitted ahead of the one the sink waits for: bounds the memory of results


def fuse_tile_task(work: TileWork, number: int, weights: str, device: str) -> TileResult:
    """The task: tile ``number`` of ``work`` fused on a worker with the weights its plugin loaded there."""
    from ..backends.select import select_backend
    from ..methods.registry import make_method

    backend = select_backend(device)
    options = work.options
    method = make_method(options.method, backend, weights=worker_weights(weights), strategy=options.strategy,
                         reduce=options.reduce)
    return fuse_work_tiles(work, [number], method, backend)[0]


class ClusterTiles:
    """Fuses a tiled run's tiles on ``client``'s workers (see :class:`focusfuse.engine.run.RemoteTiles`); the
    frames must be files the workers can read at the same paths, or arrays (sent once to each worker)."""

    def __init__(self, client: Any, model: Any, method: str, device: Any) -> None:
        self.client, self.model, self.method, self.device = client, model, method, str(device)

    def fused_tiles(self, work: TileWork) -> Iterator[TileResult]:
        client = self.client
        refs = [dataclasses.replace(r, path=r.path.resolve()) if isinstance(r, FrameRef) else r for r in work.refs]
        work = dataclasses.replace(work, refs=refs, statistics=[on_device(s, "cpu") for s in work.statistics])
        name = register_weights(client, self.method, self.model, self.device)
        pending: deque = deque()
        try:
            shared = client.scatter(work, broadcast=True, hash=False)  # once per worker, not once per tile
            ahead = TASKS_AHEAD_PER_WORKER * worker_count(client)
            numbers = iter(range(len(work.plan.tiles)))
            for number in numbers:
                pending.append(client.submit(fuse_tile_task, shared, number, name, self.device, pure=False))
                if len(pending) >= ahead:
                    break
            while pending:
                future = pending.popleft()
                result = _tile_result(future)
                future.release()
                next_number = next(numbers, None)
                if next_number is not None:
                    pending.append(client.submit(fuse_tile_task, shared, next_number, name, self.device, pure=False))
                yield result
        finally:
            client.cancel(list(pending))
            unregister_weights(client, name)


def _tile_result(future: Any) -> TileResult:
    """A finished tile task's core; a tile whose workers kept dying is an error of the run."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        raise FocusFuseError("worker processes died while fusing a tile, on every retry (out of memory, or a "
                             "crash)") from None


__all__ = ["ClusterTiles", "fuse_tile_task"]
