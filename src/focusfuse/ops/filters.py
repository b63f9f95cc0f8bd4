"""Small image filters on (B, C, H, W) tensors: box sums, Gaussian blur, guided filter.

Each is a plain function that reads like the formula; border handling is stated in the docstring
because it decides whether we reproduce the reference outputs. The filters built on a separable
correlation take it as ``separable`` (default :func:`separable_filter`), so a backend can pass a
faster one for its device (see :mod:`focusfuse.backends`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


SeparableFilter = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_taps(taps: torch.Tensor) -> None:
    """ValueError unless ``taps`` is 1-D of odd length."""
    if taps.dim() != 1 or taps.numel() % 2 == 0:
        raise ValueError(f"separable_filter needs 1-D taps of odd length, got shape {tuple(taps.shape)}")


def separable_filter(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Correlate every channel with ``taps`` (1-D, odd length, constants: no gradient flows to them) along
    rows, then along columns; zero padding. Output shaped like ``x``."""
    check_taps(taps)
    k, c = taps.numel(), x.shape[1]
    taps = taps.detach().to(dtype=x.dtype, device=x.device)
    x = F.conv2d(x, taps.view(1, 1, 1, k).expand(c, 1, 1, k), padding=(0, k // 2), groups=c)
    return F.conv2d(x, taps.view(1, 1, k, 1).expand(c, 1, k, 1), padding=(k // 2, 0), groups=c)


def _window_counts(height: int, width: int, radius: int, like: torch.Tensor) -> torch.Tensor:
    """Number of pixels inside the image in each window: the product of the row and column counts."""
    def counts(n: int) -> torch.Tensor:
        i = torch.arange(n, device=like.device)
        return (torch.clamp(i + radius, max=n - 1) - torch.clamp(i - radius, min=0) + 1).to(like.dtype)

    return counts(height)[:, None] * counts(width)[None, :]


def box_sum(x: torch.Tensor, radius: int, separable: SeparableFilter = separable_filter) -> torch.Tensor:
    """Sum over the (2r+1)x(2r+1) window centred on each pixel, zero padding outside the image."""
    return separable(x, torch.ones(2 * radius + 1, dtype=x.dtype, device=x.device))


def box_mean(x: torch.Tensor, radius: int, separable: SeparableFilter = separable_filter) -> torch.Tensor:
    """Mean over the (2r+1)x(2r+1) window, normalised by the number of pixels inside the image."""
    return box_sum(x, radius, separable) / _window_counts(x.shape[-2], x.shape[-1], radius, x)


def gaussian_kernel1d(size: int, sigma: float, *, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian of odd length ``size``."""
    half = (size - 1) / 2.0
    x = torch.arange(size, dtype=torch.float64) - half
    k = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_blur(x: torch.Tensor, size: int = 9, sigma: float = 8.0,
                  separable: SeparableFilter = separable_filter) -> torch.Tensor:
    """Separable normalised Gaussian blur, zero padding (as MATLAB ``imfilter`` default)."""
    return separable(x, gaussian_kernel1d(size, sigma, dtype=torch.float64))


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float,
                  separable: SeparableFilter = separable_filter) -> torch.Tensor:
    """Gray guided filter (He et al.): q = mean(a) * I + mean(b), box means border-normalised."""
    mean_i = box_mean(guide, radius, separable)
    mean_p = box_mean(src, radius, separable)
    cov_ip = box_mean(guide * src, radius, separable) - mean_i * mean_p
    var_i = box_mean(guide * guide, radius, separable) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius, separable) * guide + box_mean(b, radius, separable)


def gradient_energy(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel (f(y,x-1)-f(y,x))^2 + (f(y-1,x)-f(y,x))^2 with zero padding outside the image."""
    left = F.pad(x, (1, 0, 0, 0))[..., :, :-1]
    up = F.pad(x, (0, 0, 1, 0))[..., :-1, :]
    return (left - x).square() + (up - x).square()


def spatial_frequency(x: torch.Tensor, radius: int = 5, separable: SeparableFilter = separable_filter,
                      energy: Callable[[torch.Tensor], torch.Tensor] = gradient_energy) -> torch.Tensor:
    """Pixel-based spatial frequency: gradient energy summed over an 11x11 window (no root, no mean)."""
    return box_sum(energy(x), radius, separable)


__all__ = [
    "SeparableFilter",
    "check_taps",
    "separable_filter",
    "box_sum",
    "box_mean",
    "gaussian_kernel1d",
    "gaussian_blur",
    "guided_filter",
    "gradient_energy",
    "spatial_frequency",
]
