"""Run a fusion: open the frames, plan, align (each frame decoded once), then tiles outer, frames inner, with
worker threads reading, warping and staging the next frames while the network works on the current ones.

    frames ──probe──▶ plan ──▶ alignment pass (decode once, register) ──▶ for each tile:
        workers: read region ▸ warp ▸ edge fill ▸ stage      (bounded read-ahead, in order)
        device:  upload ▸ method state (batches of frames)  ──▶ sink (arrays, or TIFF on a writer thread)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from ..align.estimate import StackAlignment
from ..backends.base import Backend
from ..box import Box
from ..errors import UsageError
from ..frames.fill import image_mask
from ..frames.sources import FrameSource
from ..io.images import FrameRef
from ..io.sinks import ArrayOutput, Output, Sink
from ..methods.base import FusionMethod
from .alignment import AlignProgress, align_frames, crop_window
from .options import FusionOptions
from .plan import Plan, plan_fusion
from .sources import decode_bytes, opened_frames, prepared_source
from .tiles import TileResult, TileWork, fuse_tile

ProgressCallback = Callable[[int, int, str], None]
KEPT_MEMORY_TO_RELEASE = 64 << 20  # freed memory kept by the allocator worth handing back before planning


@dataclass
class FusionRun:
    """What a fusion made: the sink holding (or having written) the result, and how it got there."""

    sink: Sink
    frames: list[str]  # names of the frames fused, in order
    alignment: StackAlignment | None = None
    skipped: list[str] | None = None  # one message per frame left out (alignment failed)
    window: Box | None = None  # the crop window, in reference-frame pixels
    plan: Plan | None = None


def run_fusion(refs: Sequence[np.ndarray | FrameRef], method: FusionMethod, backend: Backend,
               options: FusionOptions, *, output: Output | None = None, reference: int | None = None,
               require_alignment: bool = False, progress: ProgressCallback | None = None,
               align_progress: AlignProgress | None = None, remote: RemoteTiles | None = None) -> FusionRun:
    """Fuse the frames ``refs`` with ``method`` on ``backend`` (options already validated).

    ``reference``: the frame the others are registered onto (default: the middle one).
    ``require_alignment``: a frame that cannot be aligned is an error (pairs) instead of being left out.
    ``remote``: where the tiles of a tiled run are fused (default: here), after the alignment and the
    whole-frame statistics passes, which run here.
    """
    output = output or ArrayOutput()
    with opened_frames(refs) as opened, ExitStack() as stack:
        sources, channels, dtype = opened.sources, opened.channels, opened.dtype
        plan = _plan(opened.shape, channels, dtype, method, backend, options, output, sources)
        executor = stack.enter_context(ThreadPoolExecutor(plan.workers)) if plan.workers else None
        stack.enter_context(backend.session())
        aligned, window = None, None
        used = list(range(len(sources)))
        if options.align != "none":
            aligned = align_frames(opened, options.align, reference=reference, executor=executor,
                                   read_ahead=plan.align_read_ahead, require=require_alignment,
                                   progress=align_progress)
            used = aligned.used
            backend.release_memory()  # what the alignment pass freed: the plan counted it as free
            if options.crop:
                window = crop_window(aligned.alignment)
                plan = _plan(window.shape, channels, dtype, method, backend, options, output, sources)
        alignment = None if aligned is None else aligned.alignment
        frames = [(i, prepared_source(sources[i], alignment, i, window, options.edge_fill)) for i in used]
        for _, source in frames:
            source.expect_reads(many=plan.tiled or alignment is not None)
        work = None
        if remote is not None:
            def work(plan: Plan, statistics: list[Any]) -> Iterator[TileResult]:
                return remote.fused_tiles(TileWork(list(refs), used, alignment, window, options, plan, statistics,
                                                   dtype))
        sink = _fuse(frames, method, backend, plan, output, channels, dtype, executor, progress, work)
    return FusionRun(sink, [source.name for _, source in frames], alignment,
                     [] if aligned is None else aligned.skipped, window, plan)


def _plan(shape: tuple[int, int], channels: int, dtype: np.dtype, method: FusionMethod, backend: Backend,
          options: FusionOptions, output: Output, sources: Sequence[FrameSource]) -> Plan:
    """The plan (see :func:`plan_fusion`). Memory an earlier run freed and the allocator keeps for reuse counts
    as used; when the plan would tile because of it (or could not be made), it is handed back first."""
    try:
        plan = _plan_with_outputs(shape, channels, dtype, method, backend, options, output, sources)
    except UsageError:
        plan = None
    if (plan is None or plan.tiled) and backend.reusable_memory() > KEPT_MEMORY_TO_RELEASE:
        backend.release_memory()
        plan = None
    return plan or _plan_with_outputs(shape, channels, dtype, method, backend, options, output, sources)


def _plan_with_outputs(shape: tuple[int, int], channels: int, dtype: np.dtype, method: FusionMethod,
                       backend: Backend, options: FusionOptions, output: Output,
                       sources: Sequence[FrameSource]) -> Plan:
    """The plan, with what the output holds in memory for an untiled run, or, if that needs tiles, a tiled one."""
    height, width = shape
    decoded = decode_bytes(sources)
    frames = len(sources)
    plan = plan_fusion(shape, channels, dtype, method, backend, options, frames=frames,
                       held_bytes=output.held_bytes(height, width, channels, dtype, False), decode_bytes=decoded)
    if plan.tiled:
        plan = plan_fusion(shape, channels, dtype, method, backend, options, frames=frames,
                           held_bytes=output.held_bytes(height, width, channels, dtype, True), decode_bytes=decoded)
    return plan


class _Progress:
    """Counts steps (one per frame and region, plus one per frame for the statistics of a tiled run)."""

    def __init__(self, callback: ProgressCallback | None, steps: int) -> None:
        self.callback, self.steps, self.done = callback, steps, 0

    def step(self, name: str) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(self.done, self.steps, name)


def _fuse(frames: list[tuple[int, FrameSource]], method: FusionMethod, backend: Backend, plan: Plan, output: Output,
          channels: int, dtype: np.dtype, executor: ThreadPoolExecutor | None,
          progress: ProgressCallback | None,
          remote: Callable[[Plan, list[Any]], Iterator[TileResult]] | None = None) -> Sink:
    """Tiles outer, frames inner (here, or by ``remote`` given the plan and the statistics); the sink of the
    result."""
    height, width = plan.shape
    counter = _Progress(progress, len(frames) * (len(plan.tiles) + (1 if plan.tiled else 0)))
    statistics: list[Any] = [None] * len(frames)
    if plan.tiled:
        carry = None
        for k, (_, source) in enumerate(frames):
            statistics[k], carry = method.frame_statistics(lambda box, s=source: _network_input(s, box, backend),
                                                           plan.shape, plan.tile_size, carry)
            counter.step(f"{source.name} (statistics)")
        del carry
    sink = output.open(height, width, channels, dtype, plan.tiled)
    try:
        if remote is not None and plan.tiled:  # after the statistics pass the tiles are independent
            backend.release_memory()  # what the statistics pass freed: the workers may share this machine
            with closing(remote(plan, statistics)) as cores:  # an error here cancels the tiles still running
                for tile, done in zip(plan.tiles, cores):
                    sink.write(tile.core, done.fused, done.index, done.maps)
                    for _ in frames:
                        counter.step(f"tile {tile.core.y0},{tile.core.x0}")
        else:
            for tile in plan.tiles:
                done = fuse_tile(frames, method, backend, plan, tile, statistics, executor, dtype, counter.step)
                sink.write(tile.core, done.fused, done.index, done.maps)
        sink.close()
    except BaseException:
        sink.abort()
        raise
    return sink


def _network_input(source: FrameSource, box: Box, backend: Backend) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What the network sees in ``box`` (edge fill replaced) and where the frame has image pixels there (None:
    everywhere), as a tile of it would see them: what the whole-frame statistics need."""
    pixels = source.read(box)
    fill = source.fill_in(box, pixels)
    if fill is None:
        return backend.upload(backend.stage(pixels)), None
    network, area = fill
    return backend.upload(backend.stage(network)), image_mask(area, box.shape, backend.device)


class RemoteTiles(Protocol):
    """Fuses a tiled run's tiles elsewhere (e.g. as tasks on a cluster's workers) once the whole-frame
    statistics are known."""

    def fused_tiles(self, work: TileWork) -> Iterator[TileResult]:
        """The cores of ``work.plan.tiles``, in plan order."""
        ...


__all__ = ["FusionRun", "run_fusion", "RemoteTiles"]
