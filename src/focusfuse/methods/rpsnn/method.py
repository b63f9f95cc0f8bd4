"""R-PSNN behind the fusion-method protocol: a pair through the network; more frames by cascading (the result
so far with the next frame), as its authors describe. It regresses pixels: no index or decision maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...backends.base import Backend
from ...frames.fill import either_has_image
from ...ops.color import to_gray
from ..base import FrameInput, LocalMethod
from . import RECEPTIVE_RADIUS
from .network import RPSNN

HALO_MARGIN = 9


def as_rgb(frame: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> (3, H, W): gray repeated (the network takes RGB)."""
    return frame.expand(3, -1, -1) if frame.shape[0] == 1 else frame[:3]


class CascadeStack:
    """Running state: the fused image so far and what the network sees of it."""

    def __init__(self, net: RPSNN) -> None:
        self.net = net
        self.fused: torch.Tensor | None = None
        self.index: torch.Tensor | None = None  # kept for the engine; R-PSNN defines no index map
        self.maps: dict[str, torch.Tensor] = {}
        self.seen: torch.Tensor | None = None  # the fused RGB image the next step takes
        self.has_image: torch.Tensor | None = None
        self.gray = True

    def finish(self) -> None:
        """Nothing to complete: ``fused`` is final after each frame."""

    def add_batch(self, items: Sequence[FrameInput]) -> None:
        for item in items:
            self.add(item)

    def add(self, item: FrameInput) -> None:
        """Take the next frame (its edge fill replaced by image pixels)."""
        view = as_rgb(item.frame if item.fill is None else item.fill.network)
        image = None if item.fill is None else item.fill.has_image[0]
        self.gray = self.gray and item.frame.shape[0] == 1
        if self.seen is None:
            self.seen, self.has_image = view, image
            self.index = torch.full(item.frame.shape[-2:], item.index, dtype=torch.int32, device=item.frame.device)
        else:
            with torch.inference_mode():
                out = self.net(self.seen[None], view[None])[0].clamp_(0.0, 1.0)
            if image is not None and self.has_image is not None:  # edge fill: the side with image pixels wins
                out = torch.where(image & ~self.has_image, view, torch.where(~image & self.has_image, self.seen, out))
            elif image is not None:
                out = torch.where(image, out, self.seen)
            elif self.has_image is not None:
                out = torch.where(self.has_image, out, view)
            self.seen = out
            self.has_image = either_has_image(image, self.has_image)
        self.fused = to_gray(self.seen) if self.gray else self.seen


class RpsnnMethod(LocalMethod):
    """R-PSNN (Jiang et al. 2021) with weights from ``focusfuse train --method rpsnn``."""

    name = "rpsnn"
    description = "R-PSNN, cascaded"  # it regresses pixels: no maps (methods.WITHOUT_MAPS)

    def __init__(self, model: RPSNN, backend: Backend, pair: bool = False) -> None:
        self.model = model
        self.backend = backend
        self.pair = pair

    def halo(self, frames: int = 2) -> int:
        """The cascade feeds each result back into the network: its reach grows by the network's receptive
        radius with every frame after the second."""
        return RECEPTIVE_RADIUS * max(1, frames - 1) + HALO_MARGIN

    def bytes_per_pixel(self) -> int:
        return 3072  # a branch's atrous pyramid: ~512 float32 channels alive, plus the other branch's output

    def new_state(self) -> CascadeStack:
        return CascadeStack(self.model)


__all__ = ["RpsnnMethod", "CascadeStack"]
