"""The training loop behind ``focusfuse train``: Adam, step decay, AMP on CUDA, checkpoints, logs.

A run directory holds ``last.pt`` (everything needed to resume), ``best.pt`` (weights with the best
validation Q_g, in focusfuse's weights format), ``log.jsonl`` (one line per epoch) and ``curves.png``.
The best weights are also installed under a name in the user data dir, for ``--weights NAME``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..methods.gacn.decision import decide_pair
from ..errors import UsageError, WeightsError
from ..io.images import atomic_write
from ..methods.gacn.model import GACN
from ..methods.gacn.weights import read_weights, save_weights, user_weights_dir
from .data import FocusPairs, PairRecipe, split_images, validation_pairs
from .loss import gacn_loss
from .plot import plot_curves
from .runs import check_run_folder, install, log_epoch

ProgressCallback = Callable[[str, int, int, dict[str, float]], None]


@dataclass
class TrainConfig:
    """Everything that defines a run (saved with it)."""

    images: str
    out: str
    segments: str | None = None
    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-4
    lr_decay: float = 0.8  # multiplied every ``lr_step`` epochs (paper: x0.8 every 2)
    lr_step: int = 2
    qg_weight: float = 1.0
    symmetric_dice: bool = False  # Dice on both frames' maps (see train.loss), in training and validation
    boundary_weight: float = 0.0  # weight of the boundary Dice (see train.loss), in training and validation
    boundary_width: int = 8  # px either side of the mask's boundary
    heaviside_k: float = 1.0
    samples_per_image: int = 4
    validation_every: int = 10  # every 10th image is held out
    validation_samples: int = 4
    crop: int = 156
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    amp: bool = True  # bfloat16 autocast on CUDA (measured slower than float32 on our CPU, so not there)
    max_steps: int = 0  # stop an epoch after this many steps (0 = whole epoch); for smoke tests
    name: str | None = None  # installed weights name (default: the run folder's name)
    init: str | None = None  # start from these weights (a focusfuse weights file) instead of random
    surrogate: bool = True  # surrogate gradients through the saturated steps (see GACN.use_surrogate_gradients)
    recipe: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_loaders(cfg: TrainConfig) -> tuple[FocusPairs, DataLoader, DataLoader]:
    train_paths, _ = split_images(cfg.images, cfg.validation_every)
    recipe = PairRecipe(crop=cfg.crop, **cfg.recipe)
    train_set = FocusPairs(train_paths, cfg.segments, samples_per_image=cfg.samples_per_image, seed=cfg.seed,
                           recipe=recipe)
    val_set = validation_pairs(cfg.images, cfg.segments, samples_per_image=cfg.validation_samples,
                               seed=cfg.seed + 1, recipe=recipe, every=cfg.validation_every)
    generator = torch.Generator().manual_seed(cfg.seed)  # re-seeded every epoch (see train)
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                              num_workers=cfg.workers, generator=generator)
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers)
    return train_set, train_loader, val_loader


def loss_options(cfg: TrainConfig) -> dict[str, Any]:
    """The loss settings of a run beyond the paper's (see train.loss)."""
    return {"symmetric_dice": cfg.symmetric_dice, "boundary_weight": cfg.boundary_weight,
            "boundary_width": cfg.boundary_width}


@torch.no_grad()
def validate(model: GACN, loader: DataLoader, device: torch.device, cfg: TrainConfig) -> dict[str, float]:
    """Mean loss terms on the fixed validation pairs, in eval mode (as the model is used)."""
    model.eval()
    totals: dict[str, float] = {}
    n = 0
    for a, b, mask in loader:
        a, b, mask = a.to(device), b.to(device), mask.to(device)
        p0, p = decide_pair(model, a, b)
        terms = gacn_loss(p0, p, a, b, mask, cfg.qg_weight, k=1000.0, **loss_options(cfg))
        accuracy = ((p0 > 0.5).float() == mask).float().mean()
        for key, value in {**{k: float(v) for k, v in terms.items()}, "accuracy": float(accuracy)}.items():
            totals[key] = totals.get(key, 0.0) + value * a.shape[0]
        n += a.shape[0]
    return {f"val_{k}": v / max(n, 1) for k, v in totals.items()}


def _checkpoint(path: Path, model: GACN, optimizer, scheduler, epoch: int, best: float, cfg: TrainConfig) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "epoch": epoch, "best_val_loss": best, "config": asdict(cfg)}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def initial_model(cfg: TrainConfig, device: torch.device) -> GACN:
    """Random initialisation, or the weights named by ``cfg.init``."""
    model = GACN()
    if cfg.init:
        state, _ = read_weights(cfg.init)
        model.load_state_dict(state)
    return model.to(device, memory_format=torch.channels_last)


def installed_name(cfg: TrainConfig) -> str:
    """The name the run's best weights are installed under: ``cfg.name``, else the run folder's name."""
    return cfg.name or Path(cfg.out).resolve().name


def installed_path(cfg: TrainConfig) -> Path:
    """Where the run's best weights are installed (see :func:`installed_name`)."""
    return user_weights_dir() / f"{installed_name(cfg)}.pt"


def check_run(cfg: TrainConfig, *, resume: bool = False, replace_installed: bool = False) -> None:
    """Refuse, before any work, a run that could not train or would silently replace installed weights."""
    check_run_folder(cfg.out)
    if cfg.init:
        try:
            read_weights(cfg.init)
        except WeightsError as exc:
            raise WeightsError(str(exc), option="init") from exc
    train_paths, validation_paths = split_images(cfg.images, cfg.validation_every)
    if not train_paths or not validation_paths:
        raise UsageError(f"{cfg.images}: {len(train_paths) + len(validation_paths)} image(s); training needs at "
                         f"least 2 (every {cfg.validation_every}th is held out for validation)")
    samples = len(train_paths) * cfg.samples_per_image
    if samples < cfg.batch_size:
        raise UsageError(f"{len(train_paths)} training image(s) x {cfg.samples_per_image} samples per image = "
                         f"{samples} pairs per epoch, fewer than the batch size {cfg.batch_size}: lower the batch "
                         "size or raise the samples per image", option="batch_size")
    target = installed_path(cfg)
    if target.exists() and not (resume or replace_installed):
        raise UsageError(f"weights named {installed_name(cfg)!r} are installed already ({target}): choose another "
                         "name, or allow overwriting to replace them", option="overwrite")


def train(cfg: TrainConfig, *, resume: bool = False, replace_installed: bool = False,
          progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Run (or resume) training; returns a summary with the best epoch, its metrics and file paths.

    The best epoch is the one with the lowest validation loss (Dice + lambda (1 - Q_g)). Installed
    weights of the same name are replaced only when resuming or with ``replace_installed``.
    """
    from ..backends.select import resolve_device

    check_run(cfg, resume=resume, replace_installed=replace_installed)
    out = Path(cfg.out)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    train_set, train_loader, val_loader = make_loaders(cfg)
    out.mkdir(parents=True, exist_ok=True)
    model = initial_model(cfg, device)
    if cfg.surrogate:
        model.use_surrogate_gradients()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step, gamma=cfg.lr_decay)
    start_epoch, best = 0, float("inf")
    log_path, last_path, best_path = out / "log.jsonl", out / "last.pt", out / "best.pt"
    if resume and last_path.exists():
        state = torch.load(last_path, map_location=device, weights_only=False)
        _refuse_changed_settings(out, state.get("config", {}), cfg)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best = state["epoch"] + 1, state["best_val_loss"]
        _truncate_log(log_path, start_epoch)
    elif log_path.exists():
        log_path.unlink()
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    use_amp = cfg.amp and device.type == "cuda"
    started = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        train_set.set_epoch(epoch)
        train_loader.generator.manual_seed(cfg.seed * 1000 + epoch)  # same shuffle on resume
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        sums: dict[str, float] = {}
        steps = len(train_loader) if cfg.max_steps <= 0 else min(cfg.max_steps, len(train_loader))
        epoch_start = time.time()
        for step, (a, b, mask) in enumerate(train_loader):
            if step >= steps:
                break
            a, b, mask = (t.to(device, non_blocking=True, memory_format=torch.channels_last) for t in (a, b, mask))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                p0, p = decide_pair(model, a, b)
            terms = gacn_loss(p0.float(), p.float(), a, b, mask, cfg.qg_weight, cfg.heaviside_k, **loss_options(cfg))
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            if progress is not None:
                progress("train", step + 1, steps, {k: v / (step + 1) for k, v in sums.items()})
        scheduler.step()
        record = {"epoch": epoch + 1, "lr": lr,
                  **{f"train_{k}": v / max(steps, 1) for k, v in sums.items()},
                  **validate(model, val_loader, device, cfg),
                  "epoch_seconds": time.time() - epoch_start, "elapsed_seconds": time.time() - started}
        improved = record["val_loss"] < best
        if improved:
            best = record["val_loss"]
            record["best"] = True
        _checkpoint(last_path, model, optimizer, scheduler, epoch, best, cfg)
        if improved:
            save_weights(model, best_path, _metadata(cfg, record, device))
        log_epoch(out, record)
        plot_curves(log_path, out / "curves.png")
        if progress is not None:
            progress("epoch", epoch + 1, cfg.epochs, record)
    installed = install(best_path, installed_path(cfg)) if best_path.exists() else None
    return {"best_val_loss": best, "best": str(best_path), "installed": installed, "log": str(log_path)}


def _refuse_changed_settings(out: Path, saved: dict[str, Any], cfg: TrainConfig) -> None:
    """A resumed run keeps the settings that define its pairs and its loss."""
    made_with = saved.get("recipe", {})
    if made_with != cfg.recipe:
        raise UsageError(f"{out} was trained with recipe settings {made_with or 'none (the defaults)'}: "
                         "resume with the same", option="recipe")
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    for key, value in loss_options(cfg).items():
        was = saved.get(key, defaults[key])  # runs made before an option existed used its default
        if was != value:
            raise UsageError(f"{out} was trained with {key}={was!r}: resume with the same", option=key)


def _truncate_log(log_path: Path, epochs_done: int) -> None:
    """Drop log lines of epochs after the last checkpoint (an interrupted epoch is run again)."""
    if log_path.exists():
        lines = [l for l in log_path.read_text().splitlines() if l.strip() and json.loads(l)["epoch"] <= epochs_done]
        log_path.write_text("".join(line + "\n" for line in lines))


def _metadata(cfg: TrainConfig, record: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {"training_data": str(cfg.images), "segments": cfg.segments, "epoch": record["epoch"],
            "val_qg": record["val_qg"], "val_dice": record["val_dice"], "device": str(device),
            "config": asdict(cfg)}

