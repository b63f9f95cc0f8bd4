"""Plan a fusion before any work: tile size from the backend's memory model and the memory limit, frames per
network batch, worker threads and read-ahead; combinations that cannot work are refused here."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ..backends.base import Backend, host_available_memory
from ..errors import UsageError
from ..methods.base import FusionMethod
from .options import FusionOptions
from .tiling import TILE_MULTIPLE, Tile, tile_grid

MAX_DEFAULT_WORKERS = 8
SMALLEST_AUTO_TILE = 2 * TILE_MULTIPLE  # below this a tile is mostly halo: refuse rather than crawl


@dataclass(frozen=True)
class Plan:
    """What the engine will do: the region grid, the batch size and the host threads."""

    shape: tuple[int, int]  # (H, W) of the fused image
    tile_size: int  # 0: the image whole
    tiles: tuple[Tile, ...]
    batch: int  # frames the network takes at once
    workers: int  # host threads reading, aligning and preparing frames (0: in the calling thread)
    read_ahead: int  # frames prepared ahead of the network (0: in the network's thread, one at a time)
    align_read_ahead: int  # whole frames decoded ahead of the alignment estimate
    budget: int  # bytes the run may use

    @property
    def tiled(self) -> bool:
        return len(self.tiles) > 1


def resident_memory() -> int:
    """This process's resident memory now, in bytes (0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def default_workers() -> int:
    return min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1)


def plan_fusion(shape: tuple[int, int], channels: int, dtype: np.dtype, method: FusionMethod, backend: Backend,
                options: FusionOptions, *, held_bytes: int = 0, decode_bytes: int = 0) -> Plan:
    """The plan for fusing frames of ``shape`` (H, W) with ``channels`` of ``dtype``.

    Memory (host, for the CPU backend also the network's): what the process holds now, ``held_bytes``
    (outputs kept in memory until they are written), ``decode_bytes`` per worker (a frame decoded whole
    before it can be read by region), and the frames read ahead; the rest is the network's, at the
    backend's bytes per pixel, which gives the tile size unless ``options.tile_size`` sets it.
    """
    height, width = shape
    budget = backend.memory_budget(options.memory_limit)
    workers = default_workers() if options.workers is None else options.workers
    halo, multiple = method.halo(), method.tile_multiple()
    device_is_host = backend.device.type == "cpu"
    fixed = resident_memory() + held_bytes + workers * decode_bytes
    if device_is_host and fixed >= budget:
        raise UsageError(f"memory limit {budget >> 20} MiB is too small: this process and the outputs kept in "
                         f"memory already need {fixed >> 20} MiB (raise the limit, or write TIFF outputs, which "
                         "are streamed)")
    network_budget = (budget - fixed) if device_is_host else backend.memory_budget(None)
    tile = options.tile_size
    if tile is None:
        tile = auto_tile_size(height, width, backend.bytes_per_pixel, network_budget, halo)
        if tile is None:
            raise UsageError(f"memory limit {budget >> 20} MiB leaves too little for the network "
                             f"({max(network_budget, 0) >> 20} MiB; tiles would be under {SMALLEST_AUTO_TILE} px)")
    tile = -(-tile // multiple) * multiple
    tiles = tuple(tile_grid(height, width, tile, halo=halo))
    if len(tiles) > 1 and (problem := method.tiling_problem()) is not None:
        raise UsageError(problem)
    crop = max(t.crop.shape[0] * t.crop.shape[1] for t in tiles)
    batch = backend.frames_per_batch(crop, network_budget)
    frame_bytes = crop * channels * (4 + np.dtype(dtype).itemsize)  # staged float32 + the read pixels
    spare = max(0, (budget - fixed - (crop * backend.bytes_per_pixel if device_is_host else 0)))
    overlap = workers > 0 and not backend.network_on_host  # a network on the host's cores leaves none spare
    read_ahead = max(1, min(batch + workers, spare // max(frame_bytes, 1))) if overlap else 0
    whole_frame = height * width * channels * np.dtype(dtype).itemsize * 2  # decoded, and its copy for the estimate
    align_read_ahead = 0 if workers == 0 else max(1, min(workers, spare // max(whole_frame, 1)))
    return Plan(shape=(height, width), tile_size=tile if len(tiles) > 1 else 0, tiles=tiles, batch=batch,
                workers=workers, read_ahead=read_ahead, align_read_ahead=align_read_ahead, budget=budget)


def auto_tile_size(height: int, width: int, bytes_per_pixel: int, budget: int, halo: int) -> int | None:
    """Largest tile (a multiple of 64) whose working set with its halo fits ``budget``: 0 if the image fits
    whole, None if no tile of at least SMALLEST_AUTO_TILE does."""
    if height * width * bytes_per_pixel <= budget:
        return 0
    side = int(math.sqrt(max(budget, 0) / bytes_per_pixel)) - 2 * halo
    side = side // TILE_MULTIPLE * TILE_MULTIPLE
    return side if side >= SMALLEST_AUTO_TILE else None


__all__ = ["Plan", "plan_fusion", "auto_tile_size", "resident_memory", "host_available_memory"]
