"""Tiles for memory-bounded fusion: a grid of core regions, each read with a halo of context around it.

A method says how much halo its tiles need (e.g. :mod:`focusfuse.methods.gacn.halo`) and computes the
whole-frame statistics tiles need first (e.g. :mod:`focusfuse.methods.gacn.statistics`), so that a
tiled result equals the untiled one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..box import Box

TILE_MULTIPLE = 64  # automatic tile sizes are multiples of this


@dataclass(frozen=True)
class Tile:
    core: Box  # the pixels this tile produces
    crop: Box  # the pixels it reads: the core plus the halo, clipped to the image


def tile_grid(height: int, width: int, tile_size: int, halo: int) -> list[Tile]:
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


__all__ = ["Tile", "tile_grid", "TILE_MULTIPLE"]
