"""GACN behind the fusion-method protocol: its network on a backend, a stack strategy, the decision resolution."""

from __future__ import annotations

import math
from typing import Any

from ...backends.base import Backend
from ..base import ReadRegion
from .blend_net import BlendNet
from .boundary_blend import BAND_REACH, blend_label, is_blended, kept_bins, refiner_reach, weight_reach
from .halo import halo_for
from .model import GACN
from .network import GacnNetwork
from .statistics import frame_channel_weights
from .strategies import STRATEGIES, PairStack, SerialStack, StackStrategy


class GacnMethod:
    """GACN fusion (Ma et al.) with one of its stack strategies (``pair``: two frames, keeping the maps).

    ``reduce`` > 1 (a speed option) runs the decision path at that many times lower resolution.
    ``boundary_blend``: stacks of three frames or more are blended by sharpness near the index map's edges
    (see :mod:`.boundary_blend`), the weights corrected by ``blend_net`` when given; pairs only when
    ``blend_net`` has a pair refiner.
    """

    name = "gacn"

    def __init__(self, model: GACN, backend: Backend, strategy: str = "calibrated", reduce: int = 1,
                 boundary_blend: bool = True, blend_net: BlendNet | None = None) -> None:
        self.net = GacnNetwork(model, backend)
        self.strategy = strategy
        self.state_type: type[StackStrategy] = PairStack if strategy == "pair" else STRATEGIES[strategy]
        self.reduce = reduce
        self.boundary_blend = boundary_blend and (strategy != "pair" or is_blended(blend_net, 2))
        self.blend_net = blend_net if self.boundary_blend else None

    @property
    def description(self) -> str:
        reduced = f", decision path at 1/{self.reduce} resolution" if self.reduce > 1 else ""
        mode = "learned" if self.blend_net is not None else "laplacian"
        blended = f", {blend_label(mode)}" if self.boundary_blend else ""
        return f"GACN, strategy {self.strategy}{reduced}{blended}"

    def halo(self, frames: int = 2) -> int:
        halo = halo_for(self.reduce)
        if self.blends(frames):  # the band needs the index map, the weights the frames
            # (the refiner looks its reach further, at the blends and at the band)
            halo = max(halo + BAND_REACH, weight_reach(self.blend_net)) + refiner_reach(self.blend_net, frames)
        multiple = self.tile_multiple()
        return -(-halo // multiple) * multiple  # tiles must start on reduced blocks (and the blend net's)

    def blends(self, frames: int) -> bool:
        """Whether a region of ``frames`` frames is blended at its boundaries (a pair: with a pair refiner)."""
        return self.boundary_blend and is_blended(self.blend_net, frames)

    def bytes_per_pixel(self) -> int:
        # the network's working set, measured per backend; and the refiners' running sums (RGB and weight per bin)
        return self.net.backend.bytes_per_pixel + kept_bins(self.blend_net) * 4 * 4

    def tile_multiple(self) -> int:
        # reduced blocks, and the blend net's 2x2 means, must not straddle tiles
        return math.lcm(self.reduce, self.blend_net.scale) if self.blend_net is not None else self.reduce

    def tiling_problem(self) -> str | None:
        if self.state_type is SerialStack:
            return ("the serial strategy cannot run in tiles (it feeds the fused image back through the network); "
                    "process the image whole (tile size 0) or use the calibrated strategy")
        return None

    def frame_statistics(self, read: ReadRegion, shape: tuple[int, int], tile_size: int,
                         carry: Any = None) -> tuple[Any, Any]:
        weights = frame_channel_weights(self.net, lambda box: read(box)[0], shape[0], shape[1], tile_size)
        return weights, None  # the channel means need no image mask, and the next frame nothing of this one

    def new_state(self) -> StackStrategy:
        return self.state_type(self.net, self.reduce, self.boundary_blend, self.blend_net)


__all__ = ["GacnMethod"]
