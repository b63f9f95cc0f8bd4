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

NO_IMAGE = -1.0  # the energy of edge fill: below any frame's (energies are >= 0)


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

    Per level, a frame's detail coefficients replace the fused ones where their local energy (gray, over
    ``window`` x ``window``) beats the best so far and most of the ``vote`` x ``vote`` coefficients around
    agree (consistency verification: an isolated win is noise). The index map records the choice at the
    finest level.
    ``pair``: also keep the choice as the pair's decision map (1 where the first frame was kept).
    """

    def __init__(self, levels: int = LEVELS, pair: bool = False, window: int = ACTIVITY_SIZE,
                 vote: int = VOTE_SIZE) -> None:
        self.levels = levels
        self.pair = pair
        self.window = window
        self.vote = vote
        self.details: list[torch.Tensor] = []
        self.energy: list[torch.Tensor] = []
        self.base_sum: torch.Tensor | None = None
        self.base_weight: torch.Tensor | None = None
        self.index: torch.Tensor | None = None
        self.first: int | None = None
        self.maps: dict[str, torch.Tensor] = {}
        self._fused: torch.Tensor | None = None

    @property
    def fused(self) -> torch.Tensor | None:
        """The fused region (C, h, w) in [0, 1], reconstructed from the fused pyramid."""
        if self._fused is None and self.details:
            base = self.base_sum / self.base_weight if self.base_weight is not None else self.base_sum / self.count
            self._fused = reconstruct(self.details, base)[0].clamp_(0.0, 1.0)
        return self._fused

    def add_batch(self, items: Sequence[FrameInput]) -> None:
        for item in items:
            self.add(item)

    def add(self, item: FrameInput) -> None:
        """Take the next frame."""
        self._fused = None
        details, base = decompose(item.frame[None], self.levels)
        masks, share = image_levels(None if item.fill is None else item.fill.has_image, self.levels)
        energy = [local_energy(to_gray(d), self.window) for d in details]
        energy = [e if m is None else torch.where(m, e, NO_IMAGE) for e, m in zip(energy, masks)]
        if not self.details:
            self._start(item, details, energy, base, share)
            return
        for level, (detail, e) in enumerate(zip(details, energy)):
            fused, detail = match_channels(self.details[level], detail)
            wins = e > self.energy[level]
            if self.vote:
                wins = F.avg_pool2d(wins.float(), self.vote, stride=1, padding=self.vote // 2,
                                    count_include_pad=False) > 0.5
            self.details[level] = torch.where(wins, detail, fused)
            self.energy[level] = torch.maximum(self.energy[level], e)
            if level == 0:
                self.index = torch.where(wins[0, 0], item.index, self.index)
        self.base_sum, base = match_channels(self.base_sum, base)
        self._add_base(base, share)
        if self.pair:
            self.maps = {"decision": (self.index == self.first).float(), "initial": (self.index == self.first).float()}

    def _start(self, item: FrameInput, details: list[torch.Tensor], energy: list[torch.Tensor],
               base: torch.Tensor, share: torch.Tensor | None) -> None:
        self.details, self.energy = details, energy
        self.index = torch.full(item.frame.shape[-2:], item.index, dtype=torch.int32, device=item.frame.device)
        self.first = item.index
        self.count = 0
        self.base_sum = torch.zeros_like(base)
        self._add_base(base, share)

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


__all__ = ["PyramidStack", "local_energy", "image_levels"]
