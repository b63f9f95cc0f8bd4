"""SESF-Fuse's fusion rule for two images: spatial frequency of deep features -> binary decision ->
consistency verification -> guided filter -> weighted sum of the original images."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from . import CV_AREA_FRACTION, CV_DISK_RADIUS, GUIDED_EPS, GUIDED_RADIUS, SF_RADIUS


def activity(features: torch.Tensor, radius: int = SF_RADIUS) -> torch.Tensor:
    """Windowed spatial frequency (B, 1, H, W): squared differences to the left and upper neighbours summed
    over channels (zero outside the image), then summed over a (2r+1)^2 window (zero padded). Eqs. 5-7 up
    to a monotonic transform, which the comparison does not see."""
    left = F.pad(features, (1, 0, 0, 0))[..., :, :-1]
    up = F.pad(features, (0, 0, 1, 0))[..., :-1, :]
    energy = ((left - features) ** 2 + (up - features) ** 2).sum(dim=1, keepdim=True)
    size = 2 * radius + 1
    return F.avg_pool2d(energy, size, stride=1, padding=radius, count_include_pad=True) * size * size


def disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def remove_small(mask: np.ndarray, area: float) -> np.ndarray:
    """``mask`` without its 4-connected components of fewer than ``area`` pixels."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= area
    keep[0] = False
    return keep[labels]


def consistency_verification(decision: np.ndarray, radius: int = CV_DISK_RADIUS,
                             area_fraction: float = CV_AREA_FRACTION) -> np.ndarray:
    """Binary opening, small 1-regions removed, binary closing, small 0-regions filled (bool (H, W)).

    Erosion counts pixels outside the image as 1, dilation as 0 (the published code's morphology)."""
    footprint = disk(radius)
    area = area_fraction * decision.size
    d = ndimage.binary_erosion(decision, footprint, border_value=1)
    d = ndimage.binary_dilation(d, footprint, border_value=0)
    d = remove_small(d, area)
    d = ndimage.binary_dilation(d, footprint, border_value=0)
    d = ndimage.binary_erosion(d, footprint, border_value=1)
    return ~remove_small(~d, area)


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over (2r+1)^2 windows, counting only pixels inside the image."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def guided_filter(guide: torch.Tensor, p: torch.Tensor, radius: int = GUIDED_RADIUS,
                  eps: float = GUIDED_EPS) -> torch.Tensor:
    """He's guided filter of ``p`` (B, 1, H, W) by ``guide`` (B, C, H, W, on the 0..255 scale). A colour guide
    takes SESF-Fuse's per-channel form: a_c = cov(I_c, p) / (var(I_c) + eps), b = mean(p) - sum_c a_c mean(I_c),
    q = sum_c mean(a_c) I_c + mean(b) (not He's 3x3-covariance filter)."""
    mean_i, mean_p = box_mean(guide, radius), box_mean(p, radius)
    cov = box_mean(guide * p, radius) - mean_i * mean_p
    var = box_mean(guide * guide, radius) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - (a * mean_i).sum(dim=1, keepdim=True)
    return (box_mean(a, radius) * guide).sum(dim=1, keepdim=True) + box_mean(b, radius)


def decide(activity_a: torch.Tensor, activity_b: torch.Tensor) -> torch.Tensor:
    """Initial map (1, 1, H, W) float: 1 where A's activity is strictly larger (ties go to B), after
    consistency verification (computed on the CPU)."""
    initial = (activity_a > activity_b)[0, 0].cpu().numpy()
    verified = consistency_verification(initial)
    return torch.from_numpy(verified).to(activity_a.device, torch.float32)[None, None]


def final_map(decision: torch.Tensor, frame_a: torch.Tensor, frame_b: torch.Tensor) -> torch.Tensor:
    """The guided-filtered decision q (1, 1, H, W): guide = the decision's fusion of the frames (0..255)."""
    guide = (decision * frame_a + (1.0 - decision) * frame_b) * 255.0
    return guided_filter(guide, decision)


__all__ = ["activity", "consistency_verification", "guided_filter", "decide", "final_map", "disk", "box_mean"]
