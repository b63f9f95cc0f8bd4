"""The blend's last step: a network that redraws the band from the streamed blends, once per region.

Blending whole frames cannot remove what every frame holds: beside a near object's edge, the frames focused on
the background carry the object's defocused spread, and the frames focused on the object carry a blurred
background. No choice or mean of frames is close to the all-in-focus scene there (``benchmarks/blend_ceilings.py``:
even a perfect choice over 7x7 windows among such blends gains only 13%). ``BlendRefiner`` synthesises instead:
it sees the learned blend, GACN's image, ``bins`` blends of the frames binned by their place in the focus
bracket (a coarse depth: near-focused frames, far-focused ones) with their share of the weight, and the band,
and returns an RGB correction of the blend (the mean over both orders of the bins: a stack may run either
way). Its inputs are running sums, so the blend still streams; it runs
once per region, in blocks. Its last layer starts at zero: untrained, it changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

WIDTH = 32
DILATIONS = (1, 2, 4, 8, 1)
BINS = 4  # blends of frames binned by position in the bracket
PAIR_BINS = 2  # a pair refiner's bins: one frame each
BLOCK = 256  # px of the blocks refined at once (with the reach: about 0.35 kB per pixel, some 30 MB)


def bin_weights(position: float, bins: int) -> list[float]:
    """The weight of a frame at ``position`` (0: the bracket's first frame, 1: its last) in each of ``bins``
    hat-shaped bins centred evenly on 0..1 (neighbouring hats sum to one)."""
    if bins == 1:
        return [1.0]
    return [max(0.0, 1.0 - abs(position - k / (bins - 1)) * (bins - 1)) for k in range(bins)]


def log_share(bin_weight: torch.Tensor, total_weight: torch.Tensor) -> torch.Tensor:
    """log(a bin's weight / all the weight), finite where either is zero (taken as float's smallest)."""
    tiny = torch.finfo(total_weight.dtype).tiny
    return torch.log(bin_weight.clamp_min(tiny)) - torch.log(total_weight.clamp_min(tiny))


class BlendRefiner(nn.Module):
    """RGB correction (B, 3, H, W) of the blend from the blend, GACN's image, the binned blends (RGB in [0, 1]),
    the bins' log share of the weight and the band."""

    def __init__(self, width: int = WIDTH, dilations: Sequence[int] = DILATIONS, bins: int = BINS) -> None:
        super().__init__()
        self.config = {"width": int(width), "dilations": [int(d) for d in dilations], "bins": int(bins)}
        self.bins = int(bins)
        self.reach = sum(dilations)  # px of its inputs a correction depends on
        channels = [3 * (2 + bins) + bins + 1] + [width] * len(dilations)
        self.convs = nn.ModuleList(nn.Conv2d(channels[k], channels[k + 1], 3, padding=d, dilation=d)
                                   for k, d in enumerate(dilations))
        self.out = nn.Conv2d(width, 3, 1)
        nn.init.zeros_(self.out.weight)  # untrained: no correction
        nn.init.zeros_(self.out.bias)

    def forward(self, blend: torch.Tensor, fused: torch.Tensor, binned: torch.Tensor, log_share: torch.Tensor,
                band: torch.Tensor, orders: tuple[bool, ...] = (False, True)) -> torch.Tensor:
        """``blend``, ``fused`` (B, 3, H, W); ``binned`` (B, 3 * bins, H, W); ``log_share`` (B, bins, H, W):
        log(bin's weight / all weight); ``band`` (B, 1, H, W). Whether a stack runs near to far or far to near
        is not known, so the correction is the mean of the network's with the bins in the given order and
        reversed (one pass over both). ``orders``: which (True: reversed); training may take one at a time."""
        batch, _, height, width = blend.shape
        reversed_bins = binned.reshape(batch, self.bins, 3, height, width).flip(1).reshape_as(binned)
        x = torch.cat([torch.cat([blend - 0.5, fused - 0.5, bins - 0.5, share / 10.0, band], 1)
                       for bins, share in ((reversed_bins, log_share.flip(1)) if flip else (binned, log_share)
                                           for flip in orders)])
        x = x.contiguous(memory_format=torch.channels_last)
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.out(x).contiguous().reshape(len(orders), batch, 3, height, width).mean(0)


def within_pair(refined: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """A pair's redrawn band (..., 3, H, W) clamped at each pixel and channel to the range of its two frames
    (``frames``, (..., 6, H, W)): the pair refiner draws no value beyond what one of them shows (on real pairs
    this keeps the reference-free measures closer, docs/boundaries.md)."""
    a, b = frames[..., :3, :, :], frames[..., 3:6, :, :]
    return torch.minimum(torch.maximum(refined, torch.minimum(a, b)), torch.maximum(a, b))


def refine(refiner: BlendRefiner, blend: torch.Tensor, fused: torch.Tensor, binned: torch.Tensor,
           log_share: torch.Tensor, band: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """The refined blend (3, H, W) of one region, in blocks of ``block`` x ``block`` px (each read with the
    network's reach around it, so the result is the whole region's and the working set stays small, whatever
    the region's size); blocks without band are left as they are."""
    height, width = blend.shape[-2:]
    reach = refiner.reach
    out = blend.clone(memory_format=torch.contiguous_format)
    with torch.no_grad():
        for top in range(0, height, block):
            for left in range(0, width, block):
                bottom, right = min(height, top + block), min(width, left + block)
                if not bool((band[..., top:bottom, left:right] > 0).any()):
                    continue
                y0, x0 = max(0, top - reach), max(0, left - reach)
                rows, cols = slice(y0, min(height, bottom + reach)), slice(x0, min(width, right + reach))
                correction = refiner(*(x[None, :, rows, cols] for x in (blend, fused, binned, log_share, band)))[0]
                out[:, top:bottom, left:right] += correction[:, top - y0:bottom - y0, left - x0:right - x0]
    return out


__all__ = ["BINS", "BLOCK", "PAIR_BINS", "BlendRefiner", "bin_weights", "log_share", "refine", "within_pair"]
