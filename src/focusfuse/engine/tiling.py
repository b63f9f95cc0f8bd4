"""Tiles for memory-bounded fusion: a grid of core regions with halos, and exact whole-frame statistics.

Everything up to the final decision map is local except the channel-SE layers, whose weights come
from each block's mean over the whole frame. A tile therefore needs a halo at least the network's
radius (below), and the channel weights of every frame are computed first, block by block, in
streaming passes over its tiles (:func:`frame_channel_weights`); with both, a tiled result equals
the untiled one up to float round-off.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..ops.color import to_gray
from ..methods.gacn.model import GACN

# Receptive radius of the final decision map, in pixels of the input:
FEATURE_RADIUS = 4  # four 3x3 convolutions
SF_REACH = 1 + 5  # one-sided gradient + 11x11 window
DECISION_RADIUS = 3 + 4 * (1 + 3)  # 7x7 SSE, then four (3x3 conv + 7x7 SSE)
REFINE_RADIUS = 3 + 3  # guided filter: box means of the inputs, then of a and b (Gaussian: 4)
NETWORK_RADIUS = FEATURE_RADIUS + SF_REACH + DECISION_RADIUS + REFINE_RADIUS  # 35
HALO = 40

TILE_MULTIPLE = 64
MIN_TILE_SIZE = 16  # smaller tiles are almost all halo: far slower, no less memory
# Peak working memory per pixel, fp32. CPU measured with the CLI's malloc setting (keep_freed_memory):
# 2350 B for a pair (1500x1500, in memory), 1730 B for a stack step (V-4); without it 1340 B (pair).
BYTES_PER_PIXEL = {"cpu": 2400, "cuda": 2200}
# --reduce lowers it little (the full-resolution features and their spatial frequency dominate): the same
# pair 2060-2310 B at reduce 1, 1730-1800 B at reduce 2 (runs vary with the allocator's reuse).


def halo_for(reduce: int) -> int:
    """Halo of tiles when the decision path runs at 1/``reduce`` resolution (see focusfuse.methods.gacn.decision): the
    decision radius counts in reduced pixels, plus one for the blocks and one for the bilinear enlargement;
    a margin of 5 px as in HALO; a multiple of ``reduce`` so that tiles start on block boundaries."""
    if reduce == 1:
        return HALO
    reach = FEATURE_RADIUS + SF_REACH + reduce * (DECISION_RADIUS + 2) + REFINE_RADIUS + 5
    return -(-reach // reduce) * reduce


@dataclass(frozen=True)
class Box:
    """A rectangle of rows y0:y1 and columns x0:x1."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def grow(self, margin: int, height: int, width: int) -> Box:
        """The box widened by ``margin`` on every side, clipped to the image."""
        return Box(max(0, self.y0 - margin), min(height, self.y1 + margin),
                   max(0, self.x0 - margin), min(width, self.x1 + margin))

    def contains(self, inner: Box) -> bool:
        """Whether ``inner`` lies wholly inside this box."""
        return self.y0 <= inner.y0 and inner.y1 <= self.y1 and self.x0 <= inner.x0 and inner.x1 <= self.x1

    def within(self, outer: Box) -> tuple[slice, slice]:
        """Slices that cut this box out of an array covering ``outer``."""
        return slice(self.y0 - outer.y0, self.y1 - outer.y0), slice(self.x0 - outer.x0, self.x1 - outer.x0)


@dataclass(frozen=True)
class Tile:
    core: Box  # the pixels this tile produces
    crop: Box  # the pixels it reads: the core plus the halo, clipped to the image


def tile_grid(height: int, width: int, tile_size: int, halo: int = HALO) -> list[Tile]:
    """Row-major tiles of at most ``tile_size`` squared; ``tile_size`` 0 (or larger than the image): one tile."""
    if tile_size <= 0 or (tile_size >= height and tile_size >= width):
        whole = Box(0, height, 0, width)
        return [Tile(whole, whole)]
    tiles = []
    for y0 in range(0, height, tile_size):
        for x0 in range(0, width, tile_size):
            core = Box(y0, min(height, y0 + tile_size), x0, min(width, x0 + tile_size))
            tiles.append(Tile(core, core.grow(halo, height, width)))
    return tiles


def available_memory(device: torch.device) -> int:
    """Bytes free for work on ``device`` (CUDA: free device memory; CPU: MemAvailable)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


CPU_BUDGET_CAP = 8 << 30  # main memory is shared with everything else: use at most this much by default


def choose_tile_size(height: int, width: int, device: torch.device, budget: int | None = None,
                     reduce: int = 1) -> int:
    """Largest tile (multiple of 64) whose working set fits the budget; 0 if the whole image fits.

    The default budget is half the free memory of the device, capped at 8 GiB of main memory on CPU.
    ``reduce``: the decision path's resolution factor, which widens the halo (see :mod:`focusfuse.methods.gacn.decision`).
    """
    if budget is None:
        budget = available_memory(device) // 2
        if device.type != "cuda":
            budget = min(budget, CPU_BUDGET_CAP)
    per_pixel = BYTES_PER_PIXEL["cuda" if device.type == "cuda" else "cpu"]
    if height * width * per_pixel <= budget:
        return 0
    side = int(math.sqrt(budget / per_pixel)) - 2 * halo_for(reduce)
    return max(TILE_MULTIPLE * 2, side // TILE_MULTIPLE * TILE_MULTIPLE)


ReadRegion = Callable[[Box], torch.Tensor]


@torch.no_grad()
def frame_channel_weights(model: GACN, read: ReadRegion, height: int, width: int,
                          tile_size: int) -> list[torch.Tensor]:
    """The four CSE weight vectors of a frame, from streaming passes over its tiles (exact).

    ``read(box)`` returns the frame's pixels in ``box`` as a (C, h, w) tensor in [0, 1] on the model's
    device. Block k's output mean needs the weights of blocks 0..k-1, so there is one pass per block;
    block k sees k + 1 convolutions, so its tiles need that many pixels of halo.
    """
    weights: list[torch.Tensor] = []
    n_pixels = float(height * width)
    for k, cse in enumerate(model.features.cse):
        total = torch.zeros(cse.excite.out_features, dtype=torch.float64, device=model.device)
        for tile in tile_grid(height, width, tile_size, halo=k + 1):
            gray = to_gray(read(tile.crop))[None]
            y = model.features.block_output(gray, k, weights)
            rows, cols = tile.core.within(tile.crop)
            total += y[0, :, rows, cols].sum(dim=(1, 2), dtype=torch.float64)
        weights.append(cse.channel_weights((total / n_pixels).float()[None]))
    return weights


__all__ = ["Box", "Tile", "HALO", "MIN_TILE_SIZE", "halo_for", "NETWORK_RADIUS", "tile_grid", "choose_tile_size",
           "frame_channel_weights", "available_memory"]
