"""SESF-Fuse's whole-frame decisions for tiles: channel-SE weights and activities streamed tile by tile, then the
consistency verification on the whole frame (it removes regions by their share of the image's area)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...box import Box, tile_grid
from ..base import ReadRegion
from . import SF_RADIUS
from ...ops.color import to_gray
from .network import SESFNet, normalize
from .rule import activity, consistency_verification

ENCODER_RADIUS = 4  # four 3x3 convolutions
ACTIVITY_HALO = ENCODER_RADIUS + 1 + SF_RADIUS  # the activity's reach: features, one-sided difference, window


@dataclass
class FrameDecision:
    """A frame's consistency-verified decision against the champion of the frames before it (1: keep the
    champion), as packed bits, one row of bytes per image row; ``bits`` None for the first frame."""

    bits: np.ndarray | None
    shape: tuple[int, int]

    def crop(self, box: Box, device: torch.device) -> torch.Tensor:
        """The decision in ``box`` as a (1, 1, h, w) float32 map on ``device``."""
        rows = np.unpackbits(self.bits[box.y0:box.y1], axis=1, count=self.shape[1])[:, box.x0:box.x1]
        return torch.from_numpy(np.ascontiguousarray(rows)).to(device, torch.float32)[None, None]


def encoder_channel_weights(net: SESFNet, read: ReadRegion, height: int, width: int,
                            tile_size: int) -> list[torch.Tensor]:
    """The four channel-SE weight vectors (1, 16) of a frame, from one streaming pass per encoder block over its
    tiles (block k's mean needs the weights of blocks 0..k-1; it sees k + 1 convolutions: that halo)."""
    weights: list[torch.Tensor] = []
    for k, (conv, se) in enumerate(net.encoder_blocks()):
        total = torch.zeros(conv[0].out_channels, dtype=torch.float64, device=net.device)
        for tile in tile_grid(height, width, tile_size, halo=k + 1):
            y = conv(net.encoder_prefix(normalize(to_gray(read(tile.crop)[0][None])), k, weights))
            rows, cols = tile.core.within(tile.crop)
            total += y[0, :, rows, cols].sum(dim=(1, 2), dtype=torch.float64)
        weights.append(se.weights((total / float(height * width)).float()[None]))
    return weights


def frame_activity(net: SESFNet, read: ReadRegion, height: int, width: int, tile_size: int,
                   weights: list[torch.Tensor]) -> torch.Tensor:
    """The frame's activity (H, W), zero where it has no image pixels, computed tile by tile."""
    whole: torch.Tensor | None = None
    for tile in tile_grid(height, width, tile_size, halo=ACTIVITY_HALO):
        network, mask = read(tile.crop)
        a = activity(net.encode(normalize(to_gray(network[None])), weights))
        if mask is not None:
            a = a * mask
        if whole is None:
            whole = torch.empty((height, width), dtype=a.dtype, device=a.device)
        rows, cols = tile.core.within(tile.crop)
        whole[tile.core.slices] = a[0, 0, rows, cols]
    assert whole is not None
    return whole


def frame_decision(net: SESFNet, read: ReadRegion, shape: tuple[int, int], tile_size: int,
                   best: torch.Tensor | None) -> tuple[FrameDecision, torch.Tensor]:
    """A frame's decision against ``best``, the champion's activity (None for the first frame), and the
    champion's activity with this frame."""
    height, width = shape
    weights = encoder_channel_weights(net, read, height, width, tile_size)
    new = frame_activity(net, read, height, width, tile_size, weights)
    if best is None:
        return FrameDecision(None, shape), new
    keep = consistency_verification((best > new).cpu().numpy())
    return FrameDecision(np.packbits(keep, axis=1), shape), torch.maximum(best, new)


__all__ = ["FrameDecision", "frame_decision", "encoder_channel_weights", "frame_activity", "ACTIVITY_HALO"]
