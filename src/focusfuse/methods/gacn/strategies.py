"""GACN's stack strategies: running states that take a region's frames in order and keep only what the
next comparison needs (never the whole stack).

- ``calibrated`` (default): a running per-pixel champion. The champion's focus measure is the
  per-channel maximum, over the frames so far, of the spatial frequency of their deep features. Every
  new frame costs one feature pass and is compared with the champion in one decision pass; the fused
  image is blended towards the new frame where it wins (final decision map), the index map follows.
  N feature passes, N-1 decision passes; every comparison is against the sharpest evidence so far, so
  it does not saturate like Eq. 18. All running state is updated pixel by pixel from decisions that
  depend on the inputs only (the maximum, and the initial map for the gray guide), so a tiled run
  needs only the network's fixed halo. The champion after k frames does not depend on any decision,
  so a batch of frames runs its feature passes and its decision passes at once.
- ``calibration``: the paper's decision calibration (Eq. 18), as the authors' code does it: every frame
  is compared with frame 1 (features cached) and a per-pixel decision volume
  DV_1 = p_2, DV_2 = 1 - p_2, DV_j = p_2 / (p_j + 1e-4) * (1 - p_j) picks the frame (hard choice).
- ``serial``: fuse 1 with 2, the result with 3, ...; 2(N-1) feature passes, one frame at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...frames.fill import FrameFill, either_has_image, prefer_image
from ...frames.refs import match_channels
from ...ops.color import to_gray
from ..base import FrameInput
from . import STRATEGY_NAMES
from .blend_net import BlendNet
from .boundary_blend import SharpnessBlend
from .decision import blend, decide_pair, decision_measure, full_resolution_initial_map
from .network import GacnNetwork

EQ18_EPS = 1e-4


def has_image(fill: FrameFill | None) -> torch.Tensor | None:
    """Where a frame region has image pixels (None: everywhere, no fill)."""
    return None if fill is None else fill.has_image


def only_on_image(score: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
    """An Eq. 18 score (H,W) set to -inf on edge fill, so a frame with image pixels always beats it there."""
    return score if image is None else torch.where(image[0, 0], score, float("-inf"))


class StackStrategy:
    """Running state of a streaming stack fusion; frames arrive in input order (``add_batch``).

    ``reduce`` > 1: the decision path sees the focus measures reduced that many times; decisions are
    enlarged back to full resolution before the refinement and the blend (see :mod:`.decision`).
    ``has_image``: where what the next frame is compared with (the fused image so far; for ``calibration``
    the baseline) holds image pixels, not edge fill (None: everywhere; see :mod:`focusfuse.frames.fill`).
    ``boundary_blend``: blend the frames by sharpness near the index map's edges when the region is finished
    (see :mod:`.boundary_blend`; stacks of three frames or more), their weights corrected by ``blend_net``
    when given.
    """

    def __init__(self, net: GacnNetwork, reduce: int = 1, boundary_blend: bool = False,
                 blend_net: BlendNet | None = None) -> None:
        self.net = net
        self.reduce = reduce
        self.fused: torch.Tensor | None = None
        self.index: torch.Tensor | None = None
        self.has_image: torch.Tensor | None = None
        self.maps: dict[str, torch.Tensor] = {}
        self.sharpness = SharpnessBlend(net.backend.separable_filter, blend_net) if boundary_blend else None

    def add_batch(self, items: Sequence[FrameInput]) -> None:
        """Take the next frames, in input order; the first frame starts the state."""
        raise NotImplementedError

    def add(self, item: FrameInput) -> None:
        """Take the next frame."""
        self.add_batch([item])

    def finish(self) -> None:
        """The region's last frame is in: blend near the index map's edges (when asked)."""
        if self.sharpness is not None and self.fused is not None:
            self.fused = self.sharpness.apply(self.fused, self.index)

    def _remember(self, items: Sequence[FrameInput], grays: Sequence[torch.Tensor]) -> None:
        """Add the frames to the sharpness sums of the boundary blend (when asked)."""
        if self.sharpness is not None:
            for item, gray in zip(items, grays):
                self.sharpness.add(item.frame, gray, has_image(item.fill), item.bracket)

    @staticmethod
    def _gray(item: FrameInput) -> torch.Tensor:
        """The gray frame (1,1,H,W) the network sees: with edge fill replaced by image pixels."""
        return to_gray(item.frame if item.fill is None else item.fill.network)[None]

    def _focus_measures(self, grays: Sequence[torch.Tensor], items: Sequence[FrameInput]) -> list[torch.Tensor]:
        """The decision focus measure of each frame (one feature pass for all): reduced, zero on edge fill."""
        statistics = None if items[0].statistics is None else [torch.cat(block) for block in
                                                               zip(*(item.statistics for item in items))]
        gray = grays[0] if len(grays) == 1 else torch.cat(list(grays))
        sf = self.net.focus_measure(gray, statistics)
        return [decision_measure(sf[j:j + 1], has_image(item.fill), self.reduce) for j, item in enumerate(items)]

    def _initial_maps(self, sf_a: Sequence[torch.Tensor], sf_b: Sequence[torch.Tensor],
                      shape: tuple[int, int]) -> torch.Tensor:
        """Initial maps (B,1,H,W) of the pairs (sf_a[j], sf_b[j]) in one decision pass."""
        if len(sf_a) == 1:
            return full_resolution_initial_map(self.net, sf_a[0], sf_b[0], self.reduce, shape)
        return full_resolution_initial_map(self.net, torch.cat(list(sf_a)), torch.cat(list(sf_b)), self.reduce, shape)

    def _start(self, item: FrameInput) -> None:
        self.fused = item.frame
        self.index = torch.full(item.frame.shape[-2:], item.index, dtype=torch.int32, device=item.frame.device)
        self.has_image = has_image(item.fill)

    def _prefer_image(self, p: torch.Tensor, fill: FrameFill | None) -> torch.Tensor:
        """Decision ``p`` (1 = what the frame is compared with) never taking edge fill where the other has pixels."""
        return prefer_image(p, self.has_image, has_image(fill))

    def _add_image_area(self, fill: FrameFill | None) -> None:
        self.has_image = either_has_image(self.has_image, has_image(fill))

    def _take(self, item: FrameInput, p: torch.Tensor) -> None:
        """Soft blend of the running fused image with the frame (p = weight of the running image)."""
        fused, frame = match_channels(self.fused, item.frame)
        self.fused = blend(p, fused, frame)
        self.index = torch.where(p[0] < 0.5, item.index, self.index)


class CalibratedStack(StackStrategy):
    """Running champion: per-channel max focus measure; one feature and one decision pass per new frame."""

    def __init__(self, net: GacnNetwork, reduce: int = 1, boundary_blend: bool = False,
                 blend_net: BlendNet | None = None) -> None:
        super().__init__(net, reduce, boundary_blend, blend_net)
        self.sf_best: torch.Tensor | None = None
        self.gray_best: torch.Tensor | None = None

    def add_batch(self, items: Sequence[FrameInput]) -> None:
        grays = [self._gray(item) for item in items]
        self._remember(items, grays)
        sfs = self._focus_measures(grays, items)
        if self.fused is None:
            self._start(items[0])
            self.sf_best, self.gray_best = sfs[0], grays[0]
            items, grays, sfs = items[1:], grays[1:], sfs[1:]
        if not items:
            return
        if len(items) == 1:  # the champion is updated in place: one feature map less in memory
            champions = [self.sf_best]
        else:  # the champion each frame meets: the maximum over the frames before it
            champions = [self.sf_best]
            for sf in sfs[:-1]:
                champions.append(torch.maximum(champions[-1], sf))
        p0s = self._initial_maps(champions, sfs, grays[0].shape[-2:])
        for j, (item, gray) in enumerate(zip(items, grays)):
            p0 = self._prefer_image(p0s[j:j + 1], item.fill)
            p = self._prefer_image(self.net.refine(p0, self.gray_best, gray), item.fill)
            self._take(item, p[0])
            self.gray_best = blend(p0, self.gray_best, gray)
            self._add_image_area(item.fill)
            self.record(p0, p)
        if len(items) == 1:
            torch.maximum(self.sf_best, sfs[0], out=self.sf_best)  # the champion SF is ours alone
        else:
            self.sf_best = torch.maximum(champions[-1], sfs[-1])

    def record(self, p0: torch.Tensor, p: torch.Tensor) -> None:
        """Hook called with each step's initial and final decision maps (1,1,H,W)."""


class PairStack(CalibratedStack):
    """Two frames: the calibrated step is exactly the pair fusion; also keeps the decision maps."""

    def record(self, p0: torch.Tensor, p: torch.Tensor) -> None:
        self.maps = {"decision": p[0, 0], "initial": p0[0, 0]}


class CalibrationStack(StackStrategy):
    """The paper's Eq. 18 against a cached baseline (frame 1); hard per-pixel choice.

    Where frame 1 is edge fill there is no baseline to compare with: the first frame with image wins."""

    def __init__(self, net: GacnNetwork, reduce: int = 1, boundary_blend: bool = False,
                 blend_net: BlendNet | None = None) -> None:
        super().__init__(net, reduce, boundary_blend, blend_net)
        self.sf_base: torch.Tensor | None = None
        self.gray_base: torch.Tensor | None = None
        self.p2: torch.Tensor | None = None
        self.best: torch.Tensor | None = None

    def add_batch(self, items: Sequence[FrameInput]) -> None:
        grays = [self._gray(item) for item in items]
        self._remember(items, grays)
        sfs = self._focus_measures(grays, items)
        if self.fused is None:
            self._start(items[0])
            self.sf_base, self.gray_base = sfs[0], grays[0]
            items, grays, sfs = items[1:], grays[1:], sfs[1:]
        if not items:
            return
        p0s = self._initial_maps([self.sf_base] * len(sfs), sfs, grays[0].shape[-2:])
        for j, (item, gray) in enumerate(zip(items, grays)):
            p0 = self._prefer_image(p0s[j:j + 1], item.fill)
            p = self._prefer_image(self.net.refine(p0, self.gray_base, gray), item.fill)[0, 0]
            self._choose(item, p)

    def _choose(self, item: FrameInput, p: torch.Tensor) -> None:
        if self.p2 is None:
            self.p2 = p
            self.best = only_on_image(p, self.has_image)  # DV_1 (the baseline's fill never wins)
            score = 1.0 - p  # DV_2
        else:
            score = self.p2 / (p + EQ18_EPS) * (1.0 - p)  # DV_j
        score = only_on_image(score, has_image(item.fill))
        wins = score > self.best
        fused, frame = match_channels(self.fused, item.frame)
        self.fused = torch.where(wins, frame, fused)
        self.index = torch.where(wins, item.index, self.index)
        self.best = torch.where(wins, score, self.best)


class SerialStack(StackStrategy):
    """Fuse the running result with each new frame as a pair (2 feature passes per frame).

    The network sees the running result as the same blend of the frames' network inputs (their gray,
    with edge fill replaced), so fill that every frame so far has does not step into it."""

    def __init__(self, net: GacnNetwork, reduce: int = 1, boundary_blend: bool = False,
                 blend_net: BlendNet | None = None) -> None:
        super().__init__(net, reduce, boundary_blend, blend_net)
        self.gray: torch.Tensor | None = None

    def add(self, item: FrameInput) -> None:
        gray = self._gray(item)
        self._remember([item], [gray])
        if self.fused is None:
            self._start(item)
            self.gray = gray
            return
        _, p = decide_pair(self.net, self.gray, gray, self.reduce, self.has_image, has_image(item.fill))
        p = self._prefer_image(p, item.fill)
        self._take(item, p[0])
        self.gray = blend(p, self.gray, gray)
        self._add_image_area(item.fill)

    def add_batch(self, items: Sequence[FrameInput]) -> None:
        for item in items:  # each step feeds the fused image back through the network
            self.add(item)


STRATEGIES: dict[str, type[StackStrategy]] = dict(zip(STRATEGY_NAMES, (CalibratedStack, CalibrationStack,
                                                                         SerialStack)))

__all__ = ["STRATEGIES", "StackStrategy", "CalibratedStack", "CalibrationStack", "SerialStack",
           "PairStack"]
