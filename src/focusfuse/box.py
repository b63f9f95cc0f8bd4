"""Box: a rectangle of pixels (rows y0:y1, columns x0:x1), as tiles, regions and fill bands use it."""

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
