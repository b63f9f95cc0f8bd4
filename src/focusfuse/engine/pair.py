"""Pair fusion: two frames -> decision maps -> fused image (Eq. 4).

read -> gray -> features (per frame) -> decide (initial map, boundary refinement) -> combine. Pairs
run through the same tiled, aligned loop as stacks (:func:`focusfuse.engine.stack.fuse_frames`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..ops.color import to_gray
from ..methods.gacn.decision import blend, check_reduce, decide_pair
from ..backends.device import resolve_device
from ..errors import UsageError
from ..frames.refs import FrameLike, frame_refs, match_channels
from ..methods.gacn.model import GACN
from .stack import PairStack, align_pair, fuse_frames
from ..methods.gacn.weights import load_model


@dataclass
class PairResult:
    """Fused image (caller's dtype and layout), final and initial decision maps (float32 HxW, 1 = A)."""

    fused: np.ndarray
    decision_map: np.ndarray
    initial_map: np.ndarray


def fuse_tensors(model: GACN, a: torch.Tensor, b: torch.Tensor,
                 reduce: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(C,H,W) frames in [0,1] -> (fused (C,H,W), final map (H,W), initial map (H,W)), untiled."""
    a, b = match_channels(a, b)
    p0, p = decide_pair(model, to_gray(a)[None], to_gray(b)[None], reduce)
    return blend(p[0], a, b), p[0, 0], p0[0, 0]


def fuse_pair(a: FrameLike, b: FrameLike, *, weights: str | os.PathLike | GACN | None = None,
              device: str | torch.device = "auto", align: str = "none", tile_size: int | None = None,
              reduce: int = 1, edge_fill: bool = True) -> PairResult:
    """Fuse two frames (arrays or paths). The fused image keeps the inputs' dtype and channels.

    ``align`` (none, auto, translation, affine, homography) registers B onto A first; ``tile_size``,
    ``reduce`` and ``edge_fill`` as in :func:`focusfuse.fuse_stack`.
    """
    reduce = check_reduce(reduce)
    dev = resolve_device(device)
    model = load_model(weights, dev)
    refs = frame_refs([a, b])
    if len(refs) != 2:
        raise UsageError("fuse_pair takes exactly two single frames (use fuse_stack for more)")
    out, _ = fuse_frames(refs, PairStack, model, dev, alignment=align_pair(refs, align), tile_size=tile_size,
                         maps=("decision", "initial"), reduce=reduce, edge_fill=edge_fill)
    return PairResult(out.fused, out.maps["decision"], out.maps["initial"])
