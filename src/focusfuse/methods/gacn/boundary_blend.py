"""The boundary blend of a stack: near the index map's edges, every frame weighed by its local sharpness.

Where GACN's index map switches from one frame to another, a hard switch leaves seams, and on continuous depth
(a floor sloping away) it leaves stripes where the map jumps between neighbouring frames in blobs. Within
``BLEND_RADIUS`` px of an index edge the fused image is replaced by the mean of all frames weighed by
``(E + 1) ** 2``, E being the 3x3 mean of the squared 3x3 Laplacian of the frame's gray (8-bit scale): the
sharpest frames dominate, neighbouring frames of similar sharpness mix, and the band's edge is soft.
With a :class:`~.blend_net.BlendNet` (the default, ``learned``), each weight is corrected by a small network
that sees the frame: ``(E + 1) ** 2 * exp(c)``; without one (``laplacian``) the weights are the energy's alone.
When the BlendNet has a refiner (:mod:`.blend_refiner`), the same weights also fill a few running sums of frames
binned by their place in the stack, and at the end the refiner redraws the band from the blends.
Measured on ``benchmarks/boundary.py`` (docs/boundaries.md), against GACN's hard switch: stacks +0.5 dB
laplacian, +1.5 dB with the learned weights and +3.3 dB with the refiner. A pair is left as GACN fused it
unless the blend weights carry a pair refiner (``focusfuse-blend-pairs``, not the default): it gains on that
benchmark's pairs but costs the reference-free measures of real pairs (docs/boundaries.md).

The weights depend on each frame alone, so the blend is streamed: running sums, and the band from the
final index map at the end. The band reaches ``BAND_REACH`` px from the index map, the weights
``weight_reach(net)`` px from the frames, and the refiner ``refiner_reach(net)`` px beyond both; a tile's halo
covers them.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ...frames.refs import match_channels
from ...ops.filters import SeparableFilter, gaussian_blur, gaussian_kernel1d, separable_filter
from .blend_net import MAX_CORRECTION, BlendNet
from .blend_refiner import BlendRefiner, bin_weights, log_share, refine, within_pair

BLEND_RADIUS = 9  # px from an index-map edge (Chebyshev distance) where frames are blended
BAND_SOFTNESS = 1.5  # sigma (px) of the band's soft edge
BAND_BLUR_SIZE = 2 * math.ceil(3 * BAND_SOFTNESS) + 1
SHARPNESS_POWER = 2  # weights (E + 1) ** SHARPNESS_POWER
MIN_FRAMES = 3  # fewer (a pair) are blended only by a pair refiner
BAND_REACH = 1 + BLEND_RADIUS + BAND_BLUR_SIZE // 2  # from the index map: its edge, the band, the soft edge
ENERGY_REACH = 2  # from the frame: the Laplacian and its 3x3 mean
BLEND_MODES = ("learned", "laplacian", "off")  # or a BlendNet weights file / installed name (learned with them)


def laplacian_energy(gray: torch.Tensor) -> torch.Tensor:
    """E = 3x3 mean of the squared 3x3 Laplacian of ``gray`` (B, 1, H, W) in [0, 1], on the 8-bit scale.

    The Laplacian is OpenCV's ``Laplacian(ksize=3)`` (diagonal neighbours, weights 2 and -8), computed from
    shifted views; the pixels of the image's outermost rows and columns take their inner neighbour's value.
    """
    energy = torch.zeros_like(gray)
    if gray.shape[-1] < 3 or gray.shape[-2] < 3:
        return energy
    x = gray[..., 0, :, :] * 255.0
    inner = energy[..., 0, 1:-1, 1:-1]
    torch.add(x[..., :-2, :-2], x[..., :-2, 2:], out=inner)
    inner.add_(x[..., 2:, :-2]).add_(x[..., 2:, 2:]).mul_(2.0).sub_(x[..., 1:-1, 1:-1], alpha=8.0).square_()
    energy[..., 0, :] = energy[..., 1, :]
    energy[..., -1, :] = energy[..., -2, :]
    energy[..., :, 0] = energy[..., :, 1]
    energy[..., :, -1] = energy[..., :, -2]
    return F.avg_pool2d(energy, 3, stride=1, padding=1, count_include_pad=False)


def blend_label(mode: str) -> str:
    """Words for a (validated) boundary-blend mode: learned, laplacian, or the path of blend weights."""
    if mode == "laplacian":
        return "Laplacian boundary blend"
    return "learned boundary blend" + ("" if mode == "learned" else f" ({Path(mode).stem})")


def weight_reach(net: BlendNet | None) -> int:
    """How far (px) a blend weight depends on its frame: the energy's reach, plus the network's."""
    return ENERGY_REACH + (net.reach if net is not None else 0)


def refiner_reach(net: BlendNet | None, frames: int = MIN_FRAMES) -> int:
    """How far (px) the refiner of the blend of ``frames`` frames looks beyond its inputs (0 without one)."""
    refiner = None if net is None else net.refiner_for(frames)
    return 0 if refiner is None else refiner.reach


def is_blended(net: BlendNet | None, frames: int) -> bool:
    """Whether a region of ``frames`` frames gets the boundary blend: three or more always, fewer (a pair) only
    when ``net`` has a refiner for them."""
    return frames >= MIN_FRAMES or (net is not None and net.refiner_for(frames) is not None)


def kept_bins(net: BlendNet | None) -> int:
    """How many running sums of frames binned by place the blend keeps for ``net``'s refiners (a pair's two
    frames fall in the outer bins of the stack refiner's)."""
    refiner = None if net is None else net.refiner or net.pair_refiner
    return 0 if refiner is None else refiner.bins


def sharpness_weights(energy: torch.Tensor, correction: torch.Tensor | None = None) -> torch.Tensor:
    """The blend's weights ``(E + 1) ** SHARPNESS_POWER``, times ``exp(correction)`` (clamped) when given."""
    w = energy.add(1.0).pow_(SHARPNESS_POWER)
    return w if correction is None else w.mul_(correction.clamp(-MAX_CORRECTION, MAX_CORRECTION).exp_())


def index_edges(index: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: pixels whose index differs from a 4-neighbour's (both sides of every switch)."""
    edges = torch.zeros(index.shape, dtype=torch.bool, device=index.device)
    rows = index[1:] != index[:-1]
    cols = index[:, 1:] != index[:, :-1]
    edges[1:] |= rows
    edges[:-1] |= rows
    edges[:, 1:] |= cols
    edges[:, :-1] |= cols
    return edges


def blend_band(index: torch.Tensor, separable: SeparableFilter = separable_filter) -> torch.Tensor:
    """(1, 1, H, W) weight of the blend: 1 within BLEND_RADIUS px of an index edge, a soft edge, 0 elsewhere."""
    edges = index_edges(index)[None, None].float()
    size = 2 * BLEND_RADIUS + 1
    near = F.max_pool2d(F.max_pool2d(edges, (1, size), 1, (0, BLEND_RADIUS)), (size, 1), 1, (BLEND_RADIUS, 0))
    band = gaussian_blur(near, BAND_BLUR_SIZE, BAND_SOFTNESS, separable)
    # normalised at the border (the blur's zero padding would fade the band there): divide by the blur of ones
    height, width = index.shape
    return band.div_(_blurred_ones(height, band)[:, None] * _blurred_ones(width, band)[None, :])


def _blurred_ones(length: int, like: torch.Tensor) -> torch.Tensor:
    """The band's 1-D Gaussian applied to ``length`` ones with zero padding: the weight inside the image."""
    taps = gaussian_kernel1d(BAND_BLUR_SIZE, BAND_SOFTNESS).to(like)
    ones = torch.ones(1, 1, length, dtype=like.dtype, device=like.device)
    return F.conv1d(ones, taps.view(1, 1, -1), padding=BAND_BLUR_SIZE // 2)[0, 0]


class SharpnessBlend:
    """Running sums of a region's frames weighed by their sharpness; :meth:`apply` blends them in at the end.
    ``net``: the learned correction of the weights (None: the Laplacian energy's weights alone), and its refiner."""

    def __init__(self, separable: SeparableFilter = separable_filter, net: BlendNet | None = None) -> None:
        self.separable = separable
        self.net = net
        self.bins = kept_bins(net)  # running sums of frames binned by place in the stack
        self.weighted: torch.Tensor | None = None  # (C, H, W): sum of w * frame
        self.total: torch.Tensor | None = None  # (1, H, W): sum of w
        self.binned: list[list[torch.Tensor]] = []  # per bin: [sum of h w frame, sum of h w]
        self.frames = 0

    def add(self, frame: torch.Tensor, gray: torch.Tensor, has_image: torch.Tensor | None,
            bracket: float = 0.0) -> None:
        """Take a frame (C, H, W), its gray (1, 1, H, W), where it has image pixels ((1, 1, H, W) bool or None:
        edge fill gets no weight) and its place in the stack (0 first, 1 last; for the refiner's bins)."""
        energy = laplacian_energy(gray)
        with torch.no_grad():  # (not inference mode: the running sums are updated in place later)
            correction = None if self.net is None else self.net(gray, torch.log1p(energy))
        w = sharpness_weights(energy, correction)[0]
        if has_image is not None:
            w = w * has_image[0]
        self.frames += 1
        if self.bins:
            self._add_to_bins(frame, w, bracket)
        if self.weighted is None:
            self.weighted, self.total = w * frame, w
            return
        weighted, frame = match_channels(self.weighted, frame)
        self.weighted = weighted.addcmul_(w.expand_as(frame), frame)
        self.total.add_(w)

    def _add_to_bins(self, frame: torch.Tensor, w: torch.Tensor, bracket: float) -> None:
        if not self.binned:
            self.binned = [[torch.zeros_like(frame), torch.zeros_like(w)] for _ in range(self.bins)]
        for sums, share in zip(self.binned, bin_weights(bracket, self.bins)):
            if share > 0:
                sums[0], frame_ = match_channels(sums[0], frame)
                sums[0].addcmul_(w.expand_as(frame_), frame_, value=share)
                sums[1].add_(w, alpha=share)

    def apply(self, fused: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``fused`` (C, H, W) with the sharpness-weighted frames blended in near the edges of ``index`` (H, W);
        unchanged where no frame has image pixels, and for fewer than MIN_FRAMES frames unless the net has a
        refiner for them (a pair: blended and redrawn by the pair refiner)."""
        if self.weighted is None or not is_blended(self.net, self.frames):
            return fused
        refiner = None if self.net is None else self.net.refiner_for(self.frames)
        band = blend_band(index, self.separable)[0]
        tiny = torch.finfo(self.total.dtype).tiny
        mean = self.weighted / self.total.clamp_min(tiny)
        band = torch.where(self.total > 0, band, torch.zeros_like(band))
        fused, mean = match_channels(fused, mean)
        if refiner is not None:
            mean = self._refined(refiner, mean, fused, band, tiny)
        return fused + band * (mean - fused)

    def _refined(self, refiner: BlendRefiner, mean: torch.Tensor, fused: torch.Tensor, band: torch.Tensor,
                 tiny: float) -> torch.Tensor:
        """The blend redrawn by ``refiner`` (RGB; a gray region as three equal channels)."""
        channels = mean.shape[0]
        if channels not in (1, 3):
            return mean
        # a pair's two frames (places 0 and 1) are the outer bins, whatever the number kept
        sums = self.binned if refiner.bins == len(self.binned) else [self.binned[0], self.binned[-1]]
        binned, shares = [], []
        for weighted, total in sums:
            # an empty bin (no weight at a pixel) stands in as the whole blend
            binned.append(torch.where(total > 0, match_channels(weighted, mean)[0] / total.clamp_min(tiny), mean))
            shares.append(log_share(total, self.total))
        rgb = (lambda x: x.expand(3, -1, -1)) if channels == 1 else (lambda x: x)
        binned = torch.cat([rgb(b) for b in binned])
        refined = refine(refiner, rgb(mean), rgb(fused), binned, torch.cat(shares), band)
        if self.frames == 2:
            refined = within_pair(refined, binned)
        return refined.mean(0, keepdim=True) if channels == 1 else refined


__all__ = ["BAND_REACH", "BLEND_MODES", "BLEND_RADIUS", "SharpnessBlend", "blend_band", "blend_label", "is_blended",
           "kept_bins", "laplacian_energy", "refiner_reach", "sharpness_weights", "weight_reach"]
