"""The running state of a pyramid fusion: per detail level, the coefficients of the frame whose detail is
locally most energetic; the base is the mean of the frames' bases. Memory does not grow with the frames."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ...frames.refs import match_channels
from ...ops.color import to_gray
from ..base import FrameInput
from . import ACTIVITY_SIZE, LEVELS, VOTE_SIZE
from .pyramid import decompose, reconstruct, reduce

def local_energy(detail: torch.Tensor, size: int = ACTIVITY_SIZE) -> torch.Tensor:
    """Mean of the squared gray detail (B, 1, H, W) over ``size`` x ``size`` windows (the activity measure)."""
    return F.avg_pool2d(detail * detail, size, stride=1, padding=size // 2, count_include_pad=False)


def image_levels(has_image: torch.Tensor | None, levels: int) -> tuple[list[torch.Tensor | None], torch.Tensor | None]:
    """Where each detail level is computed from image pixels only (bool), and the base's image share (float)."""
    if has_image is None:
        return [None] * levels, None
    share = has_image.float()
    masks = []
    for _ in range(levels):
        masks.append(share > 0.999)
        share = reduce(share)
    return masks, share


class PyramidStack:
    """Frames arrive in input order (``add_batch``); ``fused`` and ``index`` hold the result so far.

    Per level, a new frame's detail coefficients replace the fused ones where most of the ``vote`` x ``vote``
    coefficients around beat the best so far by local energy (gray, over ``window`` x ``window``): a
    majority vote over the energy comparison, the classical consistency verification (an isolated win is
    noise). The best energy so far is the maximum over the frames (a running champion, as GACN's
    ``calibrated``), also where the vote kept the older coefficient. Coefficients that edge fill touches
    never win where the fused pyramid has image there, and always win where it has none. The index map
    records the choice at the finest level. ``pair``: also keep the choice as the pair's decision map (1
    where the first frame was kept).
    """

    def __init__(self, levels: int = LEVELS, pair: bool = False, window: int = ACTIVITY_SIZE,
                 vote: int = VOTE_SIZE) -> None:
        self.levels = levels
        self.pair = pair
        self.window = window
        self.vote = vote
        self.details: list[torch.Tensor] = []
        self.energy: list[torch.Tensor] = []
        self.has_image: list[torch.Tensor | None] = []  # per level: where the fused coefficients are image's
        self.base_sum: torch.Tensor | None = None
        self.base_weight: torch.Tensor | None = None
        self.count = 0
        self.index: torch.Tensor | None = None
        self.first: int | None = None
        self.maps: dict[str, torch.Tensor] = {}
        self._fused: torch.Tensor | None = None

    @property
    def fused(self) -> torch.Tensor | None:
        """The fused region (C, h, w) in [0, 1], reconstructed from the fused pyramid."""
        if self._fused is None and self.details:
            base = self.base_sum / (self.count if self.base_weight is None else self.base_weight)
            self._fused = reconstruct(self.details, base)[0].clamp_(0.0, 1.0)
        return self._fused

    def finish(self) -> None:
        """Nothing to complete: ``fused`` is final after each frame."""

    def add_batch(self, items: Sequence[FrameInput]) -> None:
        for item in items:
            self.add(item)

    def add(self, item: FrameInput) -> None:
        """Take the next frame (its edge fill replaced by image pixels, as the network methods see it)."""
        self._fused = None
        view = item.frame if item.fill is None else item.fill.network
        details, base = decompose(view[None], self.levels)
        masks, share = image_levels(None if item.fill is None else item.fill.has_image, self.levels)
        energy = [local_energy(to_gray(d), self.window) for d in details]
        if not self.details:
            self._start(item, details, energy, masks, base, share)
            return
        for level, (detail, e, image) in enumerate(zip(details, energy, masks)):
            fused, detail = match_channels(self.details[level], detail)
            wins = majority(e > self.energy[level], self.vote)
            wins = keep_to_image(wins, self.has_image[level], image)
            self.details[level] = torch.where(wins, detail, fused)
            self.energy[level] = torch.maximum(self.energy[level], e if image is None else e * image)
            self.has_image[level] = None if self.has_image[level] is None or image is None else \
                self.has_image[level] | image
            if level == 0:
                self.index = torch.where(wins[0, 0], item.index, self.index)
        self.base_sum, base = match_channels(self.base_sum, base)
        self._add_base(base, share)
        if self.pair:
            kept = (self.index == self.first).float()
            self.maps = {"decision": kept, "initial": kept}

    def _start(self, item: FrameInput, details: list[torch.Tensor], energy: list[torch.Tensor],
               masks: list[torch.Tensor | None], base: torch.Tensor, share: torch.Tensor | None) -> None:
        self.details, self.has_image = details, masks
        self.energy = [e if image is None else e * image for e, image in zip(energy, masks)]
        self.index = torch.full(item.frame.shape[-2:], item.index, dtype=torch.int32, device=item.frame.device)
        self.first = item.index
        self.base_sum = torch.zeros_like(base)
        self._add_base(base, share)
        if self.pair:
            kept = torch.ones(item.frame.shape[-2:], device=item.frame.device)
            self.maps = {"decision": kept, "initial": kept}

    def _add_base(self, base: torch.Tensor, share: torch.Tensor | None) -> None:
        """Running (image-weighted) sum of the bases; without edge fill every frame weighs 1."""
        self.count += 1
        if share is None and self.base_weight is None:
            self.base_sum = self.base_sum + base
            return
        if self.base_weight is None:  # the first frame with fill: the frames so far weighed 1 each
            self.base_weight = torch.full_like(base[:, :1], float(self.count - 1))
        weight = torch.ones_like(base[:, :1]) if share is None else share.clamp_min(1e-3)  # never 0
        self.base_sum = self.base_sum + base * weight
        self.base_weight = self.base_weight + weight


def majority(wins: torch.Tensor, size: int) -> torch.Tensor:
    """True where more than half of the ``size`` x ``size`` neighbours (inside the image) are True."""
    if size <= 1:
        return wins
    return F.avg_pool2d(wins.float(), size, stride=1, padding=size // 2, count_include_pad=False) > 0.5


def keep_to_image(wins: torch.Tensor, fused_image: torch.Tensor | None,
                  frame_image: torch.Tensor | None) -> torch.Tensor:
    """A frame's wins limited to where its coefficients are image's, where the fused ones are (None: all)."""
    if frame_image is not None:
        wins = wins & frame_image
    if fused_image is not None:
        wins = wins | (~fused_image if frame_image is None else frame_image & ~fused_image)
    return wins


__all__ = ["PyramidStack", "local_energy", "image_levels", "majority", "keep_to_image"]
