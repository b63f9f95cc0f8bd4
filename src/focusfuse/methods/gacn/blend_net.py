"""The learned sharpness of the boundary blend: a small network that corrects each frame's log-weight.

The blend weighs every frame by ``(E + 1) ** 2`` (:mod:`.boundary_blend`). A Laplacian energy favours the
sharpest texture, which is not always the frame closest to the all-in-focus scene: where a defocused near
object spreads over a sharp background, the background's frame shows the spread too. ``BlendNet`` looks at one
frame (its gray and log energy) through three dilated 3x3 convolutions of 8 channels and returns a correction
``c`` of the log-weight, so the weight becomes ``(E + 1) ** 2 * exp(c)``. It sees one frame
at a time, so the blend still streams; its last layer starts at zero, so an untrained net is the plain blend.
With a :class:`~.blend_refiner.BlendRefiner` (``refiner``), the band is then redrawn from the streamed blends
once per region; a second one (``pair_refiner``, two bins: one per frame) redraws the band of pairs. Trained
by ``focusfuse train --method blend`` (:mod:`focusfuse.train.blend`) on stacks (and pairs) rendered with
layered defocus; model card: docs/model-card-blend.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blend_refiner import PAIR_BINS, BlendRefiner

ARCHITECTURE = "gacn-blend-v1"
DEFAULT_BLEND_WEIGHTS_NAME = "focusfuse-blend"
WIDTH = 8
DILATIONS = (1, 2, 4)
SCALE = 1  # full resolution (> 1: on scale x scale means, enlarged bilinearly; tiles then start on its multiples)
MAX_CORRECTION = 20.0  # |c| is clamped: exp(c) stays far from float32's limits


class BlendNet(nn.Module):
    """Log-weight correction (B,1,H,W) of frames from their gray (B,1,H,W) in [0, 1] and log(E + 1); with
    ``refiner`` (its keyword arguments, ``{}`` for the default shape), the refiner of stacks' blended band too;
    with ``pair_refiner`` (the same, ``bins`` 2), the refiner of pairs'."""

    def __init__(self, width: int = WIDTH, dilations: Sequence[int] = DILATIONS, scale: int = SCALE,
                 refiner: dict | None = None, pair_refiner: dict | None = None) -> None:
        super().__init__()
        self.config = {"width": int(width), "dilations": [int(d) for d in dilations], "scale": int(scale)}
        self.refiner = None if refiner is None else BlendRefiner(**refiner)
        self.pair_refiner = None if pair_refiner is None else BlendRefiner(**{"bins": PAIR_BINS, **pair_refiner})
        for name, module in (("refiner", self.refiner), ("pair_refiner", self.pair_refiner)):
            if module is not None:
                self.config[name] = module.config
        self.scale = scale
        # how far (px of the frame) a correction looks: the convolutions' reach (when reduced: in reduced
        # pixels, plus the bilinear enlargement's one, and the other pixels of a block)
        self.reach = scale * (sum(dilations) + 1) + scale - 1 if scale > 1 else sum(dilations)
        channels = [2] + [width] * len(dilations)
        self.convs = nn.ModuleList(nn.Conv2d(channels[k], channels[k + 1], 3, padding=d, dilation=d)
                                   for k, d in enumerate(dilations))
        self.out = nn.Conv2d(width, 1, 1)
        nn.init.zeros_(self.out.weight)  # untrained: no correction, the plain blend
        nn.init.zeros_(self.out.bias)

    def refiner_for(self, frames: int) -> BlendRefiner | None:
        """The refiner of a region of ``frames`` frames: the pair refiner for two, the stack refiner for more."""
        return self.pair_refiner if frames == 2 else self.refiner if frames > 2 else None

    @property
    def device(self) -> torch.device:
        return self.out.weight.device

    def forward(self, gray: torch.Tensor, log_energy: torch.Tensor) -> torch.Tensor:
        height, width = gray.shape[-2:]
        if self.scale > 1:
            gray = F.avg_pool2d(gray, self.scale, ceil_mode=True)
            log_energy = F.avg_pool2d(log_energy, self.scale, ceil_mode=True)
        # NHWC: on a CPU, convolutions of 8 channels run about 2.3x faster than NCHW
        x = torch.cat([gray - 0.5, log_energy / 10.0], 1).contiguous(memory_format=torch.channels_last)
        for conv in self.convs:
            x = F.relu(conv(x))
        correction = self.out(x)
        if self.scale > 1:
            correction = F.interpolate(correction, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return correction[..., :height, :width]


def save_blend_weights(model: BlendNet, path: str | os.PathLike, metadata: dict | None = None) -> os.PathLike:
    """Save in our weights format, with the network's shape (``config``) in the metadata."""
    from .weights import save_weights

    return save_weights(model, path, {**(metadata or {}), "config": model.config}, ARCHITECTURE)


def load_blend_net(weights: str | os.PathLike | BlendNet | None = None,
                   device: torch.device | str = "cpu") -> BlendNet:
    """A BlendNet in eval mode on ``device`` (channels-last) from a path, an installed name, the default, or a
    model; its errors name the ``boundary_blend`` option (where these weights are chosen)."""
    from ...errors import WeightsError
    from ..network_weights import load_network

    try:
        net = load_network(BlendNet, weights, device, architecture=ARCHITECTURE,
                           default_name=DEFAULT_BLEND_WEIGHTS_NAME, authors_keys=(), title="boundary blend")
    except WeightsError as exc:
        raise WeightsError(str(exc), option="boundary_blend") from exc
    return net.to(memory_format=torch.channels_last)


__all__ = ["ARCHITECTURE", "BlendNet", "DEFAULT_BLEND_WEIGHTS_NAME", "SCALE", "load_blend_net",
           "save_blend_weights"]
