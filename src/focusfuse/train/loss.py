"""Training loss: Dice on the initial decision map + lambda * (1 - Q_g) on the fused image.

The paper's Dice scores frame A's map only. ``symmetric_dice`` scores both frames' maps (p against the
mask and 1 - p against 1 - mask) and averages them, so the loss no longer changes when the frames swap.
``boundary_weight`` adds the symmetric Dice of the pixels within ``boundary_width`` px of the mask's
boundary: the whole-map Dice hardly notices where a boundary lies, so a map that draws near objects a
few pixels too wide costs little without it.

Q_g (Xydeas-Petrovic Q^AB/F) is made differentiable as in the GACN paper (Eqs. 7-17): the Heaviside
step that picks min/max in the gradient-strength ratio becomes a sigmoid with steepness ``k``. The
rest follows the metric (``focusfuse.evaluation.metrics.qg``): Sobel correlation with zero padding, orientation
atan(gy / gx), Gamma 1, k_g -10, sigma_g 0.5, k_a -20, sigma_a 0.75, L = 1, the same +1e-5 guards on
the 0..255 scale. The per-image score is the paper's global ratio (Eq. 17):
sum(Q_AF * g_A + Q_BF * g_B) / sum(g_A + g_B).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GUARD = 1e-5  # the metric's guard on zero gradients, 0..255 scale
SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gx, gy) of (B,1,H,W) by correlation with zero padding: gx = right - left, gy = bottom - top."""
    kx = SOBEL_X.to(x)[None, None]
    ky = SOBEL_X.t().to(x)[None, None]
    return F.conv2d(x, kx, padding=1), F.conv2d(x, ky, padding=1)


def strength_and_angle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gx, gy = sobel(x)
    strength = torch.sqrt(gx * gx + gy * gy + 1e-12)
    guarded_x = torch.where(gx == 0, torch.full_like(gx, GUARD), gx)
    return strength, torch.atan(gy / guarded_x)


def edge_preservation(g_s: torch.Tensor, a_s: torch.Tensor, g_f: torch.Tensor, a_f: torch.Tensor,
                      k: float) -> torch.Tensor:
    """Q_SF with the Heaviside of the min/max strength ratio replaced by sigmoid(k * (g_S - g_F))."""
    source_stronger = torch.sigmoid(k * (g_s - g_f))
    g_s_guarded = g_s + (g_s == 0) * GUARD
    g_f_guarded = g_f + (g_f == 0) * GUARD
    ratio = source_stronger * (g_f / g_s_guarded) + (1 - source_stronger) * (g_s / g_f_guarded)
    angle_change = torch.abs(torch.abs(a_s - a_f) - math.pi / 2) * (2 / math.pi)
    q_strength = torch.sigmoid(10.0 * (ratio - 0.5))
    q_angle = torch.sigmoid(20.0 * (angle_change - 0.75))
    return q_strength * q_angle


def qg_differentiable(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor, k: float = 1.0) -> torch.Tensor:
    """Per-image Q_g (B,) of fused ``f`` from ``a``, ``b``: (B,1,H,W) in [0, 1] (scaled to 0..255 inside)."""
    g_a, a_a = strength_and_angle(a * 255.0)
    g_b, a_b = strength_and_angle(b * 255.0)
    g_f, a_f = strength_and_angle(f * 255.0)
    q_af = edge_preservation(g_a, a_a, g_f, a_f, k)
    q_bf = edge_preservation(g_b, a_b, g_f, a_f, k)
    numerator = (q_af * g_a + q_bf * g_b).sum(dim=(1, 2, 3))
    return numerator / (g_a + g_b).sum(dim=(1, 2, 3)).clamp_min(1e-12)


def dice_loss(p: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - Dice overlap per image (B,)."""
    dims = (1, 2, 3)
    overlap = (p * target).sum(dims)
    return 1.0 - (2.0 * overlap + smooth) / (p.sum(dims) + target.sum(dims) + smooth)


def symmetric_dice_loss(p: torch.Tensor, target: torch.Tensor, smooth: float = 1.0,
                        region: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the Dice losses of both frames' maps, per image (B,): unchanged when A and B swap.
    ``region`` (0/1, like ``p``): score only those pixels."""
    if region is None:
        return 0.5 * (dice_loss(p, target, smooth) + dice_loss(1 - p, 1 - target, smooth))
    return 0.5 * (dice_loss(p * region, target * region, smooth)
                  + dice_loss((1 - p) * region, (1 - target) * region, smooth))


def boundary_band(mask: torch.Tensor, width: int) -> torch.Tensor:
    """1 where a pixel lies within ``width`` px (chessboard distance) of the other label, else 0."""
    size = 2 * width + 1
    grown = F.max_pool2d(mask, size, stride=1, padding=width)
    shrunk = 1.0 - F.max_pool2d(1.0 - mask, size, stride=1, padding=width)
    return grown - shrunk


def boundary_dice_loss(p: torch.Tensor, target: torch.Tensor, width: int, smooth: float = 1.0) -> torch.Tensor:
    """Symmetric Dice loss of the pixels near the target's boundary, per image (B,); 0 without a boundary."""
    return symmetric_dice_loss(p, target, smooth, region=boundary_band(target, width))


def gacn_loss(p0: torch.Tensor, p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor,
              qg_weight: float = 1.0, k: float = 1.0, symmetric_dice: bool = False,
              boundary_weight: float = 0.0, boundary_width: int = 8) -> dict[str, torch.Tensor]:
    """Loss terms (batch means): Dice on the initial map ``p0`` (frame A's, or both frames' with
    ``symmetric_dice``), Q_g of the fused image from ``p``, and with ``boundary_weight`` > 0 the
    boundary Dice of ``p0`` (see the module's docstring)."""
    fused = p * a + (1 - p) * b
    dice = (symmetric_dice_loss if symmetric_dice else dice_loss)(p0, mask).mean()
    qg = qg_differentiable(a, b, fused, k).mean()
    terms = {"loss": dice + qg_weight * (1 - qg), "dice": dice, "qg": qg}
    if boundary_weight > 0:
        terms["boundary"] = boundary_dice_loss(p0, mask, boundary_width).mean()
        terms["loss"] = terms["loss"] + boundary_weight * terms["boundary"]
    return terms
