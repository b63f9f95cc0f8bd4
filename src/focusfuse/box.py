"""Boxes and tiles: rectangles of pixels (rows y0:y1, columns x0:x1), and the grid of tiles (a core each,
read with a halo of context around it) that memory-bounded fusion works through.

A method says how much halo its tiles need (e.g. :mod:`focusfuse.methods.gacn.halo`) and computes the
whole-frame statistics tiles need first (e.g. :mod:`focusfuse.methods.gacn.statistics`), so that a tiled
result equals the untiled one.
"""

from __future__ import annotations

from dataclasses import dataclass


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
