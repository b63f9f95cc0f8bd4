"""GACN's whole-frame statistics for tiles: the channel-SE weights of every feature block, streamed exactly.

Everything up to the final decision map is local except the channel-SE layers, whose weights come from
each block's mean over the whole frame. A tile therefore needs a halo at least the network's radius
(:mod:`.halo`), and the channel weights of every frame, computed first block by block in streaming
passes over its tiles; with both, a tiled result equals the untiled one up to float round-off.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...box import Box
from ...box import tile_grid
from ...ops.color import to_gray
from .network import GacnNetwork

ReadRegion = Callable[[Box], torch.Tensor]


def frame_channel_weights(net: GacnNetwork, read: ReadRegion, height: int, width: int,
                          tile_size: int) -> list[torch.Tensor]:
    """The four CSE weight vectors (1, 16) of a frame, from streaming passes over its tiles (exact).

    ``read(box)`` returns the frame's pixels in ``box`` as a (C, h, w) tensor in [0, 1] on the network's
    device. Block k's output mean needs the weights of blocks 0..k-1, so there is one pass per block;
    block k sees k + 1 convolutions, so its tiles need that many pixels of halo.
    """
    weights: list[torch.Tensor] = []
    n_pixels = float(height * width)
    for k, block in enumerate(net.model.features.blocks):
        total = torch.zeros(block.conv.out_channels, dtype=torch.float64, device=net.device)
        for tile in tile_grid(height, width, tile_size, halo=k + 1):
            gray = to_gray(read(tile.crop))[None]
            y = net.block_output(gray, k, weights)
            rows, cols = tile.core.within(tile.crop)
            total += y[0, :, rows, cols].sum(dim=(1, 2), dtype=torch.float64)
        weights.append(net.channel_weights(k, (total / n_pixels).float()[None]))
    return weights


__all__ = ["frame_channel_weights"]
