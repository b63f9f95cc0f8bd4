"""Small image filters on (B, C, H, W) tensors: box sums, Gaussian blur, guided filter.

Each is a plain function that reads like the formula; border handling is stated in the docstring
because it decides whether we reproduce the reference outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _separable_sum(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Window sum as a row pass then a column pass of depthwise ones-kernels (zero padding)."""
    k, c = 2 * radius + 1, x.shape[1]
    ones = torch.ones(1, 1, 1, 1, dtype=x.dtype, device=x.device)
    x = F.conv2d(x, ones.expand(c, 1, 1, k), padding=(0, radius), groups=c)
    return F.conv2d(x, ones.expand(c, 1, k, 1), padding=(radius, 0), groups=c)


def _window_counts(height: int, width: int, radius: int, like: torch.Tensor) -> torch.Tensor:
    """Number of pixels inside the image in each window: the product of the row and column counts."""
    def counts(n: int) -> torch.Tensor:
        i = torch.arange(n, device=like.device)
        return (torch.clamp(i + radius, max=n - 1) - torch.clamp(i - radius, min=0) + 1).to(like.dtype)

    return counts(height)[:, None] * counts(width)[None, :]


def box_sum(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Sum over the (2r+1)x(2r+1) window centred on each pixel, zero padding outside the image."""
    return _separable_sum(x, radius)


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the (2r+1)x(2r+1) window, normalised by the number of pixels inside the image."""
    return _separable_sum(x, radius) / _window_counts(x.shape[-2], x.shape[-1], radius, x)


def gaussian_kernel1d(size: int, sigma: float, *, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian of odd length ``size``."""
    half = (size - 1) / 2.0
    x = torch.arange(size, dtype=torch.float64) - half
    k = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_blur(x: torch.Tensor, size: int = 9, sigma: float = 8.0) -> torch.Tensor:
    """Separable normalised Gaussian blur, zero padding (as MATLAB ``imfilter`` default)."""
    c = x.shape[1]
    k = gaussian_kernel1d(size, sigma, dtype=x.dtype, device=x.device)
    pad = size // 2
    kx = k.view(1, 1, 1, size).expand(c, 1, 1, size)
    ky = k.view(1, 1, size, 1).expand(c, 1, size, 1)
    x = F.conv2d(x, kx, padding=(0, pad), groups=c)
    return F.conv2d(x, ky, padding=(pad, 0), groups=c)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """Gray guided filter (He et al.): q = mean(a) * I + mean(b), box means border-normalised."""
    mean_i = box_mean(guide, radius)
    mean_p = box_mean(src, radius)
    cov_ip = box_mean(guide * src, radius) - mean_i * mean_p
    var_i = box_mean(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius) * guide + box_mean(b, radius)


def gradient_energy(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel (f(y,x-1)-f(y,x))^2 + (f(y-1,x)-f(y,x))^2 with zero padding outside the image."""
    if torch.is_grad_enabled() and x.requires_grad:
        left = F.pad(x, (1, 0, 0, 0))[..., :, :-1]
        up = F.pad(x, (0, 0, 1, 0))[..., :-1, :]
        return (left - x).square() + (up - x).square()
    # inference: the same differences written in place, in x's memory format (about twice as fast)
    across, down = torch.empty_like(x), torch.empty_like(x)
    across[..., :, 0] = x[..., :, 0]  # the neighbour outside the image is 0
    torch.sub(x[..., :, 1:], x[..., :, :-1], out=across[..., :, 1:])
    down[..., 0, :] = x[..., 0, :]
    torch.sub(x[..., 1:, :], x[..., :-1, :], out=down[..., 1:, :])
    return across.square_().add_(down.square_())


def spatial_frequency(x: torch.Tensor, radius: int = 5) -> torch.Tensor:
    """Pixel-based spatial frequency: gradient energy summed over an 11x11 window (no root, no mean)."""
    return box_sum(gradient_energy(x), radius)


__all__ = [
    "box_sum",
    "box_mean",
    "gaussian_kernel1d",
    "gaussian_blur",
    "guided_filter",
    "gradient_energy",
    "spatial_frequency",
]
