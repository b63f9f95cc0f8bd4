"""The public fusion functions: ``fuse_stack`` and ``fuse_pair`` (arrays or files in, arrays out)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..align.estimate import StackAlignment
from ..backends.base import Backend
from ..backends.select import select_backend
from ..errors import UsageError
from ..frames.refs import FrameLike, frame_refs, match_channels, require_frames
from ..io.sinks import ArrayOutput, Output
from ..methods.base import FusionMethod
from ..methods.registry import load_method_weights, make_method
from ..methods.gacn.decision import blend, decide_pair
from ..methods.gacn.model import GACN
from ..methods.gacn.network import GacnNetwork
from ..methods import DEFAULT_METHOD, WITHOUT_MAPS
from ..ops.color import to_gray
from .options import FusionOptions
from .run import AlignProgress, FusionRun, ProgressCallback, run_fusion

Weights = str | os.PathLike | GACN | None


@dataclass
class StackResult:
    """Fused image (the frames' dtype; float32 for float frames), index map (uint16 HxW, 0-based index into the input
    frames), the frames used, the alignment (None without) and the frames left out with the reason."""

    fused: np.ndarray | None  # None when an output wrote it elsewhere
    index_map: np.ndarray | None
    strategy: str
    frames: list[str] = field(default_factory=list)
    alignment: StackAlignment | None = None
    skipped: list[str] = field(default_factory=list)
    box: tuple[int, int, int, int] | None = None  # the crop window (x0, y0, x1, y1)
    shape: tuple[int, int] = (0, 0)
    tiles: int = 1


@dataclass
class PairResult:
    """Fused image (caller's dtype and layout; float32 for float frames), final and initial decision maps
    (float32 HxW, 1 = A; None for a method that regresses pixels)."""

    fused: np.ndarray
    decision_map: np.ndarray | None
    initial_map: np.ndarray | None


def fuse_stack(frames: FrameLike | Sequence[FrameLike], *, method: str = DEFAULT_METHOD,
               strategy: str | None = None,
               weights: Weights = None, device: str | torch.device | Backend = "auto", align: str = "auto",
               crop: bool = False, tile_size: int | None = None, reduce: int = 1, edge_fill: bool = True,
               memory_limit: int | str | None = None, workers: int | None = None,
               progress: ProgressCallback | None = None, align_progress: AlignProgress | None = None,
               output: Output | None = None, client: Any = None,
               boundary_blend: str | bool | None = None) -> StackResult:
    """Fuse a focus stack: a list of arrays or paths, a folder, a multi-page TIFF (read lazily), or one
    (Z, Y, X[, C]) array.

    ``method``: gacn (the default), wavelet (a classical pyramid method, no network, no weights: fast on a
    CPU), sesf (SESF-Fuse) or rpsnn (R-PSNN, no maps); ``weights`` are gacn's, sesf's and rpsnn's, ``strategy``
    (default calibrated) gacn's and sesf's.
    ``align`` (auto, none, translation, affine, homography) first registers every frame onto the middle
    frame; frames that cannot be aligned are left out with a warning. ``crop`` keeps only the area valid in
    all aligned frames. ``tile_size`` bounds memory: the image is processed in tiles of that size (with a
    halo, and whole-frame channel statistics, so the result equals the untiled one); 0 processes it whole;
    None chooses from the memory budget: ``memory_limit`` (bytes, or a size such as "4G"), by default half
    the free memory (at most 8 GiB of main memory). ``reduce`` > 1 (an option
    for speed, not the default) runs the decision path, most of the network's work, at that many times
    lower resolution. ``edge_fill`` (default): constant bands along a frame's edges, as registration by
    other tools leaves them, are replaced by image pixels for the network and never chosen where
    another frame has pixels. ``workers``: threads that read and prepare frames (default: one per core,
    at most 8). ``output`` may direct the result elsewhere than into arrays (an :class:`~focusfuse.io.sinks.Output`,
    e.g. a streamed TIFF; to write image files with metadata and maps, use :func:`focusfuse.run_stack`).
    ``client``: a Dask client whose workers fuse the tiles of a tiled run (alignment and the whole-frame
    statistics run here first; the result is the same); each worker loads the weights once, onto its own
    ``device``. ``boundary_blend`` (gacn): with three frames or more (two: only with blend weights that carry
    a pair refiner, see :func:`fuse_pair`), blend the frames by sharpness near the index map's edges (fewer
    seams and stripes): ``learned`` (the default, or True) corrects
    the weights with the shipped blend network, ``laplacian`` uses the Laplacian energy alone (faster), a weights
    file or installed name uses blend weights trained by ``focusfuse train --method blend``; ``off`` (or False)
    keeps GACN's hard switch.
    """
    options = FusionOptions(method=method, strategy=strategy, align=align, crop=crop, tile_size=tile_size,
                            reduce=reduce, edge_fill=edge_fill, memory_limit=memory_limit, workers=workers,
                            boundary_blend=boundary_blend)
    if output is not None and not callable(getattr(output, "held_bytes", None)):
        raise UsageError(f"output {output!r}: not an output sink (focusfuse.io.sinks); to write an image file, "
                         "use focusfuse.run_stack with a StackJob", option="output")
    for name, callback in (("progress", progress), ("align_progress", align_progress)):
        if callback is not None and not callable(callback):
            raise UsageError(f"{name} must be a function (or None), not {callback!r}", option=name)
    refs = frame_refs(frames)
    require_frames(refs)
    return stack_result(run_stack_fusion(refs, options, weights=weights, device=device, progress=progress,
                                         align_progress=align_progress, output=output, client=client), options)


def run_stack_fusion(refs: Sequence, options: FusionOptions, *, weights: Weights = None,
                     device: str | torch.device | Backend = "auto", progress: ProgressCallback | None = None,
                     align_progress: AlignProgress | None = None, output: Output | None = None,
                     method: FusionMethod | None = None, client: Any = None) -> FusionRun:
    """A stack fusion with validated ``options`` (what ``fuse_stack`` and the stack job run); ``method``
    replaces the method the options name, with ``weights`` (e.g. a stand-in that measures the host work alone);
    ``client``: a Dask client whose workers fuse the tiles."""
    backend = select_backend(device)
    remote = None
    if client is not None:
        from ..cluster.connect import check_client

        check_client(client)  # before any import of Dask's modules, and before the alignment pass
        if method is not None:
            raise UsageError("a replaced method runs in this process only: no client", option="client")
        from ..cluster.connect import shared_memory_limit
        from ..cluster.tiles import ClusterTiles

        if options.memory_limit is None and (limit := shared_memory_limit(client)) is not None:
            options = replace(options, memory_limit=limit)  # tiles sized so that the workers here fit beside us
        weights = load_method_weights(options.method, weights, backend.device)  # once here, then once per worker
        remote = ClusterTiles(client, weights, options.method, device if isinstance(device, str) else backend.device)
    if method is None:
        method = make_method(options.method, backend, weights=weights, strategy=options.strategy,
                             reduce=options.reduce, boundary_blend=options.boundary_blend)
    return run_fusion(refs, method, backend, options, output=output, progress=progress, align_progress=align_progress,
                      remote=remote)


def stack_result(run: FusionRun, options: FusionOptions) -> StackResult:
    window = run.window
    index = None if options.method in WITHOUT_MAPS else run.sink.index
    return StackResult(fused=run.sink.fused, index_map=index, strategy=options.strategy, frames=run.frames,
                       alignment=run.alignment, skipped=run.skipped or [],
                       box=None if window is None else (window.x0, window.y0, window.x1, window.y1),
                       shape=run.sink.shape, tiles=len(run.plan.tiles) if run.plan else 1)


def fuse_pair(a: FrameLike, b: FrameLike, *, weights: Weights = None, device: str | torch.device | Backend = "auto",
              align: str = "none", tile_size: int | None = None, reduce: int = 1, edge_fill: bool = True,
              memory_limit: int | str | None = None, workers: int | None = None,
              method: str = DEFAULT_METHOD, boundary_blend: str | bool | None = None) -> PairResult:
    """Fuse two frames (arrays or paths). The fused image keeps the inputs' dtype (float frames give
    float32) and channels.

    ``align`` (none, auto, translation, affine, homography) registers B onto A first (a failure is an
    error); ``method``, ``tile_size``, ``reduce``, ``edge_fill``, ``memory_limit`` and ``workers`` as in
    :func:`fuse_stack`. With the wavelet method the decision maps are 1 where A's finest detail was kept.
    ``boundary_blend`` (gacn): blend weights with a pair refiner (a file or a name, such as the shipped
    ``focusfuse-blend-pairs``) redraw the band around the decision map's edge; the default (learned), laplacian,
    off, or weights without one keep GACN's fused image. The decision maps returned are GACN's either way.
    """
    options = FusionOptions(method=method, align=align, tile_size=tile_size, reduce=reduce, edge_fill=edge_fill,
                            memory_limit=memory_limit, workers=workers, boundary_blend=boundary_blend)
    refs = frame_refs([a, b])
    if len(refs) != 2:
        raise UsageError("fuse_pair takes exactly two single frames (use fuse_stack for more)")
    run = run_pair_fusion(refs, options, weights=weights, device=device, output=ArrayOutput(("decision", "initial")))
    if options.method in WITHOUT_MAPS:
        return PairResult(run.sink.fused, None, None)
    return PairResult(run.sink.fused, run.sink.maps["decision"], run.sink.maps["initial"])


def run_pair_fusion(refs: Sequence, options: FusionOptions, *, weights: Weights = None,
                    device: str | torch.device | Backend = "auto", output: Output | None = None) -> FusionRun:
    """A pair fusion with validated ``options``: B registered onto A (when aligned), decision maps kept."""
    backend = select_backend(device)
    method = make_method(options.method, backend, weights=weights, strategy="pair", reduce=options.reduce,
                         boundary_blend=options.boundary_blend)
    return run_fusion(refs, method, backend, options, output=output, reference=0, require_alignment=True)


def fuse_tensors(net: GacnNetwork, a: torch.Tensor, b: torch.Tensor,
                 reduce: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(C,H,W) frames in [0,1] on the network's device -> (fused (C,H,W), final map (H,W), initial map (H,W)),
    untiled, no file or frame handling (for benchmarks and notebooks)."""
    a, b = match_channels(a, b)
    p0, p = decide_pair(net, to_gray(a)[None], to_gray(b)[None], reduce)
    return blend(p[0], a, b), p[0, 0], p0[0, 0]


__all__ = ["StackResult", "PairResult", "fuse_stack", "fuse_pair", "fuse_tensors", "run_stack_fusion",
           "run_pair_fusion"]
