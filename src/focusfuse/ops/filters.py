"""Small image filters on (B, C, H, W) tensors: box sums, Gaussian blur, guided filter.

Each is a plain function that reads like the formula; border handling is stated in the docstring
because it decides whether we reproduce the reference outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


# Up to this many channels, a separable filter on CPU runs as shifted in-place additions: oneDNN's
# depthwise convolutions are slow on few channels (one 1600x1200 plane: 87 ms as a 7-tap box sum, 5 ms
# shifted). On CUDA the two convolutions stay: fewer kernel launches.
SHIFTED_MAX_CHANNELS = 4


def _shifted_correlation(x: torch.Tensor, taps: list[float], dim: int) -> torch.Tensor:
    """Zero-padded 1-D correlation along ``dim`` with odd-length ``taps``: out[i] = sum_d taps[r+d] x[i+d]."""
    n, r = x.shape[dim], len(taps) // 2
    out = x * taps[r]
    for d in range(1, min(r, n - 1) + 1):
        out.narrow(dim, 0, n - d).add_(x.narrow(dim, d, n - d), alpha=taps[r + d])
        out.narrow(dim, d, n - d).add_(x.narrow(dim, 0, n - d), alpha=taps[r - d])
    return out


def separable_filter(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Correlate every channel with ``taps`` (1-D, odd length, constants: no gradient flows to them) along
    rows, then along columns; zero padding. Output shaped like ``x``."""
    if taps.dim() != 1 or taps.numel() % 2 == 0:
        raise ValueError(f"separable_filter needs 1-D taps of odd length, got shape {tuple(taps.shape)}")
    k, c = taps.numel(), x.shape[1]
    if c <= SHIFTED_MAX_CHANNELS and x.device.type == "cpu":
        values = taps.tolist()
        return _shifted_correlation(_shifted_correlation(x, values, -1), values, -2)
    taps = taps.detach().to(dtype=x.dtype, device=x.device)
    x = F.conv2d(x, taps.view(1, 1, 1, k).expand(c, 1, 1, k), padding=(0, k // 2), groups=c)
    return F.conv2d(x, taps.view(1, 1, k, 1).expand(c, 1, k, 1), padding=(k // 2, 0), groups=c)


def _window_counts(height: int, width: int, radius: int, like: torch.Tensor) -> torch.Tensor:
    """Number of pixels inside the image in each window: the product of the row and column counts."""
    def counts(n: int) -> torch.Tensor:
        i = torch.arange(n, device=like.device)
        return (torch.clamp(i + radius, max=n - 1) - torch.clamp(i - radius, min=0) + 1).to(like.dtype)

    return counts(height)[:, None] * counts(width)[None, :]


def box_sum(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Sum over the (2r+1)x(2r+1) window centred on each pixel, zero padding outside the image."""
    return separable_filter(x, torch.ones(2 * radius + 1, dtype=x.dtype, device=x.device))


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the (2r+1)x(2r+1) window, normalised by the number of pixels inside the image."""
    return box_sum(x, radius) / _window_counts(x.shape[-2], x.shape[-1], radius, x)


def gaussian_kernel1d(size: int, sigma: float, *, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian of odd length ``size``."""
    half = (size - 1) / 2.0
    x = torch.arange(size, dtype=torch.float64) - half
    k = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_blur(x: torch.Tensor, size: int = 9, sigma: float = 8.0) -> torch.Tensor:
    """Separable normalised Gaussian blur, zero padding (as MATLAB ``imfilter`` default)."""
    return separable_filter(x, gaussian_kernel1d(size, sigma, dtype=torch.float64))


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
    "separable_filter",
    "box_sum",
    "box_mean",
    "gaussian_kernel1d",
    "gaussian_blur",
    "guided_filter",
    "gradient_energy",
    "spatial_frequency",
]
