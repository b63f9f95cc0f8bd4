"""``focusfuse train --method rpsnn``: R-PSNN regressing the all-in-focus image (MSE) from generated pairs.

Pairs come from colour crops of the training images: a random subset of the labelled segments (or of random
shapes) is the near layer; frames A and B focus near and far through the layered disk-PSF model of
:mod:`focusfuse.evaluation.synthetic` (a defocused near layer spreads over the far one), so the target is the
sharp crop itself. Adam (lr 2e-4, halved every ``lr_step`` epochs), as published; the patch size and the
number of pairs are ours (the paper's generator is not published).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..evaluation.synthetic import layered_pair
from ..io.images import read_image
from ..methods.rpsnn.network import RPSNN
from ..methods.rpsnn.weights import save_rpsnn_weights
from .data import random_shapes_mask, read_segments, segment_mask
from .loop import seed_everything
from .runs import install, log_epoch, start_run, train_epoch, training_split

Progress = Callable[[int, int, dict[str, float]], None]


def colour_pair(image: np.ndarray, segments: np.ndarray | None, size: int, rng: np.random.Generator,
                blur: tuple[float, float] = (1.5, 6.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, B, truth) float32 (3, size, size): a random crop, its near layer focused in A and far in B."""
    h, w = image.shape[:2]
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    crop = image[y:y + size, x:x + size].astype(np.float32) / 255.0
    if crop.ndim == 2:
        crop = np.repeat(crop[:, :, None], 3, axis=2)
    crop = crop[:, :, :3]
    near = segment_mask(segments[y:y + size, x:x + size], rng) if segments is not None else \
        random_shapes_mask(size, size, rng)
    r_far, r_near = rng.uniform(*blur, size=2)
    a, b = layered_pair(crop, near, float(r_far), float(r_near))
    if rng.random() < 0.5:
        a, b = b, a
    return tuple(np.ascontiguousarray(v.transpose(2, 0, 1)) for v in (a, b, crop))  # type: ignore[return-value]


def make_pairs(paths: list[Path], segments_dir: Path | None, count: int, size: int, seed: int) -> torch.Tensor:
    """(count, 3, 3, size, size): A, B and the truth of ``count`` pairs spread over the images."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        path = paths[k % len(paths)]
        image = read_image(path)
        segments = read_segments(segments_dir, path)
        if min(image.shape[:2]) < size:
            raise UsageError(f"{path}: smaller than the {size} px patches", option="crop")
        out.append(np.stack(colour_pair(image, segments, size, rng)))
    return torch.from_numpy(np.stack(out))


def train_rpsnn(images: str | Path, out: str | Path, *, segments: str | Path | None = None, epochs: int = 59,
                batch_size: int = 8, lr: float = 2e-4, lr_step: int = 5, size: int = 64, pairs_per_image: int = 1,
                seed: int = 0, device: str = "auto", max_steps: int = 0, install_as: str | None = None,
                replace_installed: bool = False, progress: Progress | None = None,
                mixed_precision: bool | None = None) -> dict[str, Any]:
    """Train R-PSNN on pairs generated from ``images`` (every 10th image held out: fixed validation pairs);
    ``out`` gets ``best.pt`` (lowest validation MSE, measured in float32) and ``log.jsonl``. Returns a summary.
    ``mixed_precision``: the forward pass in bfloat16 (autocast; weights and optimizer stay float32), by
    default where the device computes it natively (a CUDA GPU, a CPU with AVX-512 BF16: about 2x faster)."""
    from ..backends.select import resolve_device

    training, validation = training_split(images)
    out, installed = start_run(out, install_as, replace_installed)
    target = resolve_device(device)
    if mixed_precision is None:
        mixed_precision = native_bfloat16(target)
    seed_everything(seed)
    segments_dir = None if segments is None else Path(segments)
    val_set = make_pairs(validation, segments_dir, len(validation), size, seed + 100_000)  # fixed, apart
    model = RPSNN().to(target)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_step, gamma=0.5)
    best, best_epoch, started = float("inf"), -1, time.perf_counter()
    for epoch in range(epochs):
        train_set = make_pairs(training, segments_dir, len(training) * pairs_per_image, size, seed + epoch)
        order = torch.randperm(len(train_set))
        steps = len(train_set) // batch_size if max_steps == 0 else min(max_steps, len(train_set) // batch_size)

        def loss_of(batch: torch.Tensor) -> torch.Tensor:
            with torch.autocast(target.type, dtype=torch.bfloat16, enabled=mixed_precision):
                fused = model(batch[:, 0], batch[:, 1])
            return F.mse_loss(fused.float(), batch[:, 2])

        train_mse, used_lr = train_epoch(model, optimizer, train_set, order, max(steps, 1), batch_size, target,
                                         loss_of)
        scheduler.step()
        model.eval()
        with torch.inference_mode():
            val = sum(F.mse_loss(model(v[None, 0].to(target), v[None, 1].to(target)).clamp(0, 1),
                                 v[None, 2].to(target)).item() for v in val_set) / len(val_set)
        row = {"epoch": epoch + 1, "train_mse": train_mse, "val_mse": val, "bf16": mixed_precision,
               "val_psnr": float(10 * np.log10(1.0 / max(val, 1e-12))), "lr": used_lr,
               "seconds": round(time.perf_counter() - started, 1)}
        log_epoch(out, row)
        if val < best:
            best, best_epoch = val, epoch + 1
            save_rpsnn_weights(model, out / "best.pt", {"epoch": best_epoch, "val_mse": val, "images": str(images),
                                                        "size": size, "batch_size": batch_size, "lr": lr,
                                                        "epochs": epochs, "seed": seed})
        if progress is not None:
            progress(epoch + 1, epochs, row)
    return {"best_epoch": best_epoch, "best_val_mse": best, "weights": str(out / "best.pt"),
            "installed": install(out / "best.pt", installed),
            "seconds": round(time.perf_counter() - started, 1)}


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (a CUDA GPU that supports it, a CPU with AVX-512 BF16)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as fh:
            return "avx512_bf16" in fh.read()
    except OSError:
        return False


__all__ = ["train_rpsnn", "colour_pair", "make_pairs", "native_bfloat16"]
