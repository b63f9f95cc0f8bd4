"""Run folders, the image split, the epoch step and installed weights shared by the SESF-Fuse, R-PSNN and blend
trainings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch

from ..errors import UsageError
from ..io.images import atomic_write


def install_target(install_as: str | None, replace: bool) -> Path | None:
    """Where the best weights will be installed as ``install_as`` (None: not installed); refused before any
    work when weights of that name exist and ``replace`` is not set."""
    from ..methods.gacn.weights import user_weights_dir

    if install_as is None:
        return None
    target = user_weights_dir() / f"{install_as}.pt"
    if target.exists() and not replace:
        raise UsageError(f"weights named {install_as!r} are installed already ({target}); choose another name "
                         "or replace them", option="name")
    return target


def check_run_folder(out: str | Path) -> None:
    """Refuse a run folder that is a file."""
    if Path(out).exists() and not Path(out).is_dir():
        raise UsageError(f"{out}: is a file, not a run folder", option="out")


def training_split(images: str | Path) -> tuple[list[Path], list[Path]]:
    """(training, validation) images of a folder (every 10th held out), refused unless both have some."""
    from .data import split_images

    training, validation = split_images(images)
    if len(training) < 1 or not validation:
        raise UsageError(f"{images}: need training images and at least one held out for validation (every 10th "
                         f"image); found {len(training) + len(validation)}", option="images")
    return training, validation


def start_run(out: str | Path, install_as: str | None, replace: bool) -> tuple[Path, Path | None]:
    """(the run folder, created; where its best weights will be installed), after refusing a folder that
    already holds a run and then an installed name that is taken."""
    out = Path(out)
    check_run_folder(out)
    if (out / "best.pt").exists():
        raise UsageError(f"{out} already holds a run (best.pt); choose another run folder", option="out")
    target = install_target(install_as, replace)
    out.mkdir(parents=True, exist_ok=True)
    return out, target


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, train_set: torch.Tensor,
                order: torch.Tensor, steps: int, batch_size: int, device: torch.device,
                loss_of: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, float]:
    """``steps`` optimizer steps on batches of ``train_set`` taken in ``order`` (``loss_of(batch)``, the batch on
    ``device``); (the mean training loss, the learning rate used). The model is left in training mode."""
    model.train()
    total = 0.0
    for step in range(steps):
        loss = loss_of(train_set[order[step * batch_size:(step + 1) * batch_size]].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / max(steps, 1), optimizer.param_groups[0]["lr"]


def log_epoch(out: Path, row: dict[str, Any]) -> None:
    with open(out / "log.jsonl", "a") as log:
        log.write(json.dumps(row) + "\n")


def install(best: Path, target: Path | None) -> str | None:
    """Copy the best weights to ``target`` atomically; returns where (None: not installed)."""
    if target is None:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    return str(atomic_write(target, lambda tmp: shutil.copyfile(best, tmp)))


__all__ = ["install_target", "check_run_folder", "training_split", "start_run", "train_epoch", "log_epoch", "install"]
