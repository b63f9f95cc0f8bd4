"""A small PNG plot of training curves (loss and validation Q_g per epoch), drawn with OpenCV."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from ..io.images import atomic_write

WIDTH, HEIGHT, MARGIN = 520, 300, 48
COLOURS = [(200, 80, 30), (30, 120, 220), (40, 160, 60)]  # BGR


def read_log(path: str | os.PathLike) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _panel(title: str, series: dict[str, list[float]], epochs: list[int]) -> np.ndarray:
    img = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    values = [v for vs in series.values() for v in vs if np.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    x0, x1, y0, y1 = MARGIN, WIDTH - 12, HEIGHT - MARGIN // 2 - 8, 28
    cv2.rectangle(img, (x0, y1), (x1, y0), (0, 0, 0), 1)
    cv2.putText(img, title, (x0, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for value, y in ((hi, y1), (lo, y0)):
        cv2.putText(img, f"{value:.3f}", (2, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    last = max(epochs[-1], 2) if epochs else 2
    cv2.putText(img, f"epoch 1..{last}", (x1 - 90, HEIGHT - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1,
                cv2.LINE_AA)

    def point(epoch: int, value: float) -> tuple[int, int]:
        x = x0 + (epoch - 1) / max(last - 1, 1) * (x1 - x0)
        y = y0 - (value - lo) / (hi - lo) * (y0 - y1)
        return int(round(x)), int(round(y))

    for k, (name, vs) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        pts = [point(e, v) for e, v in zip(epochs, vs) if np.isfinite(v)]
        if len(pts) > 1:
            cv2.polylines(img, [np.array(pts, np.int32)], False, colour, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 2, colour, -1)
        cv2.putText(img, name, (x0 + 8 + 150 * k, y1 + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return img


def plot_curves(log_path: str | os.PathLike, png_path: str | os.PathLike) -> None:
    """Two panels: train/validation loss, validation Q_g."""
    records = read_log(log_path)
    epochs = [r["epoch"] for r in records]
    nan = float("nan")
    losses = {"train loss": [r.get("train_loss", nan) for r in records],
              "val loss": [r.get("val_loss", nan) for r in records]}
    quality = {"val Q_g": [r.get("val_qg", nan) for r in records]}
    image = np.vstack([_panel("loss", losses, epochs), _panel("validation Q_g", quality, epochs)])
    atomic_write(png_path, lambda tmp: cv2.imwrite(str(tmp), image))
