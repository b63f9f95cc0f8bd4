"""CPU kernels where oneDNN is slow: single-output convolutions as banded matrix products, few-channel
separable filters as shifted in-place additions."""

from __future__ import annotations

import torch

TAP_BAND_BYTES = 12 << 20  # rows of taps computed at once in conv_to_one_channel: stay in cache
# Up to this many channels, a separable filter runs as shifted in-place additions: oneDNN's depthwise
# convolutions are slow on few channels (one 1600x1200 plane: 87 ms as a 7-tap box sum, 5 ms shifted).
SHIFTED_MAX_CHANNELS = 4


def conv_to_one_channel(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The (1, C, k, k) zero-padded convolution of x (B, C, H, W), computed band by band of rows as one
    matrix product (every tap's channel sum at once) and k*k shifted plane additions.

    Equal to ``F.conv2d(x, weight, padding=k // 2)`` up to round-off, and 3-4x faster on CPU, where a
    convolution with a single output channel runs far below the machine's speed. Bands of rows keep
    the k*k tap planes in cache.
    """
    batch, channels, height, width = x.shape
    k = weight.shape[-1]
    r = k // 2
    tap_weights = weight[0].permute(1, 2, 0).reshape(k * k, channels)  # (taps, C)
    band = max(4 * r, 8, TAP_BAND_BYTES // (k * k * width * x.element_size()))  # halo rows <= half the band
    out = torch.zeros(batch, 1, height, width, dtype=x.dtype, device=x.device)
    for b in range(batch):
        # (C, H*W); a channels-last x is passed as a transposed view, without a copy
        pixels = x[b].reshape(channels, height * width) if x[b].is_contiguous() else \
            x[b].permute(1, 2, 0).reshape(height * width, channels).t()
        plane = out[b, 0]
        for y0 in range(0, height, band):
            y1 = min(height, y0 + band)
            t0, t1 = max(0, y0 - r), min(height, y1 + r)  # rows of taps this band reads
            taps = torch.matmul(tap_weights, pixels[:, t0 * width:t1 * width]).view(k * k, t1 - t0, width)
            for t in range(k * k):
                dy, dx = t // k - r, t % k - r  # out[y, x] += taps[t, y + dy, x + dx] inside the image
                ya, yb = max(y0, -dy), min(y1, height - dy)
                xa, xb = max(0, -dx), min(width, width - dx)
                if ya < yb and xa < xb:
                    plane[ya:yb, xa:xb] += taps[t, ya + dy - t0:yb + dy - t0, xa + dx:xb + dx]
    return out


def shifted_correlation(x: torch.Tensor, taps: list[float], dim: int) -> torch.Tensor:
    """Zero-padded 1-D correlation along ``dim`` with odd-length ``taps``: out[i] = sum_d taps[r+d] x[i+d]."""
    n, r = x.shape[dim], len(taps) // 2
    out = x * taps[r]
    for d in range(1, min(r, n - 1) + 1):
        out.narrow(dim, 0, n - d).add_(x.narrow(dim, d, n - d), alpha=taps[r + d])
        out.narrow(dim, d, n - d).add_(x.narrow(dim, 0, n - d), alpha=taps[r - d])
    return out


def shifted_separable_filter(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Rows then columns of shifted additions: the separable filter of :func:`ops.filters.separable_filter`."""
    values = taps.tolist()
    return shifted_correlation(shifted_correlation(x, values, -1), values, -2)
