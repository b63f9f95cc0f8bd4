"""Plan a fusion before any work: tile size from the backend's memory model and the memory limit, frames per
network batch, worker threads and read-ahead; combinations that cannot work are refused here."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ..backends.base import Backend
from ..errors import UsageError
from ..methods.base import FusionMethod
from .options import FusionOptions
from ..box import TILE_MULTIPLE, Tile, tile_grid

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
    """One worker thread per CPU this process may run on, at most MAX_DEFAULT_WORKERS."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return min(MAX_DEFAULT_WORKERS, cpus)


def plan_fusion(shape: tuple[int, int], channels: int, dtype: np.dtype, method: FusionMethod, backend: Backend,
                options: FusionOptions, *, held_bytes: int = 0, decode_bytes: int = 0, frames: int = 2) -> Plan:
    """The plan for fusing frames of ``shape`` (H, W) with ``channels`` of ``dtype``.

    Main memory: the budget (``options.memory_limit``, else what the process holds plus half the memory
    available, at most 8 GiB) less what the process holds now, the runtime's reserve, ``held_bytes``
    (outputs kept in memory until they are written) and ``decode_bytes`` for each frame decoded whole
    at the same time; on the CPU the rest is the network's, at the backend's bytes per pixel, which gives
    the tile size (unless ``options.tile_size`` sets it); on CUDA the network has half the free device
    memory and the rest of main memory bounds the frames prepared ahead. With an explicit limit, a run
    that cannot keep it is refused; without one, it runs in the smallest tiles. ``frames``: how many frames
    are fused (the halo of a method whose reach grows with them).
    """
    height, width = shape
    resident = resident_memory()
    explicit = options.memory_limit is not None
    budget = backend.host_budget(options.memory_limit, resident)
    workers = default_workers() if options.workers is None else options.workers
    in_line = workers == 0 or backend.network_on_host  # frames prepared in the network's thread
    halo, multiple = method.halo(frames), method.tile_multiple()
    fixed = resident + backend.runtime_reserve + held_bytes + (1 if in_line else workers) * decode_bytes
    host_left = budget - fixed
    if explicit and host_left <= 0:
        raise UsageError(f"memory limit {budget >> 20} MiB is too small: this process and the outputs kept in "
                         f"memory already need {fixed >> 20} MiB (raise the limit, or write TIFF outputs, which "
                         "are streamed)", option="memory_limit")
    device = backend.device_budget()
    network_budget = host_left if device is None else device
    tile = options.tile_size
    if tile is None:
        tile = auto_tile_size(height, width, method.bytes_per_pixel(), network_budget, halo)
        if tile is None and explicit and device is None:
            raise UsageError(f"memory limit {budget >> 20} MiB leaves too little for the fusion "
                             f"({max(network_budget, 0) >> 20} MiB; tiles would be under {SMALLEST_AUTO_TILE} px)",
                             option="memory_limit")
        tile = SMALLEST_AUTO_TILE if tile is None else tile
    tile = -(-tile // multiple) * multiple
    tiles = tuple(tile_grid(height, width, tile, halo=halo))
    if len(tiles) > 1 and (problem := method.tiling_problem()) is not None:
        if options.tile_size is not None:
            raise UsageError(problem, option="tile_size")
        if explicit:
            need = (height * width * method.bytes_per_pixel() + fixed) >> 20
            raise UsageError(f"memory limit {budget >> 20} MiB: this image needs about {need} MiB whole, and "
                             f"{problem.split(' (')[0].split(';')[0]}", option="memory_limit")
        tiles = tuple(tile_grid(height, width, 0, halo=halo))  # no limit given: the image whole
    crop = max(t.crop.shape[0] * t.crop.shape[1] for t in tiles)
    crop_bytes = crop * method.bytes_per_pixel()  # the network's working set for the largest crop
    if explicit and device is None and options.tile_size is not None and crop_bytes > host_left:
        what = "the image whole needs" if len(tiles) == 1 else f"tiles of {tile} px (with their halo) need"
        need = (crop_bytes + fixed) >> 20
        raise UsageError(f"memory limit {budget >> 20} MiB: {what} about {need} MiB (give no tile size to let the "
                         "limit choose it, or raise the limit)", option="memory_limit")
    batch = backend.frames_per_batch(crop, network_budget)
    frame_bytes = crop * channels * (4 + np.dtype(dtype).itemsize)  # staged float32 + the read pixels
    network_here = crop_bytes * batch if device is None else 0
    spare = max(0, host_left - network_here - batch * frame_bytes)  # the batch being worked on is held too
    read_ahead = 0 if in_line else max(1, min(batch + workers, spare // max(frame_bytes, 1)))
    # the alignment pass comes before the network: its frames in flight have what the network will use
    whole_frame = height * width * channels * np.dtype(dtype).itemsize * 2  # decoded, and its copy for the estimate
    align_left = budget - resident - backend.runtime_reserve - held_bytes
    align_read_ahead = 0 if workers == 0 else max(1, min(workers, align_left // max(whole_frame, 1)))
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


__all__ = ["Plan", "plan_fusion", "auto_tile_size", "resident_memory"]
