"""Objective quality metrics for multi-focus image fusion.

All metrics take 2-D float arrays on the 0..255 scale (see :func:`to_gray_matlab`) and return a
Python ``float``. The two-source functions reproduce the public MATLAB reference code (Liu's
``imageFusionMetrics`` toolbox and Haghighat's fast ``fmi.m``) to round-off:

``qg``     Xydeas & Petrovic gradient metric Q^{AB/F} as in ``metricXydeas.m``: the MEAN over all pixels
           of ``sum_S Q_SF*W_S / sum_S W_S`` (not the paper's global ratio), Sobel correlation with zero
           padding, ``atan(gy/gx)`` orientation, and the reference's ``+1e-5`` guards on zero gradients
           exactly where it adds them (the guard on the fused gradient is applied once, after the first
           source has used the unguarded value).
``qy``     Yang's SSIM-based metric (``metricYang.m``): 7x7 Gaussian (sigma 1.5) 'valid' statistics,
           C1 = C2 = 2e-16. Windows that are exactly constant get variance and covariance 0 (instead of
           round-off) and lambda = 0.5 where both sources are constant.
``qcb``    Chen-Blum metric (``metricChenBlum.m``): per-image normalisation to integer 0..255, the DoG
           contrast-sensitivity filter in the frequency domain (complex result kept), local contrast with
           31x31 Gaussians (sigma 2 and 4, zero padding), p=3, q=2, Z=1e-4.
``qncie``  Wang's nonlinear correlation information entropy (``metricWang.m`` with ``NCC.m``): 256-bin
           joint histograms of the 0..255-normalised, rounded images; eigenvalues of the NCC matrix.
``fmi``    Haghighat's fast feature mutual information (``fmi.m``), sliding w x w windows, features
           ``'edge'`` (MATLAB ``edge(I)``: Sobel, threshold ``4*mean(mag^2)``, MATLAB's thinning),
           ``'dct'`` (orthonormal ``dct2`` of the whole image, as ``fmi.m`` computes it) or ``'none'``.
           Window patches are read in MATLAB's column-major order, the Pearson mean is a strict
           left-to-right sum (as Octave does; it decides the branch for two constant patches) and the
           fused patch is compared to the second source after the first source normalised it, as the
           reference does (so with ``'none'`` features the value can depend on the source order; with
           ``'edge'``/``'dct'`` features it does not, to round-off).
``psnr``   ``10*log10(peak^2/MSE)``; ``inf`` for identical images.
``ssim``   Wang's ``ssim_index.m``: 11x11 Gaussian (sigma 1.5), K = (0.01, 0.03), L = 255, mean of the
           SSIM map over the 'valid' region.

Multi-source generalisations (``*_multi(sources, fused)``, N >= 2 sources; for N = 2 each one is the very
code path the two-source function uses, so it reduces exactly to the reference):

``qg_multi``    per pixel ``sum_S Q_SF*W_S / sum_S W_S`` over all sources, then the mean.
``qy_multi``    where every pair of sources is locally similar (SSIM >= 0.75) the local-variance weighted
                mean ``sum_S var_S*SSIM(S,F) / sum_S var_S`` (equal weights where all sources are
                constant), elsewhere ``max_S SSIM(S,F)``.
``qcb_multi``   saliency weights ``C_S^2 / sum_T C_T^2`` over all sources.
``qncie_multi`` the (N+1)x(N+1) NCC matrix of the sources and the fused image, K = N+1.
``fmi_multi``   per window the mean over sources of FMI(S, F), then the mean over windows (the fused patch
                keeps fmi.m's normalise-once state across the sources).

Degenerate inputs the reference leaves undefined (it would return NaN) are given a defined value here:
``qcb`` gives an all-zero (e.g. constant) image zero local contrast, treats a 0/0 preservation ratio
as 1 and uses equal saliency where all sources have zero contrast;
``qncie`` maps a constant image to all zeros before the histogram; ``qncie`` ignores eigenvalues <= 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray
from scipy import fft as sp_fft

Image = NDArray[np.float64]

METRIC_NAMES: tuple[str, ...] = ("Qg", "Qy", "Qcb", "Qncie", "FMI_edge", "FMI_dct")
FULL_REFERENCE_METRIC_NAMES: tuple[str, ...] = ("PSNR", "SSIM")

RGB2GRAY_WEIGHTS: tuple[float, float, float] = (0.298936021293775, 0.587043074451121, 0.114020904255103)
UINT16_PER_UINT8_LEVEL = 257.0  # 65535 / 255

_GUARD = 0.00001  # the reference's additive guard against zero gradients
_FMI_FEATURES = ("edge", "dct", "none")
_FMI_BATCH = 4096  # windows per vectorised batch (keeps the l*l temporaries in cache)
_FMI_MAX_CODED_PIXELS = 25  # binary windows up to 5x5 are de-duplicated via integer codes


# --------------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------------


def round_half_away(x: ArrayLike) -> Image:
    """MATLAB ``round``: to the nearest integer, halves away from zero (exact for all doubles)."""
    values = np.asarray(x, dtype=np.float64)
    whole = np.trunc(values)
    return whole + np.copysign((np.abs(values - whole) >= 0.5).astype(np.float64), values)


def to_gray_matlab(img: ArrayLike) -> Image:
    """Convert an image to a 2-D float64 gray image on the 0..255 scale, as MATLAB ``rgb2gray`` does.

    * 2-D input passes through as float64 (uint16 divided by 257, bool mapped to 0/255).
    * Colour (H, W, 3) or (H, W, 4; alpha dropped): ``0.298936021293775 R + 0.587043074451121 G +
      0.114020904255103 B``. For uint8 the result is rounded half away from zero to an integer level
      (MATLAB's uint8 ``rgb2gray``). For uint16 it is rounded to an integer 16-bit level (MATLAB's uint16
      ``rgb2gray``) and then divided by 257 onto 0..255. Float colour is assumed to be on 0..255 already
      and is not rounded (MATLAB's double ``rgb2gray``).
    * (H, W, 1) and gray + alpha (H, W, 2) use their first channel.
    """
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] in (1, 2):
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"expected a 2-D gray or an (H, W, 3|4) colour image, got shape {arr.shape}")
    dtype = arr.dtype
    if dtype == np.bool_:
        arr = arr.astype(np.uint8) * np.uint8(255)
        dtype = arr.dtype
    if dtype not in (np.uint8, np.uint16) and not np.issubdtype(dtype, np.floating):
        raise TypeError(f"unsupported image dtype {dtype} (use uint8, uint16 or float)")
    if arr.ndim == 2:
        gray = arr.astype(np.float64)
    else:
        gray = _rgb_to_gray(arr[:, :, :3].astype(np.float64))
        if dtype in (np.uint8, np.uint16):
            gray = round_half_away(gray)
    if dtype == np.uint16:
        gray = gray / UINT16_PER_UINT8_LEVEL
    return gray


def _rgb_to_gray(rgb: Image) -> Image:
    red_w, green_w, blue_w = RGB2GRAY_WEIGHTS
    return (red_w * rgb[:, :, 0] + green_w * rgb[:, :, 1]) + blue_w * rgb[:, :, 2]


def _as_image(img: ArrayLike, what: str) -> Image:
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D gray image, got shape {arr.shape}")
    return arr


def _prepare(sources: Sequence[ArrayLike], fused: ArrayLike, min_size: int = 1) -> tuple[list[Image], Image]:
    """Validate a source set and a fused image: 2-D, >= 2 sources, equal shapes, minimum size."""
    source_list = [_as_image(s, f"source {i + 1}") for i, s in enumerate(sources)]
    if len(source_list) < 2:
        raise ValueError(f"need at least 2 source images, got {len(source_list)}")
    fused_img = _as_image(fused, "fused image")
    for i, src in enumerate(source_list):
        if src.shape != fused_img.shape:
            raise ValueError(f"source {i + 1} has shape {src.shape}, fused image has {fused_img.shape}")
    if min(fused_img.shape) < min_size:
        height, width = fused_img.shape
        raise ValueError(f"images must be at least {min_size}x{min_size}, got {width}x{height}")
    return source_list, fused_img


# --------------------------------------------------------------------------------------------------
# Small filtering helpers
# --------------------------------------------------------------------------------------------------


def _sobel_sums(padded: Image) -> tuple[Image, Image, Image, Image]:
    """Weighted (1, 2, 1) column/row sums around each pixel of a 1-pixel padded image.

    Returns (left, right, top, bottom): the sums over the left column, right column, top row and bottom
    row of each 3x3 neighbourhood.
    """
    left = padded[:-2, :-2] + 2 * padded[1:-1, :-2] + padded[2:, :-2]
    right = padded[:-2, 2:] + 2 * padded[1:-1, 2:] + padded[2:, 2:]
    top = padded[:-2, :-2] + 2 * padded[:-2, 1:-1] + padded[:-2, 2:]
    bottom = padded[2:, :-2] + 2 * padded[2:, 1:-1] + padded[2:, 2:]
    return left, right, top, bottom


def _gaussian_taps(size: int, sigma: float) -> NDArray[np.float64]:
    """1-D factor of MATLAB ``fspecial('gaussian', size, sigma)`` (normalised to sum 1)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    taps = np.exp(-(x * x) / (2 * sigma * sigma))
    return taps / taps.sum()


def _filter_valid(img: Image, taps: NDArray[np.float64]) -> Image:
    """Separable correlation with ``outer(taps, taps)`` over the 'valid' region (``filter2(..., 'valid')``)."""
    k = taps.size
    rows_out, cols_out = img.shape[0] - k + 1, img.shape[1] - k + 1
    along_rows = taps[0] * img[0:rows_out, :]
    for t in range(1, k):
        along_rows = along_rows + taps[t] * img[t : t + rows_out, :]
    out = taps[0] * along_rows[:, 0:cols_out]
    for t in range(1, k):
        out = out + taps[t] * along_rows[:, t : t + cols_out]
    return out


def _is_constant_valid(img: Image, size: int) -> NDArray[np.bool_]:
    """True where the size x size window ('valid' positions) holds one single value."""
    rows_out, cols_out = img.shape[0] - size + 1, img.shape[1] - size + 1
    col_max = img[0:rows_out, :].copy()
    col_min = col_max.copy()
    for t in range(1, size):
        np.maximum(col_max, img[t : t + rows_out, :], out=col_max)
        np.minimum(col_min, img[t : t + rows_out, :], out=col_min)
    win_max = col_max[:, 0:cols_out].copy()
    win_min = col_min[:, 0:cols_out].copy()
    for t in range(1, size):
        np.maximum(win_max, col_max[:, t : t + cols_out], out=win_max)
        np.minimum(win_min, col_min[:, t : t + cols_out], out=win_min)
    return win_max == win_min


# --------------------------------------------------------------------------------------------------
# Q_g (Xydeas & Petrovic)
# --------------------------------------------------------------------------------------------------


def _gradient_strength_and_angle(img: Image) -> tuple[Image, Image]:
    """Sobel magnitude and ``atan(gy/gx)`` as ``metricXydeas.m`` (correlation, zero padding)."""
    left, right, top, bottom = _sobel_sums(np.pad(img, 1))
    grad_x = right - left
    grad_y = bottom - top
    strength = np.sqrt(grad_x * grad_x + grad_y * grad_y)
    guarded_x = grad_x + (grad_x == 0) * _GUARD
    return strength, np.arctan(grad_y / guarded_x)


def _edge_preservation(strength_ratio: Image, angle_change: Image) -> Image:
    """Q_SF = Q_g * Q_alpha with Gamma 1, k_g -10, sigma_g 0.5, k_a -20, sigma_a 0.75."""
    q_strength = 1.0 / (1 + np.exp(-10 * (strength_ratio - 0.5)))
    q_angle = 1.0 / (1 + np.exp(-20 * (angle_change - 0.75)))
    return q_strength * q_angle


def _qg_sums(sources: Sequence[ArrayLike], fused: ArrayLike) -> tuple[Image, Image]:
    """Per-pixel ``sum_S Q_SF*W_S`` and ``sum_S W_S`` (W_S = source gradient strength, L = 1)."""
    source_list, fused_img = _prepare(sources, fused)
    fused_strength, fused_angle = _gradient_strength_and_angle(fused_img)
    weighted_sum = np.zeros_like(fused_img)
    weight_sum = np.zeros_like(fused_img)
    for src in source_list:
        strength, angle = _gradient_strength_and_angle(src)
        source_stronger = strength > fused_strength
        strength = strength + (strength == 0) * _GUARD
        fused_over_source = fused_strength / strength
        fused_strength = fused_strength + (fused_strength == 0) * _GUARD
        source_over_fused = strength / fused_strength
        strength_ratio = np.where(source_stronger, fused_over_source, source_over_fused)
        angle_change = np.abs(np.abs(angle - fused_angle) - np.pi / 2) * 2 / np.pi
        weighted_sum = weighted_sum + _edge_preservation(strength_ratio, angle_change) * strength
        weight_sum = weight_sum + strength
    return weighted_sum, weight_sum


def qg_multi(sources: Sequence[ArrayLike], fused: ArrayLike) -> float:
    """Gradient-based fusion metric Q^{S/F} of Xydeas & Petrovic for N >= 2 sources."""
    weighted_sum, weight_sum = _qg_sums(sources, fused)
    return float(np.mean(weighted_sum / weight_sum))


def qg(a: ArrayLike, b: ArrayLike, f: ArrayLike) -> float:
    """Q_g of fused ``f`` from sources ``a`` and ``b`` (``metricXydeas.m``)."""
    return qg_multi([a, b], f)


def qg_global(a: ArrayLike, b: ArrayLike, f: ArrayLike) -> float:
    """Q_g pooled as the paper's Eq. 17, ``sum(Q_AF*W_A + Q_BF*W_B) / sum(W_A + W_B)`` (the training loss form)."""
    weighted_sum, weight_sum = _qg_sums([a, b], f)
    return float(weighted_sum.sum() / weight_sum.sum())


# --------------------------------------------------------------------------------------------------
# Q_y (Yang et al.)
# --------------------------------------------------------------------------------------------------

_YANG_WINDOW = 7
_YANG_SIGMA = 1.5
_YANG_C = 2e-16
_YANG_SIMILAR = 0.75


class _LocalStats:
    """Local 'valid' Gaussian means and variances of one image; constant windows get variance 0."""

    def __init__(self, img: Image, taps: NDArray[np.float64]) -> None:
        self.img = img
        self.mean = _filter_valid(img, taps)
        self.constant = _is_constant_valid(img, taps.size)
        variance = _filter_valid(img * img, taps) - self.mean * self.mean
        self.variance = np.where(self.constant, 0.0, variance)


def _covariance(x: _LocalStats, y: _LocalStats, taps: NDArray[np.float64]) -> Image:
    covariance = _filter_valid(x.img * y.img, taps) - x.mean * y.mean
    return np.where(x.constant | y.constant, 0.0, covariance)


def _ssim_yang(x: _LocalStats, y: _LocalStats, taps: NDArray[np.float64]) -> Image:
    """SSIM map of ``ssim_yang`` in ``metricYang.m`` (C1 = C2 = 2e-16)."""
    numerator = (2 * (x.mean * y.mean) + _YANG_C) * (2 * _covariance(x, y, taps) + _YANG_C)
    denominator = (x.mean * x.mean + y.mean * y.mean + _YANG_C) * (x.variance + y.variance + _YANG_C)
    return numerator / denominator


def _variance_weights(stats: Sequence[_LocalStats]) -> list[Image]:
    total = stats[0].variance
    for s in stats[1:]:
        total = total + s.variance
    all_constant = total == 0
    safe_total = np.where(all_constant, 1.0, total)
    equal = 1.0 / len(stats)
    return [np.where(all_constant, equal, s.variance / safe_total) for s in stats]


def qy_multi(sources: Sequence[ArrayLike], fused: ArrayLike) -> float:
    """Yang's SSIM-based fusion metric for N >= 2 sources (images at least 11x11, as the reference)."""
    source_list, fused_img = _prepare(sources, fused, min_size=11)
    taps = _gaussian_taps(_YANG_WINDOW, _YANG_SIGMA)
    source_stats = [_LocalStats(s, taps) for s in source_list]
    fused_stats = _LocalStats(fused_img, taps)

    similar = np.ones(fused_stats.mean.shape, dtype=bool)
    for i, si in enumerate(source_stats):
        for sj in source_stats[i + 1 :]:
            similar &= _ssim_yang(si, sj, taps) >= _YANG_SIMILAR

    to_fused = [_ssim_yang(s, fused_stats, taps) for s in source_stats]
    weighted = np.zeros_like(fused_stats.mean)
    for weight, ssim_map in zip(_variance_weights(source_stats), to_fused):
        weighted = weighted + weight * ssim_map
    best = np.maximum.reduce(to_fused)
    return float(np.mean(np.where(similar, weighted, best)))


def qy(a: ArrayLike, b: ArrayLike, f: ArrayLike) -> float:
    """Yang's Q_y of fused ``f`` from sources ``a`` and ``b`` (``metricYang.m``)."""
    return qy_multi([a, b], f)


# --------------------------------------------------------------------------------------------------
# Q_cb (Chen & Blum)
# --------------------------------------------------------------------------------------------------

_CB_F0 = 15.3870
_CB_F1 = 1.3456
_CB_A = 0.7622
_CB_P = 3
_CB_Q = 2
_CB_Z = 0.0001
_CB_SIGMAS = (2.0, 4.0)
_CB_HALF = 15  # the local-contrast Gaussians are 31x31


def normalize_to_levels(img: Image) -> Image:
    """``normalize1.m``: stretch to 0..255 and round to integer levels (constant images become 0)."""
    lo, hi = float(img.min()), float(img.max())
    if hi == lo:
        return np.zeros_like(img) if lo != 0 else img.copy()
    return round_half_away((img - lo) / (hi - lo) * 255)


def _matlab_freqspace(n: int) -> NDArray[np.float64]:
    """One axis of MATLAB ``freqspace``: ``((0:n-1) - floor(n/2)) * (2/n)``."""
    return (np.arange(n, dtype=np.float64) - n // 2) * (2 / n)


def _csf_response(shape: tuple[int, int]) -> Image:
    """The DoG contrast-sensitivity response ``Sd`` of ``metricChenBlum.m`` (centred spectrum)."""
    rows, cols = shape
    u = (cols / 30) * _matlab_freqspace(cols)[None, :]
    v = (rows / 30) * _matlab_freqspace(rows)[:, None]
    radius = np.sqrt(u**2 + v**2)
    return np.exp(-((radius / _CB_F0) ** 2)) - _CB_A * np.exp(-((radius / _CB_F1) ** 2))


def _contrast_kernel(sigma: float) -> Image:
    """The unnormalised 31x31 Gaussian of ``gaussian2d`` in ``metricChenBlum.m``."""
    x = np.arange(-_CB_HALF, _CB_HALF + 1, dtype=np.float64)
    squared_radius = x[None, :] ** 2 + x[:, None] ** 2
    return np.exp(-squared_radius / (2 * sigma * sigma)) / (2 * np.pi * sigma * sigma)


def _local_contrast_response(img: Image) -> Image:
    """``C^p / (C^q + Z)`` with ``C = |G2-filtered / G4-filtered - 1|`` of the CSF-filtered image."""
    rows, cols = img.shape
    spectrum = sp_fft.fft2(img) * np.fft.ifftshift(_csf_response(img.shape))
    filtered = sp_fft.ifft2(spectrum)  # complex, as in the reference
    full_shape = (sp_fft.next_fast_len(rows + 2 * _CB_HALF), sp_fft.next_fast_len(cols + 2 * _CB_HALF))
    padded_spectrum = sp_fft.fft2(filtered, full_shape)
    narrow, wide = (_same_convolution(padded_spectrum, _contrast_kernel(s), img.shape) for s in _CB_SIGMAS)
    no_signal = wide == 0  # only for an all-zero image; the reference divides 0 by 0 there
    contrast = np.where(no_signal, 0.0, np.abs(narrow / np.where(no_signal, 1.0, wide) - 1))
    return contrast**_CB_P / (contrast**_CB_Q + _CB_Z)


def _same_convolution(padded_spectrum: NDArray, kernel: Image, shape: tuple[int, int]) -> NDArray:
    """Zero-padded 'same' convolution (= correlation for a symmetric kernel) through the FFT."""
    full = sp_fft.ifft2(padded_spectrum * sp_fft.fft2(kernel, padded_spectrum.shape))
    return full[_CB_HALF : _CB_HALF + shape[0], _CB_HALF : _CB_HALF + shape[1]]


def _contrast_preservation(source_response: Image, fused_response: Image) -> Image:
    """min/max ratio of two contrast responses (1 where both are 0)."""
    low = np.minimum(source_response, fused_response)
    high = np.maximum(source_response, fused_response)
    return np.where(high == 0, 1.0, low / np.where(high == 0, 1.0, high))


def qcb_multi(sources: Sequence[ArrayLike], fused: ArrayLike) -> float:
    """Chen-Blum perceptual fusion metric for N >= 2 sources."""
    source_list, fused_img = _prepare(sources, fused)
    fused_response = _local_contrast_response(normalize_to_levels(fused_img))
    responses = [_local_contrast_response(normalize_to_levels(s)) for s in source_list]
    saliency = [r * r for r in responses]
    total = saliency[0]
    for s in saliency[1:]:
        total = total + s
    no_contrast = total == 0
    safe_total = np.where(no_contrast, 1.0, total)
    quality = np.zeros_like(fused_img)
    for response, sal in zip(responses, saliency):
        weight = np.where(no_contrast, 1.0 / len(responses), sal / safe_total)
        quality = quality + weight * _contrast_preservation(response, fused_response)
    return float(np.mean(quality))


def qcb(a: ArrayLike, b: ArrayLike, f: ArrayLike) -> float:
    """Chen-Blum Q_cb of fused ``f`` from sources ``a`` and ``b`` (``metricChenBlum.m``)."""
    return qcb_multi([a, b], f)


# --------------------------------------------------------------------------------------------------
# Q_ncie (Wang)
# --------------------------------------------------------------------------------------------------

_NCIE_BINS = 256


def _entropy_bits(prob: NDArray[np.float64]) -> float:
    nonzero = prob[prob > 0]
    return float(-np.sum(nonzero * np.log2(nonzero)))


def _nonlinear_correlation(x_levels: NDArray[np.int64], y_levels: NDArray[np.int64]) -> float:
    """``NCC.m``: normalised (base-256) marginal entropies minus the joint entropy."""
    counts = np.bincount((x_levels * _NCIE_BINS + y_levels).ravel(), minlength=_NCIE_BINS * _NCIE_BINS)
    joint = counts.reshape(_NCIE_BINS, _NCIE_BINS) / counts.sum()
    log_bins = np.log2(_NCIE_BINS)
    h_x = _entropy_bits(joint.sum(axis=1)) / log_bins
    h_y = _entropy_bits(joint.sum(axis=0)) / log_bins
    h_xy = _entropy_bits(joint) / log_bins
    return h_x + h_y - h_xy


def qncie_multi(sources: Sequence[ArrayLike], fused: ArrayLike) -> float:
    """Nonlinear correlation information entropy over the N sources and the fused image."""
    source_list, fused_img = _prepare(sources, fused)
    levels = [normalize_to_levels(img).astype(np.int64) for img in [*source_list, fused_img]]
    count = len(levels)
    correlation = np.eye(count)
    for i in range(count):
        for j in range(i + 1, count):
            correlation[i, j] = correlation[j, i] = _nonlinear_correlation(levels[i], levels[j])
    eigenvalues = np.linalg.eigvalsh(correlation)
    eigenvalues = eigenvalues[eigenvalues > 0]
    entropy = -np.sum(eigenvalues * np.log2(eigenvalues / count) / count) / np.log2(_NCIE_BINS)
    return float(1 - entropy)


def qncie(a: ArrayLike, b: ArrayLike, f: ArrayLike) -> float:
    """Q_ncie of fused ``f`` from sources ``a`` and ``b`` (``metricWang.m``)."""
    return qncie_multi([a, b], f)


# --------------------------------------------------------------------------------------------------
# FMI (Haghighat, fast FMI)
# --------------------------------------------------------------------------------------------------


def matlab_sobel_edges(img: ArrayLike) -> NDArray[np.bool_]:
    """MATLAB ``edge(I)`` default: Sobel with automatic threshold and MATLAB's edge thinning.

    Gradients ``imfilter(I, fspecial('sobel')'/8, 'replicate')`` (x) and ``imfilter(I, fspecial('sobel')/8,
    'replicate')`` (y); ``b = bx^2 + by^2``; cutoff ``4*mean(b)``. A pixel is an edge when ``b > cutoff``
    and it is a horizontal local maximum (``left <= b > right``) where ``|bx| >= |by| - 100*eps``, or a
    vertical one (``up <= b > down``) where ``|by| >= |bx| - 100*eps``; neighbours outside the image pass.
    """
    image = _as_image(img, "image")
    left, right, top, bottom = _sobel_sums(np.pad(image, 1, mode="edge"))
    grad_x = np.abs((left - right) / 8)
    grad_y = np.abs((top - bottom) / 8)
    magnitude = grad_x * grad_x + grad_y * grad_y
    cutoff = 4 * magnitude.mean()
    tolerance = 100 * np.finfo(np.float64).eps

    left_ok, right_ok, up_ok, down_ok = (np.ones(magnitude.shape, dtype=bool) for _ in range(4))
    left_ok[:, 1:] = magnitude[:, :-1] <= magnitude[:, 1:]
    right_ok[:, :-1] = magnitude[:, :-1] > magnitude[:, 1:]
    up_ok[1:, :] = magnitude[:-1, :] <= magnitude[1:, :]
    down_ok[:-1, :] = magnitude[:-1, :] > magnitude[1:, :]
    horizontal_max = (grad_x >= grad_y - tolerance) & left_ok & right_ok
    vertical_max = (grad_y >= grad_x - tolerance) & up_ok & down_ok
    return (magnitude > cutoff) & (horizontal_max | vertical_max)


def _fmi_feature(img: Image, feature: str) -> Image:
    if feature == "edge":
        return matlab_sobel_edges(img).astype(np.float64)
    if feature == "dct":
        return sp_fft.dctn(img, type=2, norm="ortho")
    return img


def _column_major_windows(feature: Image, size: int) -> Image:
    """All size x size windows, one per row, each flattened in MATLAB's column-major order."""
    windows = sliding_window_view(feature, (size, size)).swapaxes(-1, -2)
    return windows.reshape(-1, size * size)


def _normalize_windows(windows: Image) -> Image:
    """``fmi.m`` patch normalisation: ``(x - min)/(max - min)``, all ones for a constant patch."""
    lo = windows.min(axis=1, keepdims=True)
    hi = windows.max(axis=1, keepdims=True)
    flat = hi == lo
    scaled = (windows - lo) / np.where(flat, 1.0, hi - lo)
    return np.where(flat, 1.0, scaled)


def _sequential_mean(values: Image) -> NDArray[np.float64]:
    """Row means with a strict left-to-right sum (Octave's ``mean``), which decides a branch in ``fmi.m``."""
    total = values[:, 0].copy()
    for k in range(1, values.shape[1]):
        total += values[:, k]
    return total / values.shape[1]


def _neg_xlog2x_sum(values: NDArray[np.float64], axes: int | tuple[int, ...]) -> NDArray[np.float64]:
    """``sum(real(-x .* log2(x)))`` over non-zero x (negative x contribute ``-x*log2|x|``)."""
    logs = np.abs(values)
    np.maximum(logs, np.finfo(np.float64).tiny, out=logs)  # x == 0 then adds 0 * finite
    np.log2(logs, out=logs)
    logs *= values
    return -np.sum(logs, axis=axes)


def _previous_cdf(cdf: Image) -> Image:
    """CDF shifted by one position (the value before each step), starting at 0."""
    shifted = np.zeros_like(cdf)
    shifted[:, 1:] = cdf[:, :-1]
    return shifted


def _upper_frechet(cdf_f: Image, cdf_s: Image) -> tuple[NDArray[np.float64], Image]:
    """Sum of ``min(F_i, S_j)`` over the grid and the probability mass of that (comonotone) bound.

    The mass at (i, j) is the overlap of ``[F_{i-1}, F_i]`` and ``[S_{j-1}, S_j]``, i.e. the 2-D difference
    of ``min(F_i, S_j)`` that ``fmi.m`` accumulates term by term.
    """
    bivariate = np.minimum(cdf_f[:, :, None], cdf_s[:, None, :])
    lower_ends = np.maximum(_previous_cdf(cdf_f)[:, :, None], _previous_cdf(cdf_s)[:, None, :])
    mass = bivariate - lower_ends
    np.maximum(mass, 0.0, out=mass)
    return bivariate.sum(axis=(1, 2)), mass


def _lower_frechet(cdf_f: Image, cdf_s: Image) -> tuple[NDArray[np.float64], Image]:
    """Sum of ``max(F_i + S_j - 1, 0)`` and the mass of that (countermonotone) bound.

    The mass at (i, j) is the overlap of ``[F_{i-1}, F_i]`` and ``[1 - S_j, 1 - S_{j-1}]``.
    """
    bivariate = np.maximum(cdf_f[:, :, None] + cdf_s[:, None, :] - 1, 0.0)
    upper_ends = np.minimum(cdf_f[:, :, None], 1 - _previous_cdf(cdf_s)[:, None, :])
    lower_ends = np.maximum(_previous_cdf(cdf_f)[:, :, None], 1 - cdf_s[:, None, :])
    mass = upper_ends - lower_ends
    np.maximum(mass, 0.0, out=mass)
    return bivariate.sum(axis=(1, 2)), mass


FrechetBound = Callable[[Image, Image], tuple[NDArray[np.float64], Image]]


def _joint_entropy(
    bound: FrechetBound,
    pdf_f: Image,
    pdf_s: Image,
    correlation: NDArray[np.float64],
    sd_f: NDArray[np.float64],
    sd_s: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Joint entropy of the simplified Nelsen mix ``phi*bound + (1 - phi)*independence``."""
    cdf_f = np.cumsum(pdf_f, axis=1)
    cdf_s = np.cumsum(pdf_s, axis=1)
    bivariate_sum, joint_pdf = bound(cdf_f, cdf_s)
    covariance = bivariate_sum - cdf_f.sum(axis=1) * cdf_s.sum(axis=1)
    degenerate = (correlation == 0) | (sd_f == 0) | (sd_s == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mix = np.where(degenerate, 0.0, correlation / (covariance / (sd_f * sd_s)))
    joint_pdf *= mix[:, None, None]
    independent = pdf_f[:, :, None] * pdf_s[:, None, :]
    independent *= (1 - mix)[:, None, None]
    joint_pdf += independent
    return _neg_xlog2x_sum(joint_pdf, (1, 2))


def _pdf_std(pdf: Image) -> NDArray[np.float64]:
    """Population standard deviation of positions 1..l under ``pdf``."""
    positions = np.arange(1, pdf.shape[1] + 1, dtype=np.float64)
    mean = pdf @ positions
    second = pdf @ (positions * positions)
    return np.sqrt(np.maximum(second - mean * mean, 0.0))


def _window_fmi(source_norm: Image, fused_norm: Image) -> NDArray[np.float64]:
    """Normalised feature MI of normalised window patches (rows), the non-identical branch of ``fmi.m``."""
    pdf_s = source_norm / source_norm.sum(axis=1, keepdims=True)
    pdf_f = fused_norm / fused_norm.sum(axis=1, keepdims=True)
    centred_s = pdf_s - _sequential_mean(pdf_s)[:, None]
    centred_f = pdf_f - _sequential_mean(pdf_f)[:, None]
    cross = np.sum(centred_s * centred_f, axis=1)
    norms = np.sqrt(np.sum(centred_s * centred_s, axis=1) * np.sum(centred_f * centred_f, axis=1))
    correlation = np.where(cross == 0, 0.0, cross / np.where(cross == 0, 1.0, norms))
    sd_s, sd_f = _pdf_std(pdf_s), _pdf_std(pdf_f)

    joint = np.empty(len(correlation))
    upper = correlation >= 0
    for mask, bound in ((upper, _upper_frechet), (~upper, _lower_frechet)):
        if mask.any():
            joint[mask] = _joint_entropy(bound, pdf_f[mask], pdf_s[mask], correlation[mask], sd_f[mask], sd_s[mask])

    entropy_s = _neg_xlog2x_sum(pdf_s, 1)
    entropy_f = _neg_xlog2x_sum(pdf_f, 1)
    mutual = entropy_s + entropy_f - joint
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mutual == 0, 0.0, 2 * mutual / (entropy_s + entropy_f))


def _pair_fmi(source: Image, compare_to: Image, fused_norm: Image) -> NDArray[np.float64]:
    """Per-window FMI(S, F): 1 where the source patch equals ``compare_to``, else the MI branch."""
    values = np.ones(len(source))
    differs = np.flatnonzero(np.any(source != compare_to, axis=1))
    for start in range(0, len(differs), _FMI_BATCH):
        rows = differs[start : start + _FMI_BATCH]
        values[rows] = _window_fmi(_normalize_windows(source[rows]), fused_norm[rows])
    return values


def _binary_codes(windows: Image) -> NDArray[np.int64]:
    return windows.astype(np.int64) @ (np.int64(1) << np.arange(windows.shape[1], dtype=np.int64))


def _decode_binary(codes: NDArray[np.int64], pixels: int) -> Image:
    return ((codes[:, None] >> np.arange(pixels, dtype=np.int64)) & 1).astype(np.float64)


def _pair_fmi_binary(source: Image, fused: Image, fused_was_normalized: NDArray[np.bool_]) -> NDArray[np.float64]:
    """:func:`_pair_fmi` for 0/1 patches, evaluated once per distinct (source, fused, state) triple."""
    pixels = source.shape[1]
    keys = (_binary_codes(source) * 2 + fused_was_normalized) << pixels | _binary_codes(fused)
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    fused_unique = _decode_binary(unique_keys & ((1 << pixels) - 1), pixels)
    source_unique = _decode_binary(unique_keys >> (pixels + 1), pixels)
    fused_norm_unique = _normalize_windows(fused_unique)
    compare_to = np.where(((unique_keys >> pixels) & 1).astype(bool)[:, None], fused_norm_unique, fused_unique)
    return _pair_fmi(source_unique, compare_to, fused_norm_unique)[inverse.ravel()]


def fmi_multi(sources: Sequence[ArrayLike], fused: ArrayLike, feature: str = "edge", window: int = 3) -> float:
    """Fast feature mutual information for N >= 2 sources: per window the mean over sources of FMI(S, F).

    As in ``fmi.m``, the fused patch is compared raw with the first source and, once a source patch
    differed from it (and so normalised it), in normalised form with the following sources.
    """
    if feature not in _FMI_FEATURES:
        raise ValueError(f"feature must be one of {_FMI_FEATURES}, got {feature!r}")
    size = 2 * (int(window) // 2) + 1
    source_list, fused_img = _prepare(sources, fused, min_size=size)
    fused_windows = _column_major_windows(_fmi_feature(fused_img, feature), size)
    fused_norm = _normalize_windows(fused_windows)
    binary = feature == "edge" and size * size <= _FMI_MAX_CODED_PIXELS

    fused_was_normalized = np.zeros(len(fused_windows), dtype=bool)
    total = np.zeros(len(fused_windows))
    for src in source_list:
        source_windows = _column_major_windows(_fmi_feature(src, feature), size)
        if binary:
            values = _pair_fmi_binary(source_windows, fused_windows, fused_was_normalized)
        else:
            compare_to = np.where(fused_was_normalized[:, None], fused_norm, fused_windows)
            values = _pair_fmi(source_windows, compare_to, fused_norm)
        fused_was_normalized |= np.any(source_windows != fused_windows, axis=1)
        total = total + values
    return float(np.mean(total / len(source_list)))


def fmi(a: ArrayLike, b: ArrayLike, f: ArrayLike, feature: str = "edge", window: int = 3) -> float:
    """Haghighat's fast FMI of fused ``f`` from sources ``a`` and ``b`` (``fmi.m``)."""
    return fmi_multi([a, b], f, feature=feature, window=window)


# --------------------------------------------------------------------------------------------------
# Full-reference metrics
# --------------------------------------------------------------------------------------------------


def psnr(f: ArrayLike, gt: ArrayLike, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` for identical images."""
    fused_img, truth = _as_image(f, "fused image"), _as_image(gt, "ground truth")
    if fused_img.shape != truth.shape:
        raise ValueError(f"fused image has shape {fused_img.shape}, ground truth has {truth.shape}")
    mse = float(np.mean((fused_img - truth) ** 2))
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(peak * peak / mse))


def ssim(f: ArrayLike, gt: ArrayLike) -> float:
    """Mean SSIM as Wang's ``ssim_index.m`` (11x11 Gaussian sigma 1.5, K = (0.01, 0.03), L = 255, 'valid')."""
    fused_img, truth = _as_image(f, "fused image"), _as_image(gt, "ground truth")
    if fused_img.shape != truth.shape:
        raise ValueError(f"fused image has shape {fused_img.shape}, ground truth has {truth.shape}")
    if min(fused_img.shape) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11, got {fused_img.shape}")
    taps = _gaussian_taps(11, 1.5)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = _filter_valid(fused_img, taps), _filter_valid(truth, taps)
    var_x = _filter_valid(fused_img * fused_img, taps) - mu_x * mu_x
    var_y = _filter_valid(truth * truth, taps) - mu_y * mu_y
    cov = _filter_valid(fused_img * truth, taps) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return float(np.mean(ssim_map))


# --------------------------------------------------------------------------------------------------
# All at once
# --------------------------------------------------------------------------------------------------


def compute_all(sources: Sequence[ArrayLike], fused: ArrayLike, gt: ArrayLike | None = None) -> dict[str, float]:
    """The six no-reference metrics (keys :data:`METRIC_NAMES`), plus PSNR and SSIM when ``gt`` is given.

    ``sources`` is a sequence of >= 2 gray images (or an (N, H, W) array); use ``[a, b]`` for a pair.
    """
    source_list, fused_img = _prepare(list(sources), fused, min_size=11)
    results = {
        "Qg": qg_multi(source_list, fused_img),
        "Qy": qy_multi(source_list, fused_img),
        "Qcb": qcb_multi(source_list, fused_img),
        "Qncie": qncie_multi(source_list, fused_img),
        "FMI_edge": fmi_multi(source_list, fused_img, feature="edge"),
        "FMI_dct": fmi_multi(source_list, fused_img, feature="dct"),
    }
    if gt is not None:
        results["PSNR"] = psnr(fused_img, gt)
        results["SSIM"] = ssim(fused_img, gt)
    return results
