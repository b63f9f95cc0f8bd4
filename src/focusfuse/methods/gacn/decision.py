"""Decision maps: the pair decision, boundary refinement of the initial map and the blend of Eq. 4.

p0 (initial map, 1 where frame A is in focus) is blurred to find the focus boundary; near the
boundary p0 is replaced by a guided-filter smoothed version (guide: the p0-weighted gray fusion).

Optionally (``reduce`` > 1, not the default) the decision path (two thirds of the network's arithmetic
for a pair, four fifths for a stack step) sees the spatial frequency reduced ``reduce`` times by block
means (it is an 11x11 window average, so little is lost): the features and their spatial frequency stay
at full resolution, the initial map is enlarged back, and the refinement and blend run on
full-resolution frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F

from ...ops.filters import SeparableFilter, gaussian_blur, guided_filter, separable_filter


class PairNetwork(Protocol):
    """What the decision functions need of a network: the model itself (training, plain operations) or a
    :class:`~focusfuse.methods.gacn.network.GacnNetwork` (inference on a backend)."""

    def focus_measure(self, gray: torch.Tensor,
                      channel_weights: Sequence[torch.Tensor] | None = None) -> torch.Tensor: ...

    def initial_map(self, sf_a: torch.Tensor, sf_b: torch.Tensor) -> torch.Tensor: ...

    def refine(self, p0: torch.Tensor, gray_a: torch.Tensor, gray_b: torch.Tensor) -> torch.Tensor: ...

BOUNDARY_BLUR_SIZE = 9
BOUNDARY_BLUR_SIGMA = 8.0
BOUNDARY_LOW = 0.1
BOUNDARY_HIGH = 0.8
GUIDED_RADIUS = 3
GUIDED_EPS = 0.1


def reduce_resolution(gray: torch.Tensor, factor: int) -> torch.Tensor:
    """Means of ``factor`` x ``factor`` blocks of (B, C, H, W); partial blocks at the right and bottom edges
    average the pixels they hold. Blocks start at multiples of ``factor``, so a tile cropped there reduces
    to the matching part of the reduced whole image."""
    return gray if factor == 1 else F.avg_pool2d(gray, factor, ceil_mode=True)


def restore_resolution(p: torch.Tensor, factor: int, shape: tuple[int, int]) -> torch.Tensor:
    """Bilinear enlargement of a map made by :func:`reduce_resolution` back to ``shape`` (H, W)."""
    if factor == 1:
        return p
    return F.interpolate(p, scale_factor=factor, mode="bilinear", align_corners=False)[..., :shape[0], :shape[1]]


def decision_focus_measure(net: PairNetwork, gray: torch.Tensor, reduce: int = 1,
                           channel_weights: Sequence[torch.Tensor] | None = None,
                           has_image: torch.Tensor | None = None) -> torch.Tensor:
    """The frame's focus measure (spatial frequency of its features, at full resolution) as the decision
    path sees it: reduced ``reduce`` times. Zero where ``has_image`` (bool, (B,1,H,W)) is False: edge fill
    (see :mod:`focusfuse.frames.fill`) is no evidence of focus."""
    return decision_measure(net.focus_measure(gray, channel_weights), has_image, reduce)


def decision_measure(sf: torch.Tensor, has_image: torch.Tensor | None, reduce: int) -> torch.Tensor:
    """A focus measure ``sf`` as the decision path takes it: zero on edge fill, reduced ``reduce`` times."""
    return reduce_resolution(zero_on_fill(sf, has_image), reduce)


def zero_on_fill(sf: torch.Tensor, has_image: torch.Tensor | None) -> torch.Tensor:
    """Focus measure ``sf`` set to zero where ``has_image`` is False (None: unchanged)."""
    return sf if has_image is None else sf * has_image


def full_resolution_initial_map(net: PairNetwork, sf_a: torch.Tensor, sf_b: torch.Tensor, reduce: int,
                                shape: tuple[int, int]) -> torch.Tensor:
    """Initial decision map p0 from two decision focus measures, enlarged to the frames' ``shape``."""
    return restore_resolution(net.initial_map(sf_a, sf_b), reduce, shape)


def boundary_weight(p0: torch.Tensor, separable: SeparableFilter = separable_filter) -> torch.Tensor:
    """1 on the focus boundary (0.1 <= blurred p0 <= 0.8), falling to 0 where the blur is 0 or 1."""
    b = gaussian_blur(p0, BOUNDARY_BLUR_SIZE, BOUNDARY_BLUR_SIGMA, separable)
    settled = (b > BOUNDARY_HIGH).to(b.dtype) * b + (b < BOUNDARY_LOW).to(b.dtype) * (1.0 - b)
    return 1.0 - (2.0 * (b * settled + (1.0 - settled) * 0.5) - 1.0).abs()


def refine_decision_map(p0: torch.Tensor, gray_a: torch.Tensor, gray_b: torch.Tensor,
                        separable: SeparableFilter = separable_filter) -> torch.Tensor:
    """Final decision map p = w * guided(p0) + (1 - w) * p0, all (B, 1, H, W)."""
    guide = p0 * gray_a + (1.0 - p0) * gray_b
    smoothed = guided_filter(guide, p0, GUIDED_RADIUS, GUIDED_EPS, separable)
    w = boundary_weight(p0, separable)
    return smoothed * w + p0 * (1.0 - w)


def blend(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Eq. 4: F = p * A + (1 - p) * B on every channel (p broadcasts over channels)."""
    return p * a + (1.0 - p) * b


def decide_pair(net: PairNetwork, gray_a: torch.Tensor, gray_b: torch.Tensor, reduce: int = 1,
                has_image_a: torch.Tensor | None = None,
                has_image_b: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gray frames (B,1,H,W) -> (initial map p0, final map p), both (B,1,H,W), 1 where A is in focus.

    ``reduce`` > 1 runs the decision path at that many times lower resolution (see the module's docstring).
    ``has_image_a/b``: where each frame is not edge fill; the focus measure is zero elsewhere."""
    sf_a, sf_b = net.focus_measure(torch.cat([gray_a, gray_b], dim=0)).chunk(2, dim=0)
    sf_a, sf_b = decision_measure(sf_a, has_image_a, reduce), decision_measure(sf_b, has_image_b, reduce)
    p0 = full_resolution_initial_map(net, sf_a, sf_b, reduce, gray_a.shape[-2:])
    return p0, net.refine(p0, gray_a, gray_b)
