"""The fusion-method protocol: what the engine asks of a method (GACN, the wavelet pyramid, SESF-Fuse, R-PSNN;
others plug in the same way).

The engine reads frames region by region (tiles with a halo), hands them to a method's running state
one after another (in batches where the backend runs several frames at once), and writes what the
state holds when the region's frames are done. A method says how much context a tile needs, whether it
needs whole-frame statistics first (computed by the engine's streaming pass over each frame's tiles),
and whether it can be tiled at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..box import Box
from ..frames.fill import FrameFill

# A frame's region as whole-frame statistics read it: the network's input, (C, h, w) in [0, 1] on the device (edge
# fill replaced), and where the frame has image pixels there, (1, 1, h, w) bool (None: everywhere).
ReadRegion = Callable[[Box], "tuple[torch.Tensor, torch.Tensor | None]"]


@dataclass
class FrameInput:
    """One frame of one region as a method receives it."""

    index: int  # position in the input list (what the index map records)
    frame: torch.Tensor  # (C, h, w) float32 in [0, 1], on the backend's device
    fill: FrameFill | None = None  # the frame's edge fill in this region (see focusfuse.frames.fill)
    statistics: Any = None  # the method's whole-frame statistics when the region is a tile of the frame
    region: Box | None = None  # where the region lies in the frame (a tile's crop, with its halo)
    bracket: float = 0.0  # where the frame lies in the stack's order: 0 the first, 1 the last


class StackState(Protocol):
    """Running state of one region's fusion: frames are added in input order."""

    fused: torch.Tensor | None  # (C, h, w) float32, the fused region so far
    index: torch.Tensor | None  # (h, w) int32, the input index each pixel came from
    maps: dict[str, torch.Tensor]  # named float maps (h, w) the method defines (e.g. decision maps of a pair)

    def add_batch(self, items: Sequence[FrameInput]) -> None:
        """Take the next frames, in input order."""
        ...

    def finish(self) -> None:
        """The region's last frame is in (a method may complete ``fused`` here)."""
        ...


class FusionMethod(Protocol):
    """A fusion method, ready to run on one backend."""

    name: str
    description: str  # one line for reports and output metadata

    def halo(self, frames: int = 2) -> int:
        """Pixels of context a tile needs on every side so that tiled results equal untiled ones, when
        ``frames`` frames are fused (a method whose reach grows with each frame, like a cascade, needs more)."""
        ...

    def bytes_per_pixel(self) -> int:
        """Working memory per pixel of a region while its frames are fused (what sizes the tiles)."""
        ...

    def tile_multiple(self) -> int:
        """Tiles start at multiples of this (1: anywhere)."""
        ...

    def tiling_problem(self) -> str | None:
        """Why this method cannot run in tiles (None: it can)."""
        ...

    def frame_statistics(self, read: ReadRegion, shape: tuple[int, int], tile_size: int,
                         carry: Any = None) -> tuple[Any, Any]:
        """Whole-frame statistics a tile of the frame needs (None: none), from ``read(box)`` over its tiles, and
        what the next frame's call needs of this one (its ``carry``). Frames come in input order; the first
        gets ``carry`` None."""
        ...

    def new_state(self) -> StackState:
        """A fresh running state for one region."""
        ...


class LocalMethod:
    """Defaults for a method whose tiles need only their halo: no whole-frame statistics, tiles start anywhere."""

    def tile_multiple(self) -> int:
        return 1

    def tiling_problem(self) -> str | None:
        return None

    def frame_statistics(self, read: ReadRegion, shape: tuple[int, int], tile_size: int,
                         carry: Any = None) -> tuple[Any, Any]:
        return None, None

