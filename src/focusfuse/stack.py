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
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .color import from_tensor, to_gray
from .decision import blend, refine_decision_map
from .device import resolve_device
from .errors import InputError, UsageError
from .align import MODES as ALIGN_MODES
from .align import StackAlignment, estimate_alignment
from .frames import FrameChecker, FrameLike, LazyFrames, frame_refs, iter_frames, match_channels, require_frames
from .fusion import decide_pair
from .model import GACN, initial_decision_map
from .weights import load_model

EQ18_EPS = 1e-4

ProgressCallback = Callable[[int, int, str], None]


@dataclass
class StackResult:
    """Fused image (dtype of the deepest frame), index map (uint16 HxW, 0-based index into the input
    frames), the frames used, the alignment (None without) and the frames left out with the reason."""

    fused: np.ndarray
    index_map: np.ndarray
    strategy: str
    frames: list[str] = field(default_factory=list)
    alignment: StackAlignment | None = None
    skipped: list[str] = field(default_factory=list)
    box: tuple[int, int, int, int] | None = None


class StackStrategy:
    """Running state of a streaming stack fusion; ``add`` takes frames in order."""

    def __init__(self, model: GACN) -> None:
        self.model = model
        self.fused: torch.Tensor | None = None
        self.index: torch.Tensor | None = None

    def add(self, i: int, frame: torch.Tensor) -> None:
        """Take frame number ``i`` (its index in the input list); the first call starts the state."""
        raise NotImplementedError

    def _start(self, i: int, frame: torch.Tensor) -> None:
        self.fused = frame
        self.index = torch.full(frame.shape[-2:], i, dtype=torch.int32, device=frame.device)

    def _take(self, i: int, frame: torch.Tensor, p: torch.Tensor) -> None:
        """Soft blend of the running fused image with ``frame`` (p = weight of the running image)."""
        fused, frame = match_channels(self.fused, frame)
        self.fused = blend(p, fused, frame)
        self.index = torch.where(p[0] < 0.5, i, self.index)


class CalibratedStack(StackStrategy):
    """Running champion: per-channel max focus measure; one feature and one decision pass per new frame."""

    def __init__(self, model: GACN) -> None:
        super().__init__(model)
        self.sf_best: torch.Tensor | None = None
        self.gray_best: torch.Tensor | None = None

    def add(self, i: int, frame: torch.Tensor) -> None:
        gray = to_gray(frame)[None]
        sf = self.model.focus_measure(gray)
        if self.fused is None:
            self._start(i, frame)
            self.sf_best, self.gray_best = sf, gray
            return
        p0 = initial_decision_map(self.model.decision_logit(self.sf_best, sf))
        p = refine_decision_map(p0, self.gray_best, gray)
        self._take(i, frame, p[0])
        self.gray_best = blend(p0, self.gray_best, gray)
        self.sf_best = torch.maximum(self.sf_best, sf)


class CalibrationStack(StackStrategy):
    """The paper's Eq. 18 against a cached baseline (frame 1); hard per-pixel choice."""

    def __init__(self, model: GACN) -> None:
        super().__init__(model)
        self.sf_base: torch.Tensor | None = None
        self.gray_base: torch.Tensor | None = None
        self.p2: torch.Tensor | None = None
        self.best: torch.Tensor | None = None

    def add(self, i: int, frame: torch.Tensor) -> None:
        gray = to_gray(frame)[None]
        sf = self.model.focus_measure(gray)
        if self.fused is None:
            self._start(i, frame)
            self.sf_base, self.gray_base = sf, gray
            return
        p0 = initial_decision_map(self.model.decision_logit(self.sf_base, sf))
        p = refine_decision_map(p0, self.gray_base, gray)[0, 0]
        if self.p2 is None:
            self.p2 = p
            self.best = p  # DV_1
            score = 1.0 - p  # DV_2
        else:
            score = self.p2 / (p + EQ18_EPS) * (1.0 - p)  # DV_j
        wins = score > self.best
        fused, frame = match_channels(self.fused, frame)
        self.fused = torch.where(wins, frame, fused)
        self.index = torch.where(wins, i, self.index)
        self.best = torch.where(wins, score, self.best)


class SerialStack(StackStrategy):
    """Fuse the running result with each new frame as a pair (2 feature passes per frame)."""

    def add(self, i: int, frame: torch.Tensor) -> None:
        if self.fused is None:
            self._start(i, frame)
            return
        fused, frame = match_channels(self.fused, frame)
        _, p = decide_pair(self.model, to_gray(fused)[None], to_gray(frame)[None])
        self._take(i, frame, p[0])


STRATEGIES: dict[str, type[StackStrategy]] = {
    "calibrated": CalibratedStack,
    "calibration": CalibrationStack,
    "serial": SerialStack,
}
DEFAULT_STRATEGY = "calibrated"


def align_stack(refs: Sequence, mode: str, progress: Callable[[int, int], None] | None = None) -> StackAlignment:
    """First pass: estimate how each frame maps onto the reference (middle) frame."""
    try:
        return estimate_alignment(LazyFrames(refs), mode=mode, progress=progress)
    except ValueError as exc:
        raise InputError(f"alignment: {exc}") from exc


def fuse_stack(frames: FrameLike | Sequence[FrameLike], *, strategy: str = DEFAULT_STRATEGY,
               weights: str | os.PathLike | GACN | None = None, device: str | torch.device = "auto",
               align: str = "auto", crop: bool = False, progress: ProgressCallback | None = None,
               align_progress: Callable[[int, int], None] | None = None) -> StackResult:
    """Fuse a focus stack: a list of arrays or paths, a folder, or a multi-page TIFF (read lazily).

    ``align`` (auto, none, translation, affine, homography) first registers every frame onto the
    middle frame; frames that cannot be aligned are left out with a warning. ``crop`` keeps only the
    area valid in all aligned frames.
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r} (use {', '.join(STRATEGIES)})")
    if align not in ALIGN_MODES:
        raise UsageError(f"unknown alignment {align!r} (use {', '.join(ALIGN_MODES)})")
    refs = frame_refs(frames)
    require_frames(refs)
    dev = resolve_device(device)
    state = STRATEGIES[strategy](load_model(weights, dev))
    alignment = None if align == "none" else align_stack(refs, align, align_progress)
    skipped = [] if alignment is None else alignment.failures()
    for message in skipped:
        warnings.warn(f"{message}; frame left out", stacklevel=2)
    if alignment is not None:
        require_frames([f for f in alignment.frames if f.ok])
    box = alignment.valid_box() if (alignment is not None and crop) else None
    checker = FrameChecker()
    names: list[str] = []
    with torch.inference_mode():
        for i, name, frame in iter_frames(refs, dev, checker, alignment=alignment, box=box):
            state.add(i, frame)
            names.append(name)
            if progress is not None:
                progress(i + 1, len(refs), name)
    fused = from_tensor(state.fused, checker.dtype)
    if fused.ndim == 2 and checker.channels == 3:
        fused = np.repeat(fused[:, :, None], 3, axis=2)
    index_map = state.index.to(torch.int32).cpu().numpy().astype(np.uint16)
    return StackResult(fused=fused, index_map=index_map, strategy=strategy, frames=names, alignment=alignment,
                       skipped=skipped, box=box)


__all__ = ["StackResult", "fuse_stack", "STRATEGIES", "DEFAULT_STRATEGY"]
