"""``focusfuse train --method sesf``: SESF-Fuse's unsupervised autoencoder training (reconstruction).

Gray images (OpenCV's BT.601 gray, as the published training) resized to ``size`` x ``size`` and normalised;
the target is the input. Loss = Lp + ssim_weight * (1 - SSIM): Lp the Frobenius norm of the batch's error,
SSIM with a 5x5 Gaussian window (sigma 1.5, zero padding), C1 = 0.01^2, C2 = 0.03^2, on the normalised
tensors. Adam, lr x decay every ``lr_step`` epochs. The epoch with the lowest validation loss is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..methods.sesf.network import SESFNet, normalize
from ..methods.sesf.weights import save_sesf_weights
from .data import split_images
from .loop import seed_everything
from .runs import install, log_epoch, start_run, train_epoch

Progress = Callable[[int, int, dict[str, float]], None]


def gaussian_window(size: int = 5, sigma: float = 1.5, device: torch.device | None = None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(x: torch.Tensor, y: torch.Tensor, c1: float = 0.01 ** 2, c2: float = 0.03 ** 2) -> torch.Tensor:
    """Mean SSIM of (B, 1, H, W) tensors with a 5x5 Gaussian window (sigma 1.5), zero padding."""
    w = gaussian_window(device=x.device)
    mx, my = F.conv2d(x, w, padding=2), F.conv2d(y, w, padding=2)
    sxx = F.conv2d(x * x, w, padding=2) - mx * mx
    syy = F.conv2d(y * y, w, padding=2) - my * my
    sxy = F.conv2d(x * y, w, padding=2) - mx * my
    return (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))).mean()


def sesf_loss(output: torch.Tensor, target: torch.Tensor, ssim_weight: float = 1000.0) -> torch.Tensor:
    return torch.linalg.vector_norm(output - target) + ssim_weight * (1.0 - ssim(output, target))


def load_gray(path: Path, size: int) -> torch.Tensor:
    """(1, size, size) normalised gray of an image file (BT.601, bilinear resize, aspect not kept)."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise UsageError(f"{path}: cannot read this image", option="images")
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    return normalize(torch.from_numpy(image))[None]


def train_sesf(images: str | Path, out: str | Path, *, epochs: int = 30, batch_size: int = 8, lr: float = 1e-4,
               lr_decay: float = 0.8, lr_step: int = 2, size: int = 256, ssim_weight: float = 1000.0,
               seed: int = 1, device: str = "auto", max_steps: int = 0, install_as: str | None = None,
               replace_installed: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Train SESFNet on the images of ``images`` (every 10th held out for validation); the run folder ``out``
    gets ``best.pt`` (our weights format) and ``log.jsonl``; the best weights are installed as ``install_as``
    (for ``--weights NAME``) when given. Returns a summary."""
    from ..backends.select import resolve_device

    training, validation = split_images(images)
    if len(training) < batch_size or not validation:
        raise UsageError(f"{images}: need at least {batch_size} training images and one for validation (every "
                         f"10th image is held out); found {len(training) + len(validation)}", option="images")
    out, installed = start_run(out, install_as, replace_installed)
    target = resolve_device(device)
    seed_everything(seed)
    train_set = torch.stack([load_gray(p, size) for p in training])
    val_set = torch.stack([load_gray(p, size) for p in validation])
    model = SESFNet().to(target)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_step, gamma=lr_decay)
    generator = torch.Generator().manual_seed(seed)
    best, best_epoch, started = float("inf"), -1, time.perf_counter()
    steps = len(train_set) // batch_size if max_steps == 0 else min(max_steps, len(train_set) // batch_size)
    for epoch in range(epochs):
        order = torch.randperm(len(train_set), generator=generator)
        train_loss, used_lr = train_epoch(model, optimizer, train_set, order, steps, batch_size, target,
                                          lambda batch: sesf_loss(model(batch), batch, ssim_weight))
        scheduler.step()
        model.eval()
        with torch.inference_mode():
            val = sum(float(sesf_loss(model(v[None].to(target)), v[None].to(target), ssim_weight))
                      for v in val_set) / len(val_set)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val,
               "lr": used_lr, "seconds": round(time.perf_counter() - started, 1)}
        log_epoch(out, row)
        if val < best:
            best, best_epoch = val, epoch + 1
            save_sesf_weights(model, out / "best.pt", {"epoch": best_epoch, "val_loss": val, "images": str(images),
                                                       "size": size, "batch_size": batch_size, "lr": lr,
                                                       "ssim_weight": ssim_weight, "epochs": epochs, "seed": seed})
        if progress is not None:
            progress(epoch + 1, epochs, row)
    return {"best_epoch": best_epoch, "best_val_loss": best, "weights": str(out / "best.pt"),
            "installed": install(out / "best.pt", installed),
            "seconds": round(time.perf_counter() - started, 1)}


__all__ = ["train_sesf", "sesf_loss", "ssim"]
