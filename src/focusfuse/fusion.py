"""Pair fusion: two frames -> decision maps -> fused image (Eq. 4).

read -> gray -> features (per frame) -> decide (initial map, boundary refinement) -> combine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from .color import from_tensor, to_gray
from .decision import blend, refine_decision_map
from .device import resolve_device
from .align import estimate_alignment
from .errors import InputError
from .frames import FrameChecker, FrameLike, LazyFrames, frame_refs, iter_frames, match_channels
from .model import GACN, initial_decision_map
from .weights import load_model


@dataclass
class PairResult:
    """Fused image (caller's dtype and layout), final and initial decision maps (float32 HxW, 1 = A)."""

    fused: np.ndarray
    decision_map: np.ndarray
    initial_map: np.ndarray


def decide_pair(model: GACN, gray_a: torch.Tensor, gray_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gray frames (B,1,H,W) -> (initial map p0, final map p), both (B,1,H,W), 1 where A is in focus."""
    sf = model.focus_measure(torch.cat([gray_a, gray_b], dim=0))
    sf_a, sf_b = sf.chunk(2, dim=0)
    p0 = initial_decision_map(model.decision_logit(sf_a, sf_b))
    return p0, refine_decision_map(p0, gray_a, gray_b)


def fuse_tensors(model: GACN, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(C,H,W) frames in [0,1] -> (fused (C,H,W), final map (H,W), initial map (H,W))."""
    a, b = match_channels(a, b)
    p0, p = decide_pair(model, to_gray(a)[None], to_gray(b)[None])
    return blend(p[0], a, b), p[0, 0], p0[0, 0]


def fuse_pair(a: FrameLike, b: FrameLike, *, weights: str | os.PathLike | GACN | None = None,
              device: str | torch.device = "auto", align: str = "none") -> PairResult:
    """Fuse two frames (arrays or paths). The fused image keeps the inputs' dtype and channels.

    ``align`` (none, auto, translation, affine, homography) registers B onto A first.
    """
    dev = resolve_device(device)
    model = load_model(weights, dev)
    refs = frame_refs([a]) + frame_refs([b])
    if len(refs) != 2:
        raise ValueError("fuse_pair takes exactly two single frames (use fuse_stack for more)")
    alignment = None
    if align != "none":
        try:
            alignment = estimate_alignment(LazyFrames(refs), mode=align, reference=0)
        except ValueError as exc:
            raise InputError(f"alignment: {exc}") from exc
        if alignment.failures():
            raise InputError(f"alignment failed: {alignment.failures()[0]} (try --align none)")
    checker = FrameChecker()
    (_, _, ta), (_, _, tb) = iter_frames(refs, dev, checker, alignment=alignment)
    with torch.inference_mode():
        fused, p, p0 = fuse_tensors(model, ta, tb)
    return PairResult(from_tensor(fused, checker.dtype), p.cpu().numpy(), p0.cpu().numpy())
