"""One tile of a fusion: its frames read, warped and staged ahead on worker threads, added to a fresh method state
in batches, its core handed out; and a tiled fusion's tiles as self-contained work that another process (a
cluster's worker) can fuse on its own once the whole-frame statistics are known."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..align.estimate import StackAlignment
from ..backends.base import Backend
from ..box import Box, Tile
from ..frames.fill import FrameFill, image_mask
from ..frames.sources import FrameSource
from ..io.images import FrameRef
from ..methods.base import FrameInput, FusionMethod
from ..ops.color import from_tensor
from .options import FusionOptions
from .plan import Plan
from .prefetch import batches, prefetched
from .sources import opened_frames, prepared_source


@dataclass
class _Staged:
    """A frame region prepared by a worker: ready for :meth:`Backend.upload`."""

    position: int  # in the list of frames fused
    index: int  # in the input list
    name: str
    pixels: Any
    fill_pixels: Any = None
    fill_area: Box | None = None


@dataclass
class TileResult:
    """A tile's core as a sink takes it: fused pixels (the frames' dtype), index map, named float maps."""

    fused: np.ndarray
    index: np.ndarray
    maps: dict[str, np.ndarray]


def _core(state: Any, tile: Tile, dtype: np.dtype) -> TileResult:
    """The tile's core from the state, on the host."""
    rows, cols = tile.core.within(tile.crop)
    maps = {name: values[rows, cols].float().cpu().numpy() for name, values in state.maps.items()}
    index = state.index[rows, cols].to(torch.int32).cpu().numpy().astype(np.uint16)
    return TileResult(from_tensor(state.fused[:, rows, cols], dtype), index, maps)


def fuse_tile(frames: list[tuple[int, FrameSource]], method: FusionMethod, backend: Backend, plan: Plan, tile: Tile,
              statistics: Sequence[Any], executor: ThreadPoolExecutor | None, dtype: np.dtype,
              on_frame: Callable[[str], None] | None = None) -> TileResult:
    """One region: its frames read ahead on ``executor``, added to a fresh method state in batches; its core."""
    if plan.tiled:  # hand back what the last tile (or run) freed: this tile's shapes differ
        backend.release_memory()
    state = method.new_state()
    staged = prefetched(range(len(frames)), lambda k, box=tile.crop: _stage(k, frames[k], box, backend),
                        executor, plan.read_ahead)
    with closing(staged):  # on an error, frames still being prepared are cancelled at once
        for batch in batches(staged, plan.batch):
            state.add_batch([_upload(item, tile, backend, statistics[item.position], len(frames)) for item in batch])
            if on_frame is not None:
                for item in batch:
                    on_frame(item.name)
    state.finish()
    return _core(state, tile, dtype)


def _stage(position: int, frame: tuple[int, FrameSource], box: Box, backend: Backend) -> _Staged:
    """Worker thread: the frame's pixels in ``box`` (registered, cropped), its edge fill there, staged."""
    index, source = frame
    pixels = source.read(box)
    fill = source.fill_in(box, pixels)
    if fill is None:
        return _Staged(position, index, source.name, backend.stage(pixels))
    network, area = fill
    return _Staged(position, index, source.name, backend.stage(pixels), backend.stage(network), area)


def _upload(item: _Staged, tile: Tile, backend: Backend, statistics: Any, count: int) -> FrameInput:
    """Network side: the staged frame (one of ``count``) on the device, as the method takes it."""
    frame = backend.upload(item.pixels)
    fill = None
    if item.fill_area is not None:
        fill = FrameFill(backend.upload(item.fill_pixels), image_mask(item.fill_area, tile.crop.shape, backend.device))
    return FrameInput(item.index, frame, fill, statistics, tile.crop, item.position / max(1, count - 1))


@dataclass
class TileWork:
    """Everything a process needs to fuse tiles of a stack by itself (picklable): the frames (files, or arrays),
    those used and their alignment, the crop window, the options, the plan and the whole-frame statistics."""

    refs: list[np.ndarray | FrameRef]
    used: list[int]
    alignment: StackAlignment | None
    window: Box | None
    options: FusionOptions
    plan: Plan
    statistics: list[Any]
    dtype: np.dtype


def fuse_work_tiles(work: TileWork, numbers: Sequence[int], method: FusionMethod,
                    backend: Backend) -> list[TileResult]:
    """The cores of tiles ``numbers`` of ``work.plan`` fused here with ``method`` on ``backend``: the same frames,
    reads and arithmetic as the tile loop of a single-process run, so the same bytes."""
    statistics = [on_device(s, backend.device) for s in work.statistics]
    with opened_frames(work.refs) as opened, ExitStack() as stack:
        frames = [(i, prepared_source(opened.sources[i], work.alignment, i, work.window, work.options.edge_fill))
                  for i in work.used]
        for _, source in frames:
            source.expect_reads(many=True)  # the edge-fill search and the tile read the frame more than once
        executor = stack.enter_context(ThreadPoolExecutor(work.plan.workers)) if work.plan.workers else None
        stack.enter_context(backend.session())
        return [fuse_tile(frames, method, backend, work.plan, work.plan.tiles[n], statistics, executor, work.dtype)
                for n in numbers]


def on_device(value: Any, device: torch.device) -> Any:
    """``value`` (tensors, possibly in lists, tuples or dicts) with its tensors moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(on_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: on_device(v, device) for k, v in value.items()}
    return value


__all__ = ["TileResult", "TileWork", "fuse_tile", "fuse_work_tiles", "on_device"]
