"""Frames reduced to working resolution: band-passed detail pyramid, low-pass, focus signature."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..ops.color import GRAY_WEIGHTS, dtype_scale

SIGNATURE_CELLS = 16  # focus signature grid: cells along the long side (16x12 for 4:3 frames)
MIN_COARSE_SIDE = 160  # the coarsest ECC pyramid level keeps at least this many pixels on its long side
MAX_PYRAMID_LEVELS = 3
MIN_LEVEL_SIDE = 8  # ...and at least this many on its short side (phase correlation's window needs 2)
GRAY_BAND = 64  # rows converted to float at a time (no full-size float RGB copy)


@dataclass(frozen=True)
class Reduced:
    """One frame at working resolution: band-passed detail pyramid (geometry) and a low-pass (exposure).

    ``levels`` holds the detail image and its area-downscaled halvings, finest first (see
    :func:`pyramid_levels`); ``signature`` is the frame's :func:`focus_signature`.
    """

    index: int
    levels: tuple[np.ndarray, ...]
    smooth: np.ndarray
    signature: np.ndarray

    @property
    def detail(self) -> np.ndarray:
        """The band-passed detail image at working resolution."""
        return self.levels[0]


def check_frame(image: np.ndarray, index: int) -> np.ndarray:
    """The frame as an array, or ValueError when its layout or pixel type cannot be used."""
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"frame {index}: unsupported shape {image.shape} (use HxW or HxWx3)")
    if image.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise ValueError(f"frame {index}: unsupported pixel type {image.dtype}")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ValueError(f"frame {index}: too small ({image.shape[1]}x{image.shape[0]})")
    return image


def reduced_gray(image: np.ndarray, size: tuple[int, int], out: np.ndarray | None = None,
                 spare: np.ndarray | None = None) -> np.ndarray:
    """Area-downscaled gray image, float32 on the frame's 0..1 scale (non-finite values kept), into ``out`` if given.

    ``spare``: a contiguous buffer the downscaled frame may be written to if it fits (saves a fresh
    allocation; its contents are overwritten).
    """
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if (image.shape[1], image.shape[0]) != size:
        shape = (size[1], size[0]) + image.shape[2:]
        room = None if spare is None else spare.reshape(-1).view(np.uint8)
        fits = room is not None and room.size >= math.prod(shape) * image.itemsize
        target = room[: math.prod(shape) * image.itemsize].view(image.dtype).reshape(shape) if fits else None
        image = cv2.resize(image, size, dst=target, interpolation=cv2.INTER_AREA)
    gray = np.empty(image.shape[:2], np.float32) if out is None else out
    scale = np.float32(dtype_scale(image.dtype))
    weights = np.asarray(GRAY_WEIGHTS, dtype=np.float32)
    for start in range(0, image.shape[0], GRAY_BAND):
        band = slice(start, start + GRAY_BAND)
        pixels = image[band].astype(np.float32) / scale
        gray[band] = pixels if pixels.ndim == 2 else pixels[:, :, :3] @ weights
    return gray


def coarse_sigma(shape: tuple[int, int]) -> float:
    """Sigma of the band-pass's low cut: 1/128 of the long side, at least 4 px."""
    return max(4.0, max(shape) / 128.0)


def smooth_sigma(shape: tuple[int, int]) -> float:
    """Sigma of the exposure low-pass: 1/64 of the long side, at least 2 px."""
    return max(2.0, max(shape) / 64.0)


def pyramid_blur(image: np.ndarray, sigma: float, halvings: int, out: np.ndarray | None = None) -> np.ndarray:
    """Gaussian blur of std ``sigma``, computed ``halvings`` pyramid levels down and brought back up (into ``out``).

    Each pyrDown and pyrUp convolves with a 5-tap binomial kernel of variance 1 at its own scale, so
    the halvings add variance 2 * (4**halvings - 1) / 3 (full-resolution px^2); the rest is a true
    Gaussian at the reduced scale. A large-sigma blur is low-pass by definition, so little is lost:
    on V-4 the detail band-pass (sigma 8, 2 halvings) moves no estimate by more than 0.001 px.
    """
    residual = math.sqrt(max(sigma**2 - 2.0 * (4**halvings - 1) / 3.0, 0.0)) / 2**halvings
    sizes = []
    small = image
    for _ in range(halvings):
        sizes.append((small.shape[1], small.shape[0]))
        small = cv2.pyrDown(small)
    if residual > 0:
        small = cv2.GaussianBlur(small, (0, 0), residual, dst=out if not halvings else None)
    for level, size in enumerate(reversed(sizes)):
        small = cv2.pyrUp(small, dstsize=size, dst=out if level == halvings - 1 else None)
    if out is not None and small is not out:
        out[...] = small
        return out
    return small


def halvings_for(sigma: float, spare: int = 0) -> int:
    """Pyramid halvings for a blur of ``sigma`` that leave a residual sigma of about 2 * 2**spare px."""
    return max(0, int(math.floor(math.log2(sigma / 2.0))) - spare) if sigma >= 4.0 else 0


def detail_image(gray: np.ndarray, fine: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Band-pass (difference of Gaussians), scaled to unit RMS: the image ECC and phase correlation see.

    The fine Gaussian (1 px; pass ``fine`` when it is already computed) drops noise and the finest
    detail, which only in-focus areas have; the coarse one (1/128 of the long side) drops
    illumination gradients, vignetting and the broad glow of defocused highlights. What is left is
    the mid-frequency structure that neighbouring frames of a bracket share even where one is
    sharper than the other.
    """
    fine = cv2.GaussianBlur(gray, (0, 0), 1.0) if fine is None else fine
    sigma = coarse_sigma(gray.shape)
    band = pyramid_blur(gray, sigma, halvings_for(sigma), out)
    cv2.subtract(fine, band, dst=band)
    rms = cv2.norm(band, cv2.NORM_L2) / math.sqrt(band.size)
    if rms > 0:
        np.multiply(band, np.float32(1.0 / rms), out=band)
    return band


def smooth_image(gray: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Heavy low-pass (sigma 1/64 of the long side): local brightness without focus-dependent detail.

    Computed one pyramid level down (two levels fewer than the band-pass), which keeps the exposure
    estimates within a few 1e-5 of a direct blur.
    """
    sigma = smooth_sigma(gray.shape)
    return pyramid_blur(gray, sigma, halvings_for(sigma, spare=2), out)


def has_texture(gray: np.ndarray) -> bool:
    """False for (nearly) constant frames, which carry no alignment information."""
    return float(cv2.meanStdDev(gray)[1][0, 0]) > 1e-3


def signature_grid(shape: tuple[int, int]) -> tuple[int, int]:
    """(columns, rows) of the focus signature: SIGNATURE_CELLS along the long side, square-ish cells."""
    height, width = shape
    long_side = max(height, width)
    columns = min(width, max(1, round(SIGNATURE_CELLS * width / long_side)))
    rows = min(height, max(1, round(SIGNATURE_CELLS * height / long_side)))
    return columns, rows


def focus_signature(gray: np.ndarray, fine: np.ndarray | None = None, overwrite: bool = False) -> np.ndarray:
    """Where the frame is sharp: log fine-detail energy per grid cell, minus its mean over the cells.

    Fine detail (the gray image minus its 1 px blur; pass that blur as ``fine`` when it is already
    computed, and ``overwrite`` to let ``gray`` hold the residue) is what defocus removes first. The
    log turns the comparison into one of ratios, a floor at 1e-4 of the mean energy keeps flat cells
    from dominating, and removing the mean drops exposure and overall contrast. Frames focused at
    the same depth get close signatures (Euclidean distance) even when they sit far apart in the
    bracket. A few hundred float32 values per frame (16x12 for 4:3 frames).
    """
    fine = cv2.GaussianBlur(gray, (0, 0), 1.0) if fine is None else fine
    residue = cv2.subtract(gray, fine, dst=gray if overwrite else None)
    cv2.multiply(residue, residue, dst=residue)
    energy = cv2.resize(residue, signature_grid(gray.shape), interpolation=cv2.INTER_AREA).astype(np.float64)
    logs = np.log(energy + 1e-4 * float(energy.mean()) + 1e-20)
    return (logs - logs.mean()).astype(np.float32)


def pyramid_levels(shape: tuple[int, int]) -> int:
    """Number of halvings for the coarse-to-fine ECC: the coarsest level keeps >= 160 px on its long side and
    >= 8 on its short side (an elongated frame gets fewer)."""
    levels = 0
    while (max(shape) / 2 ** (levels + 1) >= MIN_COARSE_SIDE and min(shape) / 2 ** (levels + 1) >= MIN_LEVEL_SIDE
           and levels < MAX_PYRAMID_LEVELS):
        levels += 1
    return levels


def pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """``image`` and its area-downscaled halvings, finest first (``levels`` + 1 images)."""
    images = [image]
    for _ in range(levels):
        smaller = images[-1]
        size = (max(1, smaller.shape[1] // 2), max(1, smaller.shape[0] // 2))
        images.append(cv2.resize(smaller, size, interpolation=cv2.INTER_AREA))
    return images


def reduce_frame(image: np.ndarray, index: int, size: tuple[int, int]) -> Reduced | str:
    """The frame's working-resolution images, or a reason why it cannot be used for alignment.

    Full-size float images are made in pairs (one allocation each for the scratch gray/blur and the
    kept detail/smooth), which the kernel backs with huge pages: far fewer page faults than one
    fresh array per step.
    """
    scratch = np.empty((2, size[1], size[0]), np.float32)
    gray, fine = reduced_gray(image, size, scratch[0], spare=scratch[1]), scratch[1]
    if not cv2.checkRange(gray, quiet=True)[0]:
        return "contains NaN/inf pixels"
    if not has_texture(gray):
        return "no texture (constant image)"
    cv2.GaussianBlur(gray, (0, 0), 1.0, dst=fine)
    kept = np.empty((2, size[1], size[0]), np.float32)
    detail = detail_image(gray, fine, kept[0])
    smooth = smooth_image(gray, kept[1])
    signature = focus_signature(gray, fine, overwrite=True)
    return Reduced(index, tuple(pyramid(detail, pyramid_levels(detail.shape))), smooth, signature)
