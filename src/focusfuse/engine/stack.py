"""Stack fusion: N focus-bracketed frames -> one all-in-focus image and an index map.

Frames stream through one at a time; a strategy keeps only running state (never the whole stack):

- ``calibrated`` (default): a running per-pixel champion. The champion's focus measure is the
  per-channel maximum, over the frames so far, of the spatial frequency of their deep features. Every
  new frame costs one feature pass and is compared with the champion in one decision pass; the fused
  image is blended towards the new frame where it wins (final decision map), the index map follows.
  N feature passes, N-1 decision passes; every comparison is against the sharpest evidence so far, so
  it does not saturate like Eq. 18. All running state is updated pixel by pixel from decisions that
  depend on the inputs only (the maximum, and the initial map for the gray guide), so a tiled run
  needs only the network's fixed halo.
- ``calibration``: the paper's decision calibration (Eq. 18), as the authors' code does it: every frame
  is compared with frame 1 (features cached) and a per-pixel decision volume
  DV_1 = p_2, DV_2 = 1 - p_2, DV_j = p_2 / (p_j + 1e-4) * (1 - p_j) picks the frame (hard choice).
- ``serial``: fuse 1 with 2, the result with 3, ...; 2(N-1) feature passes.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from typing import Protocol
from dataclasses import dataclass, field

import numpy as np
import torch

from ..ops.color import from_tensor, to_gray, to_tensor
from ..methods.gacn.decision import (blend, check_reduce, decide_pair, decision_focus_measure, full_resolution_initial_map,
                       refine_decision_map)
from ..backends.device import release_free_memory, resolve_device
from ..frames.fill import FrameFill, either_has_image, image_mask, prefer_image
from ..errors import InputError, UsageError
from ..align.estimate import MODES as ALIGN_MODES
from ..align.estimate import FrameAlignment, StackAlignment, estimate_alignment
from ..frames.refs import FrameChecker, FrameLike, LazyFrames, frame_name, frame_refs, match_channels, require_frames
from ..io.images import FrameRef
from ..io.sinks import ArraySink
from ..frames.sources import ArraySource, CroppedSource, FileSource, FillAwareSource, FrameSource, OpenTiffs, WarpedSource
from .tiling import Box, Tile, choose_tile_size, frame_channel_weights, halo_for, tile_grid
from ..methods.gacn.model import GACN
from ..methods.gacn.weights import load_model

EQ18_EPS = 1e-4

ProgressCallback = Callable[[int, int, str], None]
ChannelWeights = Sequence[torch.Tensor] | None


@dataclass
class StackResult:
    """Fused image (the frames' dtype), index map (uint16 HxW, 0-based index into the input
    frames), the frames used, the alignment (None without) and the frames left out with the reason."""

    fused: np.ndarray | None  # None when a sink wrote it elsewhere
    index_map: np.ndarray | None
    strategy: str
    frames: list[str] = field(default_factory=list)
    alignment: StackAlignment | None = None
    skipped: list[str] = field(default_factory=list)
    box: tuple[int, int, int, int] | None = None
    shape: tuple[int, int] = (0, 0)


class StackStrategy:
    """Running state of a streaming stack fusion; ``add`` takes frames in order.

    ``reduce`` > 1: the decision path sees the focus measures reduced that many times; decisions are
    enlarged back to full resolution before the refinement and the blend (see :mod:`focusfuse.methods.gacn.decision`).
    ``has_image``: where what the next frame is compared with (the fused image so far; for ``calibration``
    the baseline) holds image pixels, not edge fill (None: everywhere; see :mod:`focusfuse.frames.fill`).
    """

    def __init__(self, model: GACN, reduce: int = 1) -> None:
        self.model = model
        self.reduce = reduce
        self.fused: torch.Tensor | None = None
        self.index: torch.Tensor | None = None
        self.has_image: torch.Tensor | None = None

    def add(self, i: int, frame: torch.Tensor, channel_weights: ChannelWeights = None,
            fill: FrameFill | None = None) -> None:
        """Take frame number ``i`` (its index in the input list); the first call starts the state.

        ``channel_weights``: the frame's whole-frame CSE weights when ``frame`` is a tile of it.
        ``fill``: the frame's edge fill in this region (see :mod:`focusfuse.frames.fill`), None without.
        """
        raise NotImplementedError

    def _gray(self, frame: torch.Tensor, fill: FrameFill | None) -> torch.Tensor:
        """The gray frame (1,1,H,W) the network sees: with edge fill replaced by image pixels."""
        return to_gray(frame if fill is None else fill.network)[None]

    def _focus_measure(self, gray: torch.Tensor, channel_weights: ChannelWeights,
                       fill: FrameFill | None = None) -> torch.Tensor:
        return decision_focus_measure(self.model, gray, self.reduce, channel_weights, has_image(fill))

    def _initial_map(self, sf_a: torch.Tensor, sf_b: torch.Tensor, gray: torch.Tensor) -> torch.Tensor:
        return full_resolution_initial_map(self.model, sf_a, sf_b, self.reduce, gray.shape[-2:])

    def _start(self, i: int, frame: torch.Tensor, fill: FrameFill | None) -> None:
        self.fused = frame
        self.index = torch.full(frame.shape[-2:], i, dtype=torch.int32, device=frame.device)
        self.has_image = has_image(fill)

    def _prefer_image(self, p: torch.Tensor, fill: FrameFill | None) -> torch.Tensor:
        """Decision ``p`` (1 = what the frame is compared with) never taking edge fill where the other has pixels."""
        return prefer_image(p, self.has_image, has_image(fill))

    def _add_image_area(self, fill: FrameFill | None) -> None:
        self.has_image = either_has_image(self.has_image, has_image(fill))

    def _take(self, i: int, frame: torch.Tensor, p: torch.Tensor) -> None:
        """Soft blend of the running fused image with ``frame`` (p = weight of the running image)."""
        fused, frame = match_channels(self.fused, frame)
        self.fused = blend(p, fused, frame)
        self.index = torch.where(p[0] < 0.5, i, self.index)


class CalibratedStack(StackStrategy):
    """Running champion: per-channel max focus measure; one feature and one decision pass per new frame."""

    def __init__(self, model: GACN, reduce: int = 1) -> None:
        super().__init__(model, reduce)
        self.sf_best: torch.Tensor | None = None
        self.gray_best: torch.Tensor | None = None

    def add(self, i: int, frame: torch.Tensor, channel_weights: ChannelWeights = None,
            fill: FrameFill | None = None) -> None:
        gray = self._gray(frame, fill)
        sf = self._focus_measure(gray, channel_weights, fill)
        if self.fused is None:
            self._start(i, frame, fill)
            self.sf_best, self.gray_best = sf, gray
            return
        p0 = self._prefer_image(self._initial_map(self.sf_best, sf, gray), fill)
        p = self._prefer_image(refine_decision_map(p0, self.gray_best, gray), fill)
        self._take(i, frame, p[0])
        self.gray_best = blend(p0, self.gray_best, gray)
        torch.maximum(self.sf_best, sf, out=self.sf_best)  # the champion SF is ours alone
        self._add_image_area(fill)
        self.record(p0, p)

    def record(self, p0: torch.Tensor, p: torch.Tensor) -> None:
        """Hook called with each step's initial and final decision maps (B,1,H,W)."""


class PairStack(CalibratedStack):
    """Two frames: the calibrated step is exactly the pair fusion; also keeps the decision maps."""

    def __init__(self, model: GACN, reduce: int = 1) -> None:
        super().__init__(model, reduce)
        self.maps: dict[str, torch.Tensor] = {}

    def record(self, p0: torch.Tensor, p: torch.Tensor) -> None:
        self.maps = {"decision": p[0, 0], "initial": p0[0, 0]}


class CalibrationStack(StackStrategy):
    """The paper's Eq. 18 against a cached baseline (frame 1); hard per-pixel choice.

    Where frame 1 is edge fill there is no baseline to compare with: the first frame with image wins."""

    def __init__(self, model: GACN, reduce: int = 1) -> None:
        super().__init__(model, reduce)
        self.sf_base: torch.Tensor | None = None
        self.gray_base: torch.Tensor | None = None
        self.p2: torch.Tensor | None = None
        self.best: torch.Tensor | None = None

    def add(self, i: int, frame: torch.Tensor, channel_weights: ChannelWeights = None,
            fill: FrameFill | None = None) -> None:
        gray = self._gray(frame, fill)
        sf = self._focus_measure(gray, channel_weights, fill)
        if self.fused is None:
            self._start(i, frame, fill)
            self.sf_base, self.gray_base = sf, gray
            return
        p0 = self._prefer_image(self._initial_map(self.sf_base, sf, gray), fill)
        p = self._prefer_image(refine_decision_map(p0, self.gray_base, gray), fill)[0, 0]
        if self.p2 is None:
            self.p2 = p
            self.best = only_on_image(p, self.has_image)  # DV_1 (the baseline's fill never wins)
            score = 1.0 - p  # DV_2
        else:
            score = self.p2 / (p + EQ18_EPS) * (1.0 - p)  # DV_j
        score = only_on_image(score, has_image(fill))
        wins = score > self.best
        fused, frame = match_channels(self.fused, frame)
        self.fused = torch.where(wins, frame, fused)
        self.index = torch.where(wins, i, self.index)
        self.best = torch.where(wins, score, self.best)


def has_image(fill: FrameFill | None) -> torch.Tensor | None:
    """Where a frame region has image pixels (None: everywhere, no fill)."""
    return None if fill is None else fill.has_image


def only_on_image(score: torch.Tensor, has_image: torch.Tensor | None) -> torch.Tensor:
    """An Eq. 18 score (H,W) set to -inf on edge fill, so a frame with image pixels always beats it there."""
    return score if has_image is None else torch.where(has_image[0, 0], score, float("-inf"))


class SerialStack(StackStrategy):
    """Fuse the running result with each new frame as a pair (2 feature passes per frame).

    The network sees the running result as the same blend of the frames' network inputs (their gray,
    with edge fill replaced), so fill that every frame so far has does not step into it."""

    def __init__(self, model: GACN, reduce: int = 1) -> None:
        super().__init__(model, reduce)
        self.gray: torch.Tensor | None = None

    def add(self, i: int, frame: torch.Tensor, channel_weights: ChannelWeights = None,
            fill: FrameFill | None = None) -> None:
        gray = self._gray(frame, fill)
        if self.fused is None:
            self._start(i, frame, fill)
            self.gray = gray
            return
        _, p = decide_pair(self.model, self.gray, gray, self.reduce, self.has_image, has_image(fill))
        p = self._prefer_image(p, fill)
        self._take(i, frame, p[0])
        self.gray = blend(p, self.gray, gray)
        self._add_image_area(fill)


STRATEGIES: dict[str, type[StackStrategy]] = {
    "calibrated": CalibratedStack,
    "calibration": CalibrationStack,
    "serial": SerialStack,
}
DEFAULT_STRATEGY = "calibrated"


def estimate_or_fail(refs: Sequence, mode: str, reference: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> StackAlignment:
    """First pass: estimate how each frame maps onto the reference (default: middle) frame."""
    try:
        return estimate_alignment(LazyFrames(refs), mode=mode, reference=reference, progress=progress)
    except ValueError as exc:
        raise InputError(f"alignment: {exc}") from exc


def checked_crop_box(alignment: StackAlignment) -> tuple[int, int, int, int]:
    """The area valid in all aligned frames (``--crop``); an error when they share none."""
    x0, y0, x1, y1 = alignment.valid_box()
    if x1 <= x0 or y1 <= y0:
        raise InputError("--crop: the aligned frames share no common area (try without --crop)")
    return x0, y0, x1, y1


def align_pair(refs: Sequence, mode: str) -> StackAlignment | None:
    """Register the second frame of a pair onto the first (None for mode "none"); failure is an error."""
    if mode not in ALIGN_MODES:
        raise UsageError(f"unknown alignment {mode!r} (use {', '.join(ALIGN_MODES)})")
    if mode == "none":
        return None
    alignment = estimate_or_fail(refs, mode, reference=0)
    if alignment.failures():
        raise InputError(f"alignment failed: {alignment.failures()[0]} (try --align none)")
    return alignment


def open_sources(refs: Sequence, alignment: StackAlignment | None, window: tuple[int, int, int, int] | None,
                 cache_dir: str, tiffs: OpenTiffs, edge_fill: bool = True) -> list[tuple[int, FrameSource]]:
    """(index, source) of every usable frame: registered when aligned, cropped with a window (x0, y0, x1, y1),
    its edge fill found (``edge_fill``, see :mod:`focusfuse.frames.fill`)."""
    sources = []
    for i, ref in enumerate(refs):
        if alignment is not None and not alignment.frames[i].ok:
            continue
        name = frame_name(ref, i)
        source: FrameSource = (FileSource(ref, name, cache_dir, tiffs) if isinstance(ref, FrameRef)
                               else ArraySource(ref, name))
        if alignment is not None and not is_identity(alignment.frames[i]):
            source = WarpedSource(source, alignment.frames[i], alignment.shape)
        if window is not None:
            x0, y0, x1, y1 = window
            source = CroppedSource(source, Box(y0, y1, x0, x1))
        if edge_fill:
            source = FillAwareSource(source)
        sources.append((i, source))
    return sources


def is_identity(alignment: FrameAlignment) -> bool:
    return (np.array_equal(alignment.transform, np.eye(3)) and alignment.gain == 1.0 and alignment.offset == 0.0)


class Sink(Protocol):
    fused: np.ndarray | None
    index: np.ndarray | None

    shape: tuple[int, int]

    def write(self, core: Box, fused: np.ndarray, index: np.ndarray,
              maps: dict[str, np.ndarray] | None = None) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


SinkFactory = Callable[[int, int, int, np.dtype, int], Sink]


def fuse_frames(refs: Sequence, strategy: type[StackStrategy], model: GACN, device: torch.device, *,
                alignment: StackAlignment | None = None, window: tuple[int, int, int, int] | None = None,
                tile_size: int | None = None, progress: ProgressCallback | None = None,
                sink: SinkFactory | None = None, maps: Sequence[str] = (), reduce: int = 1,
                edge_fill: bool = True) -> tuple[Sink, list[str]]:
    """The fusion loop: tiles outer, frames inner; returns the sink holding the result and the frames used.

    Frames are opened as sources (registered with ``alignment``, cropped to ``window``) and read one at a
    time, one tile at a time. With several tiles, every frame's whole-frame channel statistics are
    computed first, so tiles fuse exactly as the whole image would. ``reduce`` > 1 (checked by the callers,
    before their alignment) runs the decision path at that many times lower resolution (tiles then start
    at multiples of ``reduce``, so they stay exact). ``edge_fill``: find constant bands along the frames'
    edges and keep them out of the decisions (see :mod:`focusfuse.frames.fill`).
    """
    with tempfile.TemporaryDirectory(prefix="focusfuse-") as cache, torch.inference_mode():
        tiffs = OpenTiffs()
        out: Sink | None = None
        sources: list[tuple[int, FrameSource]] = []
        try:
            sources = open_sources(refs, alignment, window, cache, tiffs, edge_fill)
            if len(sources) < 2:  # frames the alignment left out: a processing failure, not a usage error
                raise InputError(f"need at least 2 frames, {len(sources)} of {len(refs)} frames could be used "
                                 "(alignment failed)")
            checker = FrameChecker()
            for _, source in sources:
                checker.check_info(source.info.shape, source.info.dtype, source.info.channels, source.name)
            height, width = checker.shape
            tile = choose_tile_size(height, width, device, reduce=reduce) if tile_size is None else tile_size
            tile = -(-tile // reduce) * reduce  # reduced blocks must not straddle tiles
            tiles = tile_grid(height, width, tile, halo=halo_for(reduce))
            if len(tiles) > 1 and strategy is SerialStack:
                raise UsageError("--strategy serial cannot run in tiles (it feeds the fused image back through "
                                 "the network); use --tile-size 0 or the calibrated strategy")
            for _, source in sources:
                source.expect_reads(many=len(tiles) > 1)
            if sink is not None:
                out = sink(height, width, checker.channels, checker.dtype, len(tiles))
            else:
                out = ArraySink(height, width, checker.channels, checker.dtype, maps=maps)
            run = _TiledRun(model, sources, (height, width), tile, len(tiles), device, progress)
            channel_weights = run.channel_weights()
            for tile_ in tiles:
                release_free_memory()  # hand back the last tile's freed pages: this one's shapes differ
                state = strategy(model, reduce)
                run.fuse_tile(state, tile_, channel_weights)
                rows, cols = tile_.core.within(tile_.crop)
                tile_maps = {k: v[rows, cols].float().cpu().numpy() for k, v in getattr(state, "maps", {}).items()}
                out.write(tile_.core, from_tensor(state.fused[:, rows, cols], checker.dtype),
                          state.index[rows, cols].to(torch.int32).cpu().numpy().astype(np.uint16), tile_maps)
            out.close()
        except BaseException:
            if out is not None:
                out.abort()
            raise
        finally:
            for _, source in sources:
                source.close()
            tiffs.close()
            release_free_memory()
    return out, [source.name for _, source in sources]


def fuse_stack(frames: FrameLike | Sequence[FrameLike], *, strategy: str = DEFAULT_STRATEGY,
               weights: str | os.PathLike | GACN | None = None, device: str | torch.device = "auto",
               align: str = "auto", crop: bool = False, tile_size: int | None = None,
               progress: ProgressCallback | None = None, align_progress: Callable[[int, int], None] | None = None,
               sink: SinkFactory | None = None, reduce: int = 1, edge_fill: bool = True) -> StackResult:
    """Fuse a focus stack: a list of arrays or paths, a folder, or a multi-page TIFF (read lazily).

    ``align`` (auto, none, translation, affine, homography) first registers every frame onto the
    middle frame; frames that cannot be aligned are left out with a warning. ``crop`` keeps only the
    area valid in all aligned frames. ``tile_size`` bounds memory: the image is processed in tiles of
    that size (with a halo, and whole-frame channel statistics, so the result equals the untiled one);
    0 processes it whole; None chooses from the free memory of the device. ``sink(height, width,
    channels, dtype, n_tiles)`` may direct the result elsewhere than into arrays (e.g. a TIFF file).
    ``reduce`` > 1 (an option for speed, not the default) runs the decision path, most of the network's
    work, at that many times lower resolution; features, maps and blend stay at full resolution.
    ``edge_fill`` (default): constant bands along a frame's edges, as registration by other tools leaves
    them, are replaced by image pixels for the network and never chosen where another frame has pixels.
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r} (use {', '.join(STRATEGIES)})")
    if align not in ALIGN_MODES:
        raise UsageError(f"unknown alignment {align!r} (use {', '.join(ALIGN_MODES)})")
    reduce = check_reduce(reduce)
    refs = frame_refs(frames)
    require_frames(refs)
    dev = resolve_device(device)
    model = load_model(weights, dev)
    alignment = None if align == "none" else estimate_or_fail(refs, align, progress=align_progress)
    skipped = [] if alignment is None else alignment.failures()
    for message in skipped:
        warnings.warn(f"{message}; frame left out", stacklevel=2)
    window = checked_crop_box(alignment) if (alignment is not None and crop) else None
    out, names = fuse_frames(refs, STRATEGIES[strategy], model, dev, alignment=alignment, window=window,
                             tile_size=tile_size, progress=progress, sink=sink, reduce=reduce, edge_fill=edge_fill)
    return StackResult(fused=out.fused, index_map=out.index, strategy=strategy, frames=names, alignment=alignment,
                       skipped=skipped, box=window, shape=out.shape)


class _TiledRun:
    """The frame-inner loop of one tile, and the whole-frame channel statistics tiles need."""

    def __init__(self, model: GACN, sources: list[tuple[int, FrameSource]], shape: tuple[int, int], tile_size: int,
                 n_tiles: int, device: torch.device, progress: ProgressCallback | None) -> None:
        self.model, self.sources, self.device, self.progress = model, sources, device, progress
        self.shape, self.tile_size = shape, tile_size
        self.whole = n_tiles == 1
        self.steps = len(sources) * (n_tiles + (0 if self.whole else 1))
        self.done = 0

    def _step(self, name: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.steps, name)

    @staticmethod
    def _pixels(source: FrameSource, box: Box) -> tuple[np.ndarray, tuple[np.ndarray, Box] | None]:
        """The frame's pixels in ``box`` and its edge fill there (:meth:`FrameSource.fill_in`)."""
        pixels = source.read(box)
        return pixels, source.fill_in(box, pixels)

    def read(self, source: FrameSource, box: Box) -> tuple[torch.Tensor, FrameFill | None]:
        """The frame's pixels in ``box`` and, where it has edge fill, what the network sees instead."""
        pixels, fill = self._pixels(source, box)
        frame = to_tensor(pixels, self.device)
        if fill is None:
            return frame, None
        network, area = fill
        return frame, FrameFill(to_tensor(network, self.device), image_mask(area, box.shape, self.device))

    def network_input(self, source: FrameSource, box: Box) -> torch.Tensor:
        """Only what the network sees in ``box`` (the channel statistics need nothing else)."""
        pixels, fill = self._pixels(source, box)
        return to_tensor(pixels if fill is None else fill[0], self.device)

    def channel_weights(self) -> list[ChannelWeights]:
        if self.whole:
            return [None] * len(self.sources)
        weights = []
        for _, source in self.sources:
            weights.append(frame_channel_weights(self.model, lambda box, s=source: self.network_input(s, box),
                                                 *self.shape, self.tile_size))
            self._step(f"{source.name} (statistics)")
        return weights

    def fuse_tile(self, state: StackStrategy, tile: Tile, channel_weights: list[ChannelWeights]) -> None:
        for (i, source), weights in zip(self.sources, channel_weights):
            frame, fill = self.read(source, tile.crop)
            state.add(i, frame, weights, fill)
            self._step(source.name)


__all__ = ["StackResult", "fuse_stack", "STRATEGIES", "DEFAULT_STRATEGY"]
