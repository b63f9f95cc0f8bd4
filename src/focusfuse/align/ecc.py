"""ECC image alignment (translation, affine) as OpenCV computes it, reorganised to run several times faster."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

BAND_ROWS = 48  # template rows warped and reduced at a time (a band's arrays stay in the cache)

# Per parameter, in OpenCV's order: (gradient: 0 = d/dx, 1 = d/dy, power of x, power of y) of its
# image Jacobian, and the cell of the 2x3 warp matrix it updates.
JACOBIANS = {
    cv2.MOTION_TRANSLATION: ((0, 0, 0), (1, 0, 0)),
    cv2.MOTION_AFFINE: ((0, 1, 0), (1, 1, 0), (0, 0, 1), (1, 0, 1), (0, 0, 0), (1, 0, 0)),
}
WARP_CELLS = {
    cv2.MOTION_TRANSLATION: ((0, 2), (1, 2)),
    cv2.MOTION_AFFINE: ((0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)),
}

# Channels of a band's feature buffer: Jacobian sources (gradients, then gradients * x), then the
# values they are projected on, then the image inside the mask (for the image statistics).
GX, GY, GX_X, GY_X, IMAGE, MASK, TEMPLATE_MASKED, IMAGE_MASKED = range(8)
FEATURES = 8
PROJECTED = slice(IMAGE, TEMPLATE_MASKED + 1)  # what the Jacobian sources are projected on


class EccError(Exception):
    """ECC cannot go on: no overlap, a NaN correlation, or a step that would minimise the correlation."""


@dataclass(frozen=True)
class EccTarget:
    """The image ECC warps onto the template: pixels and masked gradients (H x W x 3) and the valid mask."""

    channels: np.ndarray  # float32: image, d/dx, d/dy (gradients zero outside the mask)
    mask: np.ndarray  # uint8: 1 where the image may be used


@dataclass(frozen=True)
class EccResult:
    """A refined warp (2x3 float64, template -> target coordinates), its correlation and the iterations run.

    ``hessian`` is the last Gauss-Newton Hessian (for the grid used: a stride-2 one is about a
    quarter of the full one).
    """

    warp: np.ndarray
    correlation: float
    iterations: int
    hessian: np.ndarray | None = None


def ecc_target(image: np.ndarray, margin: int) -> EccTarget:
    """The target side of ECC for ``image`` (float32), leaving out a border of ``margin`` >= 1 pixels.

    The gradients are central differences (OpenCV's (-0.5, 0, 0.5) kernel), zero outside the mask,
    written straight into the interleaved array (one allocation, backed by huge pages when large).
    """
    if margin < 1:
        raise ValueError(f"ECC needs a margin of at least 1 pixel, got {margin}")
    height, width = image.shape
    rows, columns = slice(margin, height - margin), slice(margin, width - margin)
    mask = np.zeros((height, width), np.uint8)
    mask[rows, columns] = 1
    channels = np.zeros((height, width, 3), np.float32)
    channels[:, :, 0] = image
    for channel, ahead, behind in (
        (1, image[rows, margin + 1 : width - margin + 1], image[rows, margin - 1 : width - margin - 1]),
        (2, image[margin + 1 : height - margin + 1, columns], image[margin - 1 : height - margin - 1, columns]),
    ):
        gradient = channels[rows, columns, channel]
        np.subtract(ahead, behind, out=gradient)
        gradient *= np.float32(0.5)
    return EccTarget(channels, mask)


@dataclass
class _RowSums:
    """Per template row: products of Jacobian sources with each other and with the image values, and image statistics."""

    hessian: np.ndarray  # (sources, sources, rows): products of Jacobian sources (upper triangle filled)
    projections: np.ndarray  # (sources, 3, rows): sources x (image, mask, template*mask)
    statistics: np.ndarray  # (5, rows): image*mask*image, image*mask, template*mask*template,
    #                          image*mask*template, template*mask
    count: float  # pixels inside the mask


def band_warp(warp: np.ndarray, stride: int, first_row: int) -> np.ndarray:
    """The 2x3 warp for output band rows from ``first_row`` on a grid of every ``stride``-th template pixel."""
    grid = np.array([[stride, 0.0, 0.0], [0.0, stride, stride * first_row], [0.0, 0.0, 1.0]])
    return warp @ grid


@dataclass
class _Scratch:
    """Buffers for one band (reused by every band and iteration of a :func:`find_warp` call)."""

    features: np.ndarray  # (FEATURES, BAND_ROWS, columns) float32
    warped: np.ndarray  # (BAND_ROWS, columns, 3) float32
    mask: np.ndarray  # (BAND_ROWS, columns) uint8
    maps: np.ndarray  # (2, BAND_ROWS, columns) float32: where each band pixel lies in the target (x, y)

    @classmethod
    def for_grid(cls, shape: tuple[int, int]) -> _Scratch:
        rows, columns = min(BAND_ROWS, shape[0]), shape[1]
        return cls(np.zeros((FEATURES, rows, columns), np.float32), np.empty((rows, columns, 3), np.float32),
                   np.empty((rows, columns), np.uint8), np.empty((2, rows, columns), np.float32))


def row_sums(template: np.ndarray, target: EccTarget, warp: np.ndarray, stride: int, sources: int,
             scratch: _Scratch, with_hessian: bool = True) -> _RowSums:
    """Warp the target band by band onto the (strided) template grid and sum the products ECC needs per row.

    ``with_hessian=False`` leaves the Jacobian's products with itself out (zeros).
    """
    rows, columns = template.shape
    x = np.arange(columns, dtype=np.float32) * stride
    sums = _RowSums(np.zeros((sources, sources, rows), np.float32), np.empty((sources, 3, rows), np.float32),
                    np.empty((5, rows), np.float32), 0.0)
    for start in range(0, rows, BAND_ROWS):
        band = slice(start, min(rows, start + BAND_ROWS))
        feature = scratch.features[:, : band.stop - start]
        sums.count += warp_band(target, band_warp(warp, stride, start), scratch, feature)
        band_products(feature, template[band], x, sources)
        sum_band(sums, band, feature, template[band], with_hessian)
    return sums


def warp_band(target: EccTarget, matrix: np.ndarray, scratch: _Scratch, feature: np.ndarray) -> int:
    """Warp the target onto one band: image, gradients and mask into ``feature``; the pixels inside the mask.

    Bilinear for the image and gradients, nearest for the mask, outside the target 0 (as OpenCV's
    ECC). cv2.remap with explicit coordinates rather than cv2.warpAffine: warpAffine's last bits
    depend on how OpenCV splits the rows among its threads (and on other threads calling it at the
    same time), remap's do not, so a step gives the same floats in any thread.
    """
    rows, columns = feature.shape[1:]
    image, mask, (map_x, map_y) = scratch.warped[:rows], scratch.mask[:rows], scratch.maps[:, :rows]
    x, y = np.arange(columns, dtype=np.float64), np.arange(rows, dtype=np.float64)
    for coordinate, (along_x, along_y, offset) in zip((map_x, map_y), matrix):
        np.add((along_x * x).astype(np.float32)[None, :], (along_y * y + offset).astype(np.float32)[:, None],
               out=coordinate)
    cv2.remap(target.channels, map_x, map_y, cv2.INTER_LINEAR, dst=image)
    cv2.remap(target.mask, map_x, map_y, cv2.INTER_NEAREST, dst=mask)
    for channel, index in ((IMAGE, 0), (GX, 1), (GY, 2)):
        cv2.extractChannel(image, index, dst=feature[channel])
    np.copyto(feature[MASK], mask)
    return cv2.countNonZero(mask)


def band_products(feature: np.ndarray, template: np.ndarray, x: np.ndarray, sources: int) -> None:
    """The masked image and template, and (affine) the gradients times x, into their feature channels."""
    np.multiply(feature[IMAGE], feature[MASK], out=feature[IMAGE_MASKED])
    np.multiply(template, feature[MASK], out=feature[TEMPLATE_MASKED])
    if sources > 2:
        np.multiply(feature[GX], x, out=feature[GX_X])
        np.multiply(feature[GY], x, out=feature[GY_X])


def sum_band(sums: _RowSums, band: slice, feature: np.ndarray, template: np.ndarray, with_hessian: bool) -> None:
    """Row sums of one band's products into ``sums`` (each product once, upper Hessian triangle)."""
    sources = sums.hessian.shape[0]
    if with_hessian:
        sums.hessian[:2, :, band] = np.einsum("fij,gij->fgi", feature[:2], feature[:sources])
        if sources > 2:
            sums.hessian[2:, 2:, band] = np.einsum("fij,gij->fgi", feature[2:sources], feature[2:sources])
    sums.projections[:, :, band] = np.einsum("fij,gij->fgi", feature[:sources], feature[PROJECTED])
    sums.statistics[:2, band] = np.einsum("gij,ij->gi", feature[IMAGE : MASK + 1], feature[IMAGE_MASKED])
    sums.statistics[2:4, band] = np.einsum("gij,ij->gi", feature[TEMPLATE_MASKED:], template)
    sums.statistics[4, band] = np.einsum("ij,ij->i", feature[TEMPLATE_MASKED], feature[MASK])


def source_index(gradient: int, x_power: int, sources: int) -> int:
    """The feature channel holding gradient * x**x_power (x powers only exist with 4 sources)."""
    return gradient + 2 * x_power if sources > 2 else gradient


@dataclass(frozen=True)
class _Correlation:
    """Means and norms of the image and template inside the mask, and their zero-mean dot product."""

    image_mean: float
    template_mean: float
    image_norm2: float
    template_norm2: float
    dot: float

    @classmethod
    def from_sums(cls, sums: _RowSums) -> _Correlation:
        if sums.count <= 0:
            raise EccError("the warped image does not overlap the template")
        image_image, image_sum, template_template, image_template, template_sum = (
            row.astype(np.float64).sum() for row in sums.statistics)
        image_mean, template_mean = image_sum / sums.count, template_sum / sums.count
        return cls(image_mean, template_mean, image_image - sums.count * image_mean**2,
                   template_template - sums.count * template_mean**2,
                   image_template - sums.count * image_mean * template_mean)

    def rho(self) -> float:
        """The enhanced correlation coefficient."""
        if not self.image_norm2 * self.template_norm2 > 0:
            raise EccError("flat image or template")
        rho = self.dot / math.sqrt(self.image_norm2 * self.template_norm2)
        if not math.isfinite(rho):
            raise EccError("NaN encountered")
        return rho


def normal_equations(sums: _RowSums, parameters: tuple, row_y: np.ndarray, terms: _Correlation,
                     hessian: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hessian (``hessian`` if given, else from ``sums``) and the zero-mean image and template projections, float64."""
    sources = sums.hessian.shape[0]
    y_powers = np.stack([np.ones_like(row_y), row_y, row_y * row_y], axis=1)  # (rows, 3)
    projections = sums.projections.astype(np.float64) @ y_powers  # (sources, image/mask/template, y power)
    count = len(parameters)
    indices = [source_index(gradient, x_power, sources) for gradient, x_power, _ in parameters]
    if hessian is None:
        products = sums.hessian.astype(np.float64) @ y_powers  # (sources, sources, y power), upper triangle
        hessian = np.empty((count, count))
        for k in range(count):
            for m in range(k, count):
                first, second = sorted((indices[k], indices[m]))  # only the upper triangle is summed
                hessian[k, m] = hessian[m, k] = products[first, second, parameters[k][2] + parameters[m][2]]
    image, mask, template = (projections[indices, channel, [p[2] for p in parameters]] for channel in range(3))
    return hessian, image - terms.image_mean * mask, template - terms.template_mean * mask


def gauss_newton_update(sums: _RowSums, parameters: tuple, row_y: np.ndarray, hessian: np.ndarray | None = None
                        ) -> tuple[np.ndarray, float, np.ndarray]:
    """The ECC parameter update, the correlation at the current warp and the Hessian used (OpenCV's formulas,
    in float64); ``hessian`` given: that one instead of the one in ``sums``."""
    terms = _Correlation.from_sums(sums)
    rho = terms.rho()
    hessian, image_projection, template_projection = normal_equations(sums, parameters, row_y, terms, hessian)
    try:
        hessian_image = np.linalg.solve(hessian, image_projection)
        denominator = terms.dot - template_projection @ hessian_image
        if not denominator > 0:
            raise EccError("the step would minimise the correlation (images uncorrelated or not overlapping)")
        scale = (terms.image_norm2 - image_projection @ hessian_image) / denominator
        return np.linalg.solve(hessian, scale * template_projection - image_projection), rho, hessian
    except np.linalg.LinAlgError as exc:
        raise EccError("singular Hessian") from exc


def corner_motion(delta: np.ndarray, shape: tuple[int, int]) -> float:
    """Largest movement (px) of the template's corners under a 2x3 warp change."""
    height, width = shape
    corners = np.array([[0.0, 0.0, 1.0], [width - 1.0, 0.0, 1.0], [0.0, height - 1.0, 1.0], [width - 1.0, height - 1.0, 1.0]])
    return float(np.abs(corners @ delta.T).max())


def find_warp(
    template: np.ndarray,
    target: EccTarget,
    warp: np.ndarray,
    motion: int,
    *,
    max_iterations: int,
    eps: float = -1.0,
    tolerance: float = -1.0,
    give_up_below: float = -math.inf,
    stride: int = 1,
    reuse_hessian: bool = False,
    hessian: np.ndarray | None = None,
) -> EccResult:
    """Refine ``warp`` (2x3, template -> target pixel coordinates) by ECC; raises EccError when it cannot go on.

    The iteration is OpenCV's ``findTransformECC`` (forward additive Gauss-Newton on the zero-mean
    normalised correlation; bilinear warps of the target and of its central-difference gradients;
    the same masks), so it converges to the same optimum. It is organised for speed: the warped
    image and gradients are processed a band of rows at a time while they are in the CPU cache, the
    Hessian and projections come from row sums of a few products instead of a full Jacobian image,
    and the small linear algebra is done in float64. ``stride`` > 1 uses every stride-th template
    row and column: a quarter of the work (stride 2) for an optimum within a few thousandths of a
    pixel of the full one, a good start for a last full-resolution iteration or two.

    Stops after ``max_iterations``, when the correlation changed by less than ``eps`` from one
    iteration to the next (OpenCV's criterion; the first two iterations always run) or when an update
    moved no template corner by more than ``tolerance`` px, or as soon as the correlation is below
    ``give_up_below`` (a match that will be refused anyway). ``correlation`` is the one measured in
    the last iteration, before its update (as OpenCV). ``reuse_hessian``: keep the first iteration's
    Hessian, or ``hessian`` when given (it changes little once the warp is close, and the optimum
    does not depend on it).
    """
    parameters = JACOBIANS[motion]
    cells = WARP_CELLS[motion]
    grid = np.ascontiguousarray(template[::stride, ::stride], dtype=np.float32)
    row_y = np.arange(grid.shape[0], dtype=np.float64) * stride
    sources = 4 if motion == cv2.MOTION_AFFINE else 2
    warp = np.array(warp, dtype=np.float64)
    scratch = _Scratch.for_grid(grid.shape)
    rho, last_rho, iterations = -1.0, -eps, 0
    hessian = hessian if reuse_hessian else None
    while iterations < max_iterations and abs(rho - last_rho) >= eps:
        iterations += 1
        sums = row_sums(grid, target, warp, stride, sources, scratch, with_hessian=hessian is None or not reuse_hessian)
        update, correlation, hessian = gauss_newton_update(sums, parameters, row_y, hessian if reuse_hessian else None)
        last_rho, rho = rho, correlation
        delta = np.zeros((2, 3))
        for cell, value in zip(cells, update):
            delta[cell] = value
        warp += delta
        if corner_motion(delta, template.shape) < tolerance or rho < give_up_below:
            break
    return EccResult(warp, rho, iterations, hessian)
