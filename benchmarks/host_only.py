"""A stand-in fusion method of negligible device cost, to measure the host work a GPU run still pays.

Same reads, alignment, warps, edge fill, staging, blending and writes as GACN; the network and the boundary
refinement (device work, well under a second on a GPU for V-4) are replaced by one comparison: each new
frame is blended in with the weight of a running mean, and the index map records where the frame's gray
is brighter than the fused gray so far. Not shipped with focusfuse; used by ``speed.py --host-only``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from focusfuse.frames.refs import match_channels
from focusfuse.methods.base import FrameInput, LocalMethod
from focusfuse.methods.gacn.decision import blend
from focusfuse.ops.color import to_gray


class RunningMean:
    """The stand-in's running state: fused = mean of the frames so far, index = last brighter frame."""

    def __init__(self) -> None:
        self.fused: torch.Tensor | None = None
        self.index: torch.Tensor | None = None
        self.maps: dict[str, torch.Tensor] = {}
        self.count = 0

    def finish(self) -> None:
        """Nothing to complete: ``fused`` is final after each frame."""

    def add_batch(self, items: Sequence[FrameInput]) -> None:
        for item in items:
            if self.fused is None:
                self.fused = item.frame
                self.index = torch.full(item.frame.shape[-2:], item.index, dtype=torch.int32,
                                        device=item.frame.device)
                self.count = 1
                continue
            self.count += 1
            fused, frame = match_channels(self.fused, item.frame)
            brighter = to_gray(frame)[0] > to_gray(fused)[0]
            self.fused = blend(torch.tensor(1.0 - 1.0 / self.count, device=frame.device), fused, frame)
            self.index = torch.where(brighter, item.index, self.index)


class HostOnlyMethod(LocalMethod):
    """The stand-in behind the fusion-method protocol (GACN's halo, so tiles are planned alike)."""

    name = "host-only"
    description = "host-only stand-in (running mean)"

    def halo(self, frames: int = 2) -> int:
        return 40

    def bytes_per_pixel(self) -> int:
        return 2400  # GACN's on the CPU, so tiles are planned alike

    def new_state(self) -> RunningMean:
        return RunningMean()
