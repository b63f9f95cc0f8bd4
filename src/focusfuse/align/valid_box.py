"""The largest box of reference pixels that every warped frame covers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize

from .geometry import frame_corners, map_points


def quad_half_planes(quad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normals (4, 2) and bounds (4,) with ``normal . p <= bound`` inside a convex quadrilateral."""
    centre = quad.mean(axis=0)
    edges = np.roll(quad, -1, axis=0) - quad
    normals = np.column_stack([edges[:, 1], -edges[:, 0]])
    bounds = np.einsum("ij,ij->i", normals, quad)
    inside_sign = np.where(normals @ centre <= bounds, 1.0, -1.0)
    return normals * inside_sign[:, None], bounds * inside_sign


def box_constraints(normals: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear constraints ``A @ (x0, y0, x1, y1) <= b`` that keep all four box corners in the half-planes.

    For each half-plane the corner that reaches farthest along its normal is the binding one.
    """
    rows = np.zeros((len(normals), 4))
    positive = normals > 0
    rows[:, 0] = np.where(positive[:, 0], 0.0, normals[:, 0])
    rows[:, 2] = np.where(positive[:, 0], normals[:, 0], 0.0)
    rows[:, 1] = np.where(positive[:, 1], 0.0, normals[:, 1])
    rows[:, 3] = np.where(positive[:, 1], normals[:, 1], 0.0)
    return rows, bounds


def inner_box(quads: list[np.ndarray]) -> np.ndarray:
    """A conservative box (x0, y0, x1, y1) from each quad's inner edges (exact for shifts and scaling)."""
    stacked = np.stack(quads)  # (N, 4, 2): top left, top right, bottom right, bottom left
    x0 = stacked[:, [0, 3], 0].max()
    x1 = stacked[:, [1, 2], 0].min()
    y0 = stacked[:, [0, 1], 1].max()
    y1 = stacked[:, [2, 3], 1].min()
    return np.array([x0, y0, x1, y1])


def largest_box(rows: np.ndarray, bounds: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The largest-area box satisfying the constraints (log area is concave: SLSQP from ``start``)."""
    scale = max(1.0, float(np.abs(start).max()))

    def negative_log_area(box: np.ndarray) -> float:
        return -math.log(max(box[2] - box[0], 1e-9)) - math.log(max(box[3] - box[1], 1e-9))

    constraint = {"type": "ineq", "fun": lambda box: (bounds - rows @ (box * scale)) / scale, "jac": lambda box: -rows}
    result = minimize(negative_log_area, start / scale, method="SLSQP", constraints=[constraint],
                      options={"ftol": 1e-12, "maxiter": 200})
    return result.x * scale


def box_area(box: np.ndarray) -> float:
    """Area of a (x0, y0, x1, y1) box, 0 when empty."""
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def valid_box(transforms: Sequence[np.ndarray], shape: tuple[int, int], tolerance: float = 1e-3) -> tuple[int, int, int, int]:
    """Largest box (x0, y0, x1, y1), x1/y1 exclusive, of reference pixels inside every warped frame.

    A reference pixel is valid for a frame when it maps inside the frame's pixel centres (no border
    replication). The identity (the reference frame's own extent) is always included.
    """
    corners = frame_corners(shape)
    quads = [corners] + [map_points(np.asarray(t, dtype=np.float64), corners) for t in transforms]
    planes = [quad_half_planes(quad) for quad in quads]
    rows, bounds = box_constraints(np.concatenate([p[0] for p in planes]), np.concatenate([p[1] for p in planes]))
    candidates = [inner_box(quads)]
    if box_area(candidates[0]) > 0:
        candidates.append(largest_box(rows, bounds, candidates[0]))
    feasible = [box for box in candidates if np.all(rows @ box <= bounds + tolerance * np.abs(rows).sum(axis=1))]
    best = max(feasible, key=box_area, default=None)
    if best is None or box_area(best) <= 0:
        return (0, 0, 0, 0)
    x0, y0 = math.ceil(best[0] - tolerance), math.ceil(best[1] - tolerance)
    x1, y1 = math.floor(best[2] + tolerance) + 1, math.floor(best[3] + tolerance) + 1
    if x1 <= x0 or y1 <= y0:
        return (0, 0, 0, 0)
    return (x0, y0, x1, y1)
