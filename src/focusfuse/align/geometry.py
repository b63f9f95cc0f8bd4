"""Small 3x3 transform helpers shared by alignment estimation, warping and the valid box."""

from __future__ import annotations

import numpy as np


def working_size(shape: tuple[int, int], max_size: int) -> tuple[int, int]:
    """(width, height) with the longest side at most ``max_size``, keeping the aspect ratio."""
    height, width = shape
    factor = min(1.0, max_size / max(height, width))
    return max(1, round(width * factor)), max(1, round(height * factor))


def resize_matrix(scale_x: float, scale_y: float) -> np.ndarray:
    """3x3 map from pixel-centre coordinates of an image to those of its resized copy (area resize)."""
    return np.array(
        [[scale_x, 0.0, 0.5 * scale_x - 0.5], [0.0, scale_y, 0.5 * scale_y - 0.5], [0.0, 0.0, 1.0]]
    )


def rescale_transform(transform: np.ndarray, to_small: np.ndarray) -> np.ndarray:
    """A transform between small-image coordinates expressed between large-image coordinates."""
    large = np.linalg.inv(to_small) @ transform @ to_small
    return large / large[2, 2]


def translation_matrix(dx: float, dy: float) -> np.ndarray:
    """3x3 translation by (dx, dy)."""
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def photometric_matrix(gain: float, offset: float) -> np.ndarray:
    """2x2 matrix acting on (value, 1): value -> gain * value + offset."""
    return np.array([[gain, offset], [0.0, 1.0]])


def map_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3x3 transform to an (N, 2) array of (x, y) points."""
    homogeneous = np.column_stack([points, np.ones(len(points))]) @ transform.T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def frame_corners(shape: tuple[int, int]) -> np.ndarray:
    """The four corner pixel centres of an (H, W) frame, clockwise from the top left."""
    height, width = shape
    return np.array([[0.0, 0.0], [width - 1.0, 0.0], [width - 1.0, height - 1.0], [0.0, height - 1.0]])


def corners_and_centre(shape: tuple[int, int]) -> np.ndarray:
    """The four corner pixel centres and the centre of an (H, W) frame, as (5, 2) (x, y) points."""
    height, width = shape
    return np.vstack([frame_corners(shape), [[(width - 1) / 2.0, (height - 1) / 2.0]]])


def largest_displacement(first: np.ndarray, second: np.ndarray, shape: tuple[int, int]) -> float:
    """Largest distance (px) between where two transforms put the corners and centre of an (H, W) frame."""
    points = corners_and_centre(shape)
    return float(np.linalg.norm(map_points(first, points) - map_points(second, points), axis=1).max())
