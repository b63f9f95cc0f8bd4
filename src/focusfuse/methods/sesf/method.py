"""SESF-Fuse behind the fusion-method protocol: pairs as published, stacks by a running champion or in series."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ...backends.base import Backend
from ...frames.fill import either_has_image, prefer_image
from ...frames.refs import match_channels
from ..base import FrameInput, ReadRegion
from . import GUIDED_RADIUS
from ...ops.color import to_gray
from .network import SESFNet, normalize
from .rule import activity, decide, final_map
from .statistics import FrameDecision, frame_decision

GUIDED_REACH = 2 * GUIDED_RADIUS  # box means of the inputs, then of the coefficients


class SesfStack:
    """Running state: frames arrive in input order.

    ``calibrated`` (default): the champion's activity is the per-pixel maximum over the frames so far; each
    new frame is compared with it (one encoder pass per frame), and the fused image moves towards the new
    frame by the guided-filtered, consistency-verified decision. ``serial`` (the paper's rule for more than
    two frames): the fused image so far and the new frame are fused as a pair (two encoder passes per frame).
    ``pair``: keep the decision maps ("initial": after consistency verification; "decision": guided).
    """

    def __init__(self, net: SESFNet, strategy: str = "calibrated", pair: bool = False) -> None:
        self.net = net
        self.strategy = strategy
        self.pair = pair
        self.fused: torch.Tensor | None = None
        self.index: torch.Tensor | None = None
        self.maps: dict[str, torch.Tensor] = {}
        self.best: torch.Tensor | None = None  # the champion's activity (calibrated)
        self.network_view: torch.Tensor | None = None  # what the network sees of the fused image (serial)
        self.has_image: torch.Tensor | None = None

    def _activity(self, frame: torch.Tensor, has_image: torch.Tensor | None) -> torch.Tensor:
        with torch.inference_mode():
            a = activity(self.net.encode(normalize(to_gray(frame[None]))))
        return a if has_image is None else a * has_image

    def finish(self) -> None:
        """Nothing to complete: ``fused`` is final after each frame."""

    def add_batch(self, items: Sequence[FrameInput]) -> None:
        for item in items:
            self.add(item)

    def add(self, item: FrameInput) -> None:
        """Take the next frame."""
        view = item.frame if item.fill is None else item.fill.network  # edge fill replaced for the network
        image = None if item.fill is None else item.fill.has_image
        given = item.statistics  # a tile: the decisions were made on the whole frames (see .statistics)
        if self.fused is None:
            self.fused, self.network_view, self.has_image = item.frame, view, image
            self.index = torch.full(item.frame.shape[-2:], item.index, dtype=torch.int32, device=item.frame.device)
            self.best = self._activity(view, image) if self.strategy == "calibrated" and given is None else None
            return
        if given is not None:
            d = given.crop(item.region, item.frame.device)
        else:
            new = self._activity(view, image)
            best = self.best if self.strategy == "calibrated" else self._activity(self.network_view, self.has_image)
            d = decide(best, new)
            if self.strategy == "calibrated":
                self.best = torch.maximum(best, new)
        d = prefer_image(d, self.has_image, image)  # 1 = keep the fused image
        fused, frame = match_channels(self.fused, item.frame)
        q = prefer_image(final_map(d, fused[None], frame[None]), self.has_image, image)
        self.fused = (q * fused + (1.0 - q) * frame)[0]
        self.index = torch.where(q[0, 0] < 0.5, item.index, self.index)
        if self.strategy == "serial":
            seen, view = match_channels(self.network_view, view)
            self.network_view = (q * seen + (1.0 - q) * view)[0]
        self.has_image = either_has_image(self.has_image, image)
        if self.pair:
            self.maps = {"decision": q[0, 0], "initial": d[0, 0]}


class SesfMethod:
    """SESF-Fuse (Ma et al. 2020) with weights from ``focusfuse train --method sesf``."""

    name = "sesf"

    def __init__(self, model: SESFNet, backend: Backend, strategy: str = "calibrated", pair: bool = False) -> None:
        self.model = model
        self.backend = backend
        self.strategy = "calibrated" if pair else strategy
        self.pair = pair

    @property
    def description(self) -> str:
        return f"SESF-Fuse, strategy {self.strategy}"

    def halo(self, frames: int = 2) -> int:
        """Tiles get their decisions from the whole-frame pass; the guided filter of each frame after the first
        reaches GUIDED_REACH px into the fused image so far, whose own blend reached as far: a cascade."""
        return GUIDED_REACH * max(1, frames - 1)

    def bytes_per_pixel(self) -> int:
        return 2400  # the encoder's 64 float32 channels, their concatenations and the activity (measured ~2350)

    def tile_multiple(self) -> int:
        return 1

    def tiling_problem(self) -> str | None:
        if self.strategy == "serial":
            return ("the sesf method's serial strategy cannot run in tiles (it feeds the fused image back through "
                    "the network); process the image whole (tile size 0) or use the calibrated strategy")
        return None

    def frame_statistics(self, read: ReadRegion, shape: tuple[int, int], tile_size: int,
                         carry: Any = None) -> tuple[FrameDecision, torch.Tensor]:
        """The frame's consistency-verified decision on the whole frame (``carry``: the champion's activity)."""
        return frame_decision(self.model, read, shape, tile_size, carry)

    def new_state(self) -> SesfStack:
        return SesfStack(self.model, self.strategy, self.pair)


__all__ = ["SesfMethod", "SesfStack"]
