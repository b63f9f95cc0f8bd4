"""The pyramid method behind the fusion-method protocol: no weights, no whole-frame statistics."""

from __future__ import annotations


from ...backends.base import Backend
from ..base import LocalMethod
from . import ACTIVITY_SIZE, LEVELS, VOTE_SIZE
from .state import PyramidStack

HALO_MARGIN = 8
# the fused pyramid and its energies, one frame's pyramid, energies and temporaries (float32, up to 4
# channels, 4/3 of the pixels over the levels); 6 copies of 4 channels: ~170 B, rounded up
BYTES_PER_PIXEL = 256


class WaveletMethod(LocalMethod):
    """Multi-scale fusion: Laplacian pyramids of the frames, per level the locally most energetic detail,
    the mean of the bases (see :mod:`.state`). ``pair``: keep the choice as the decision map."""

    name = "wavelet"
    description = f"Laplacian pyramid, {LEVELS} levels, most energetic local detail with a majority vote"

    def __init__(self, backend: Backend, pair: bool = False, levels: int = LEVELS) -> None:
        self.backend = backend
        self.pair = pair
        self.levels = levels

    def halo(self, frames: int = 2) -> int:
        multiple = self.tile_multiple()
        return -(-(pyramid_reach(self.levels) + HALO_MARGIN) // multiple) * multiple

    def bytes_per_pixel(self) -> int:
        return BYTES_PER_PIXEL

    def tile_multiple(self) -> int:
        return 2 ** self.levels  # every level's pixel grid is the whole image's

    def new_state(self) -> PyramidStack:
        return PyramidStack(self.levels, pair=self.pair)


def pyramid_reach(levels: int, window: int = ACTIVITY_SIZE, vote: int = VOTE_SIZE) -> int:
    """How far (full-resolution pixels) a fused pixel reaches into the frames.

    Level l (pixels 2^l apart): a Gaussian pixel reaches 2 (2^l - 1) (5-tap blurs); a detail pixel also
    needs the next level through a bilinear enlargement (1 coarser pixel): 3 * 2^(l+1) - 2; its energy
    window adds (window // 2) * 2^l and the vote (vote // 2) * 2^l; the reconstruction enlarges it back
    through the finer levels: 2^(l+1) - 2. The base (mean of the frames) reaches 2 (2^L - 1) + 2^(L+1) - 2.
    """
    def detail_level(level: int) -> int:
        return 3 * 2 ** (level + 1) - 2 + (window // 2 + vote // 2) * 2 ** level + 2 ** (level + 1) - 2

    base = 2 * (2 ** levels - 1) + 2 ** (levels + 1) - 2
    return max([base] + [detail_level(level) for level in range(levels)])


__all__ = ["WaveletMethod"]
