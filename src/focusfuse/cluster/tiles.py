"""One huge stack's tiles as Dask tasks: after this process's alignment and whole-frame statistics passes, each
band of tiles (a row of the grid) is fused on a worker (the same code and bytes as here) and the cores come back
in order for the sink."""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from collections.abc import Iterator
from concurrent.futures import CancelledError
from typing import Any

from ..engine.tiles import TileResult, TileWork, fuse_work_tiles, on_device
from ..errors import FocusFuseError
from ..io.images import FrameRef
from ..jobs.stack_warnings import collected_warnings, warn_for_stack
from .connect import worker_threads
from .weights import weights_on_workers, worker_weights

BANDS_AHEAD_PER_THREAD = 2  # bands submitted ahead of the one the sink waits for: bounds the results held


def fuse_band_task(work: TileWork, numbers: list[int], weights: str, device: str
                   ) -> tuple[list[TileResult], list[str]]:
    """The task: tiles ``numbers`` of ``work`` (one band: each frame read once for all of them, as far as its
    format allows) fused on a worker with the weights its plugin loaded there; their cores, and the warnings
    raised (for the client to raise: a worker's own output is not the user's)."""
    from ..backends.select import select_backend
    from ..methods.registry import make_method

    backend = select_backend(device)
    options = work.options
    with collected_warnings() as texts:
        method = make_method(options.method, backend, weights=worker_weights(weights), strategy=options.strategy,
                             reduce=options.reduce, boundary_blend=options.boundary_blend)
        cores = fuse_work_tiles(work, numbers, method, backend)
    return cores, texts


def tile_bands(work: TileWork) -> list[list[int]]:
    """The plan's tile numbers grouped by band (tiles whose cores share their rows), in order."""
    tiles = work.plan.tiles
    return [list(group) for _, group in itertools.groupby(range(len(tiles)), key=lambda n: tiles[n].core.y0)]


class ClusterTiles:
    """Fuses a tiled run's tiles on ``client``'s workers (see :class:`focusfuse.engine.run.RemoteTiles`); the
    frames must be files the workers can read at the same paths, or arrays (sent once to each worker); so must
    boundary-blend weights given as a file (the shipped ones are each worker's own)."""

    def __init__(self, client: Any, model: Any, method: str, device: Any) -> None:
        self.client, self.model, self.method, self.device = client, model, method, str(device)

    def fused_tiles(self, work: TileWork) -> Iterator[TileResult]:
        client = self.client
        refs = [dataclasses.replace(r, path=r.path.resolve()) if isinstance(r, FrameRef) else r for r in work.refs]
        work = dataclasses.replace(work, refs=refs, statistics=[on_device(s, "cpu") for s in work.statistics])
        bands = iter(tile_bands(work))
        pending: deque = deque()
        with weights_on_workers(client, self.method, self.model, self.device) as weights:
            shared = client.scatter(work, broadcast=True, hash=False)  # once per worker, not once per band
            try:
                def submit_next() -> None:
                    band = next(bands, None)
                    if band is not None:
                        pending.append(client.submit(fuse_band_task, shared, band, weights, self.device, pure=False))

                for _ in range(BANDS_AHEAD_PER_THREAD * worker_threads(client)):
                    submit_next()
                while pending:
                    future = pending.popleft()
                    cores = _band_result(future)
                    future.release()
                    submit_next()
                    yield from cores
            finally:
                client.cancel([*pending, shared])


def _band_result(future: Any) -> list[TileResult]:
    """A finished band task's cores (its warnings raised here); a band whose workers kept dying, or that the
    cluster lost, fails the run."""
    from distributed import KilledWorker

    try:
        cores, texts = future.result()
        warn_for_stack(None, texts)  # the client's own passes raised most of them already: the CLI shows each once
        return cores
    except KilledWorker:
        raise FocusFuseError("worker processes died while fusing a band of tiles, on every retry (out of memory, "
                             "or a crash)") from None
    except CancelledError:
        raise FocusFuseError("a band of tiles was cancelled (the Dask cluster lost it, or is shutting down)") from None


__all__ = ["ClusterTiles", "fuse_band_task", "tile_bands"]
