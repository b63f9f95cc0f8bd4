"""GACN behind the fusion-method protocol: its network on a backend, a stack strategy, the decision resolution."""

from __future__ import annotations

from typing import Any

from ...backends.base import Backend
from ..base import ReadRegion
from .boundary_blend import BLEND_REACH, MIN_FRAMES
from .halo import halo_for
from .model import GACN
from .network import GacnNetwork
from .statistics import frame_channel_weights
from .strategies import STRATEGIES, PairStack, SerialStack, StackStrategy


class GacnMethod:
    """GACN fusion (Ma et al.) with one of its stack strategies (``pair``: two frames, keeping the maps).

    ``reduce`` > 1 (a speed option) runs the decision path at that many times lower resolution.
    ``boundary_blend``: stacks of three frames or more are blended by sharpness near the index map's edges
    (see :mod:`.boundary_blend`); pairs never are.
    """

    name = "gacn"

    def __init__(self, model: GACN, backend: Backend, strategy: str = "calibrated", reduce: int = 1,
                 boundary_blend: bool = True) -> None:
        self.net = GacnNetwork(model, backend)
        self.strategy = strategy
        self.state_type: type[StackStrategy] = PairStack if strategy == "pair" else STRATEGIES[strategy]
        self.reduce = reduce
        self.boundary_blend = boundary_blend and strategy != "pair"

    @property
    def description(self) -> str:
        reduced = f", decision path at 1/{self.reduce} resolution" if self.reduce > 1 else ""
        blended = ", boundary blend" if self.boundary_blend else ""
        return f"GACN, strategy {self.strategy}{reduced}{blended}"

    def halo(self, frames: int = 2) -> int:
        blend = -(-BLEND_REACH // self.reduce) * self.reduce if self.boundary_blend and frames >= MIN_FRAMES else 0
        return halo_for(self.reduce) + blend  # a multiple of reduce, as tiles must start on reduced blocks

    def bytes_per_pixel(self) -> int:
        return self.net.backend.bytes_per_pixel  # the network's working set, measured per backend

    def tile_multiple(self) -> int:
        return self.reduce  # reduced blocks must not straddle tiles

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
        return self.state_type(self.net, self.reduce, self.boundary_blend)


__all__ = ["GacnMethod"]
