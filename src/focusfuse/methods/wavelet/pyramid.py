"""Laplacian pyramids of (B, C, H, W) tensors: decompose and reconstruct (exact), on any device."""

from __future__ import annotations

import torch
import torch.nn.functional as F

BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)  # the 5-tap binomial low-pass (divided by 16)


def binomial_blur(x: torch.Tensor) -> torch.Tensor:
    """Separable 5-tap binomial blur of (B, C, H, W), borders replicated."""
    channels = x.shape[1]
    taps = torch.tensor(BINOMIAL, dtype=x.dtype, device=x.device) / 16.0
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), taps.view(1, 1, 1, 5).expand(channels, 1, 1, 5),
                 groups=channels)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), taps.view(1, 1, 5, 1).expand(channels, 1, 5, 1),
                    groups=channels)


def reduce(x: torch.Tensor) -> torch.Tensor:
    """Next coarser Gaussian level: blur, then every other row and column (the first one kept)."""
    return binomial_blur(x)[..., ::2, ::2]


def _double(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Twice as many samples along ``dim`` by linear interpolation (pixel centres, edges replicated):
    out[2i] = 3/4 x[i] + 1/4 x[i-1], out[2i+1] = 3/4 x[i] + 1/4 x[i+1]. Element-wise, so every output
    value is computed the same way whatever the size of ``x`` (tiles equal the whole image bit for bit)."""
    n = x.shape[dim]
    before = torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)], dim)
    after = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim)
    even, odd = 0.75 * x + 0.25 * before, 0.75 * x + 0.25 * after
    return torch.stack([even, odd], dim + 1).flatten(dim, dim + 1)


def expand(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Twice the size (bilinear, the pixel grid of :func:`reduce`), cropped to ``shape`` (H, W)."""
    return _double(_double(x, 2), 3)[..., :shape[0], :shape[1]]


def decompose(x: torch.Tensor, levels: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(details from fine to coarse, base): detail_l = G_l - expand(G_{l+1}), base = G_levels."""
    details = []
    for _ in range(levels):
        coarser = reduce(x)
        details.append(x - expand(coarser, x.shape[-2:]))
        x = coarser
    return details, x


def reconstruct(details: list[torch.Tensor], base: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`decompose`: G_l = detail_l + expand(G_{l+1})."""
    x = base
    for detail in reversed(details):
        x = detail + expand(x, detail.shape[-2:])
    return x


__all__ = ["binomial_blur", "reduce", "expand", "decompose", "reconstruct"]
