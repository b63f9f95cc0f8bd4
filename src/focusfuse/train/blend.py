"""``focusfuse train --method blend``: the network that corrects the boundary blend's weights of GACN stacks.

Data: for every image, an 8-frame stack rendered with layered defocus (:func:`make_stack`; a defocused near
object spreads over the background, as real lenses do) over a depth map from its human segmentation (each
segment at its own depth, in a ``SLOPED`` share of the stacks on its own tilted plane; random shapes without
segmentations), fused by GACN with its hard switch (the
default weights, ``boundary_blend="off"``). Crops are taken around the blend's band (the final index map's
edges), holding the frames, the all-in-focus truth, GACN's fused image and the band.

Loss: the squared error (8-bit scale) against the truth of what the blend makes of the crop,
``(1 - band) * fused + band * sum_k softmax_k(2 log(E_k + 1) + c_k) * frame_k`` (the same weights as
inference, normalised), ignoring the outer ``MARGIN`` px. Adam with a one-cycle schedule; the best epoch on
crops of the held-out images (every 10th) is kept.

Then the refiner (:mod:`focusfuse.methods.gacn.blend_refiner`), with the weights' network fixed: the same loss on
``(1 - band) * fused + band * (blend + refiner(...))``, its inputs computed as inference streams them.
Then, when asked (``pair_epochs``), the pair refiner the same way on crops of rendered pairs (a near layer of
segments in front of the rest, one frame focused on each, fused by GACN with its own maps).
``init`` skips the first stage: the weights' network comes from a blend trained before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..evaluation.synthetic import layered_pair, make_stack
from ..io.images import read_image
from ..jobs.demo import to_uint8
from ..methods.gacn.blend_net import BlendNet, load_blend_net, save_blend_weights
from ..methods.gacn.blend_refiner import bin_weights, log_share, within_pair
from ..methods.gacn.boundary_blend import SHARPNESS_POWER, blend_band, laplacian_energy
from ..ops.color import dtype_scale, to_gray
from .data import near_mask, read_segments, segment_depth, shapes_depth, sloped_segment_depth
from .loop import seed_everything
from .runs import install, log_epoch, start_run, training_split

Progress = Callable[[int, int, dict[str, float]], None]

FRAMES = 8  # frames of every rendered stack
MAX_BLUR = (5.0, 10.0)  # disk radius (px) of the nearest layer when the farthest is in focus, drawn per stack
CROP = 128  # crops kept per stack (around the band), px
CROPS_PER_IMAGE = 3
MARGIN = 8  # px of a patch's edge left out of the loss (the weights there see past the patch)
CHANNELS = 3 * FRAMES + 3 + 3 + 1  # frames, truth, GACN's fused image, band
SLOPED = 0.5  # the share of training stacks whose segments are tilted planes (continuous depth within objects)
PAIR_BLUR = (1.5, 9.0)  # disk radius (px) of a pair's layer in the frame focused on the other, drawn per layer
REFINER_EPOCHS = 120
REFINER_LR = 1e-3  # the refiner's one-cycle peak
PAIR_EPOCHS = 0  # the pair refiner is not trained unless asked (pairs are not redrawn by default)


def stack_crops(image: np.ndarray, depth: np.ndarray, model: Any, rng: np.random.Generator,
                crops: int = CROPS_PER_IMAGE, size: int = CROP) -> np.ndarray:
    """(crops, CHANNELS, size, size) uint8: a stack rendered from ``image`` at ``depth``, fused by GACN
    ``model`` with its hard switch, cut around the blend's band (the band scaled to 0..255)."""
    stack = make_stack(_rgb(image), depth, FRAMES, max_blur=float(rng.uniform(*MAX_BLUR)))
    return _fused_crops(stack.frames, stack.truth, model, rng, crops, size)


def pair_crops(image: np.ndarray, near: np.ndarray, model: Any, rng: np.random.Generator,
               crops: int = CROPS_PER_IMAGE, size: int = CROP) -> np.ndarray:
    """(crops, 3 * 2 + 7, size, size) uint8: a pair rendered from ``image`` with the ``near`` mask (1: near)
    in front, one frame focused near and one far (each layer's blur in the other frame drawn from
    ``PAIR_BLUR``; the order of the two random), fused by GACN ``model``, cut around the band."""
    image = _rgb(image)
    blur_far, blur_near = rng.uniform(*PAIR_BLUR, size=2)
    frames = list(layered_pair(image, near, float(blur_far), float(blur_near)))
    return _fused_crops(frames[::-1] if rng.random() < 0.5 else frames, image, model, rng, crops, size)


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]


def _fused_crops(frames: Sequence[np.ndarray], truth: np.ndarray, model: Any, rng: np.random.Generator,
                 crops: int, size: int) -> np.ndarray:
    """Float frames and truth in [0, 1] -> uint8 crops (frames, truth, GACN's fused image, band) around the band."""
    from ..engine.fuse import fuse_stack

    frames = [to_uint8(f) for f in frames]
    result = fuse_stack(frames, weights=model, device=model.device, align="none", boundary_blend="off",
                        tile_size=0, workers=0)
    band = blend_band(torch.from_numpy(result.index_map.astype(np.int64)))[0, 0].numpy()
    planes = np.concatenate(frames + [to_uint8(truth), result.fused, to_uint8(band)[:, :, None]], axis=2)
    h, w = band.shape
    ys, xs = np.nonzero(band > 0.5)
    out = []
    for _ in range(crops):
        k = int(rng.integers(len(ys))) if len(ys) else None
        cy, cx = (ys[k], xs[k]) if k is not None else (int(rng.integers(h)), int(rng.integers(w)))
        y0, x0 = int(np.clip(cy - size // 2, 0, h - size)), int(np.clip(cx - size // 2, 0, w - size))
        out.append(planes[y0:y0 + size, x0:x0 + size].transpose(2, 0, 1))
    return np.stack(out)


def image_crops(path: Path, segments_dir: Path | None, seed: int, crops: int, size: int,
                frames: int = FRAMES) -> np.ndarray:
    """The crops of one training image (deterministic in ``seed``), GACN with the default weights on the CPU:
    of a stack of ``frames`` (2: a pair)."""
    from ..methods.gacn.weights import load_model

    torch.set_num_threads(1)
    image = read_image(path)
    image = image.astype(np.float32) / dtype_scale(image.dtype)
    if min(image.shape[:2]) < size:
        raise UsageError(f"{path}: smaller than the {size} px crops", option="images")
    rng = np.random.default_rng(seed)
    segments = read_segments(segments_dir, path)
    model = load_model(None, "cpu")
    if frames == 2:
        return pair_crops(image, near_mask(segments, image.shape[:2], rng), model, rng, crops, size)
    if segments is None:
        depth = shapes_depth(*image.shape[:2], rng)
    else:
        depth = sloped_segment_depth(segments, rng) if rng.random() < SLOPED else segment_depth(segments, rng)
    return stack_crops(image, depth, model, rng, crops, size)


def make_crops(paths: Sequence[Path], segments_dir: Path | None, seed: int, workers: int = 0,
               crops: int = CROPS_PER_IMAGE, size: int = CROP, frames: int = FRAMES) -> torch.Tensor:
    """(len(paths) * crops, 3 * frames + 7, size, size) uint8 crops of ``paths`` (``frames`` 2: pairs);
    ``workers`` processes (0: here)."""
    jobs = [(path, segments_dir, seed * 1_000_003 + k, crops, size, frames) for k, path in enumerate(paths)]
    if workers > 0:
        with ProcessPoolExecutor(workers) as pool:  # the platform's start method, as torch's data loaders
            parts = list(pool.map(image_crops, *zip(*jobs)))
    else:
        threads = torch.get_num_threads()
        try:
            parts = [image_crops(*job) for job in jobs]
        finally:
            torch.set_num_threads(threads)
    return torch.from_numpy(np.concatenate(parts))


def frame_count(batch: torch.Tensor) -> int:
    """The frames of a batch of crops (3 * frames + 7 channels: 2 for pairs, FRAMES for stacks)."""
    return (batch.shape[1] - 7) // 3


def _split(batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(frames (B * frames, 3, H, W), truth, GACN's fused image, band) of uint8 crops, float in [0, 1]."""
    x = batch.float() / 255.0
    b, _, h, w = x.shape
    n = frame_count(batch)
    return x[:, :3 * n].reshape(b * n, 3, h, w), x[:, 3 * n:3 * n + 3], x[:, 3 * n + 3:3 * n + 6], x[:, -1:]


def refined(net: BlendNet, batch: torch.Tensor, orders: tuple[bool, ...] = (False, True)) -> tuple[torch.Tensor,
                                                                                                     torch.Tensor]:
    """(what the blend and ``net``'s refiner for the crops' frame count make of them, their truth), float
    (B, 3, H, W) in [0, 1]: the refiner's inputs as :class:`~focusfuse.methods.gacn.boundary_blend.SharpnessBlend`
    streams them. ``orders``: the refiner's orders of the bins (inference: both)."""
    frames, truth, fused, band = _split(batch)
    b, h, w, n = truth.shape[0], truth.shape[-2], truth.shape[-1], frame_count(batch)
    refiner = net.refiner_for(n)
    gray = to_gray(frames)
    log_energy = torch.log1p(laplacian_energy(gray))
    with torch.no_grad():
        score = (SHARPNESS_POWER * log_energy + net(gray, log_energy)).reshape(b, n, 1, h, w)
        frames = frames.reshape(b, n, 3, h, w)
        weights = torch.exp(score - score.amax(1, keepdim=True))  # the streamed weights up to a common factor
        total = weights.sum(1)
        blend = (weights * frames).sum(1) / total
        hats = torch.tensor([bin_weights(k / (n - 1), refiner.bins) for k in range(n)],
                            device=batch.device)  # (n, bins)
        binned_weights = torch.einsum("bfxhw,fk->bkxhw", weights, hats)  # (b, bins, 1, h, w)
        binned = torch.einsum("bfhw,fk,bfchw->bkchw", weights[:, :, 0], hats, frames) / binned_weights
        shares = log_share(binned_weights[:, :, 0], total)
    binned = binned.reshape(b, -1, h, w)
    out = blend + refiner(blend, fused, binned, shares, band, orders)
    if n == 2:
        out = within_pair(out, binned)
    return fused + band * (out - fused), truth


def refiner_loss(net: BlendNet, batch: torch.Tensor, orders: tuple[bool, ...] = (False, True)) -> torch.Tensor:
    """Mean squared error (8-bit scale) of the refined crops against the truth, inside the margin."""
    return _inner_mse(*refined(net, batch, orders))


def blended(net: BlendNet, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(what the blend makes of the crops, their truth), float (B, 3, H, W) in [0, 1], from uint8 crops."""
    frames, truth, fused, band = _split(batch)
    b, h, w = truth.shape[0], truth.shape[-2], truth.shape[-1]
    gray = to_gray(frames)
    log_energy = torch.log1p(laplacian_energy(gray))
    n = frame_count(batch)
    score = SHARPNESS_POWER * log_energy + net(gray, log_energy)  # the log of the inference weights
    weights = torch.softmax(score.reshape(b, n, 1, h, w), dim=1)
    mean = (weights * frames.reshape(b, n, 3, h, w)).sum(1)
    return fused + band * (mean - fused), truth


def blend_loss(net: BlendNet, batch: torch.Tensor) -> torch.Tensor:
    """Mean squared error (8-bit scale) of the blended crops against the truth, inside the margin."""
    return _inner_mse(*blended(net, batch))


def _inner_mse(out: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    inner = (slice(None), slice(None), slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    return F.mse_loss(out[inner], truth[inner]) * 255.0 ** 2


def random_patches(crops: torch.Tensor, batch_size: int, patch: int, rng: np.random.Generator,
                   transpose: bool = False) -> torch.Tensor:
    """A batch of ``patch``-px patches at random places of random crops, randomly flipped (and transposed)."""
    idx = torch.from_numpy(rng.integers(0, len(crops), batch_size))
    y0, x0 = (int(v) for v in rng.integers(0, crops.shape[-1] - patch + 1, 2))
    x = crops[idx][:, :, y0:y0 + patch, x0:x0 + patch]
    if rng.random() < 0.5:
        x = x.flip(3)
    if rng.random() < 0.5:
        x = x.flip(2)
    if transpose and rng.random() < 0.5:
        x = x.transpose(2, 3)
    return x


def train_blend(images: str | Path, out: str | Path, *, segments: str | Path | None = None, epochs: int = 40,
                steps_per_epoch: int = 50, batch_size: int = 16, lr: float = 3e-3, patch: int = 96,
                crops_per_image: int = CROPS_PER_IMAGE, seed: int = 0, device: str = "auto", workers: int = 0,
                refiner_epochs: int = REFINER_EPOCHS, refiner_lr: float = REFINER_LR, pair_epochs: int = PAIR_EPOCHS,
                init: str | Path | None = None, max_steps: int = 0, install_as: str | None = None,
                replace_installed: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Train the blend net on stacks rendered from ``images`` (every 10th image held out: fixed validation
    crops), then its refiner for ``refiner_epochs`` (0: none), then its pair refiner on rendered pairs for
    ``pair_epochs`` (0: none); ``out`` gets ``best.pt`` (lowest validation MSE of the last stage) and
    ``log.jsonl``. ``lr``, ``refiner_lr``: the one-cycle peaks (the pair refiner's: ``refiner_lr``). ``init``:
    blend weights whose weights' network (and refiners, where not trained again) are kept (the first stage is
    skipped). ``workers``: processes that render and fuse the stacks;
    ``max_steps`` > 0 caps the steps of an epoch (a smoke test). Returns a summary."""
    from ..backends.select import resolve_device

    if not CROP >= patch > 2 * MARGIN:
        raise UsageError(f"patch {patch}: between {2 * MARGIN + 1} and {CROP} px", option="crop")
    training, validation = training_split(images)
    first = None if init is None else _initial_blend(init)  # refused before any work when unusable
    out, installed = start_run(out, install_as, replace_installed)
    target = resolve_device(device)
    seed_everything(seed)
    segments_dir = None if segments is None else Path(segments)
    started = time.perf_counter()
    stacks = refiner_epochs > 0 or first is None
    sets = {"stacks": (make_crops(training, segments_dir, seed, workers, crops_per_image),
                       make_crops(validation, segments_dir, seed + 1, workers, crops_per_image)) if stacks else None,
            "pairs": (make_crops(training, segments_dir, seed + 2, workers, crops_per_image, frames=2),
                      make_crops(validation, segments_dir, seed + 3, workers, crops_per_image, frames=2))
            if pair_epochs > 0 else None}
    rendered = round(time.perf_counter() - started, 1)
    net = (BlendNet() if first is None else first).to(target, memory_format=torch.contiguous_format)
    baselines = {}  # validation MSE of GACN's image, and of the blends without refiners (an untrained net)
    with torch.no_grad():
        for name, crops in sets.items():
            if crops is not None:
                baselines[f"val_mse_gacn_{name}"] = gacn_mse(crops[1])
                untrained = BlendNet(pair_refiner={}).to(target)  # (its pair refiner changes nothing)
                baselines[f"val_mse_plain_{name}"] = validation_mse(untrained, crops[1], target, refiner_loss
                                                                    if name == "pairs" else blend_loss)
    steps = steps_per_epoch if max_steps == 0 else min(max_steps, steps_per_epoch)
    stages = ([] if first is not None else [("weights", epochs, lr, blend_loss, "stacks")]) + \
        ([("refiner", refiner_epochs, refiner_lr, refiner_loss, "stacks")] if refiner_epochs > 0 else []) + \
        ([("pair_refiner", pair_epochs, refiner_lr, refiner_loss, "pairs")] if pair_epochs > 0 else [])
    total_epochs = sum(stage[1] for stage in stages)
    metadata = {"images": str(images), "segments": None if segments is None else str(segments), "epochs": epochs,
                "refiner_epochs": refiner_epochs, "pair_epochs": pair_epochs, "init": None if init is None else
                str(init), "steps_per_epoch": steps, "batch_size": batch_size, "patch": patch, "lr": lr,
                "refiner_lr": refiner_lr, "seed": seed, "frames": FRAMES, "max_blur": list(MAX_BLUR),
                "pair_blur": list(PAIR_BLUR), "crops": {name: len(c[0]) for name, c in sets.items() if c is not None},
                **baselines}
    rng = np.random.default_rng(seed)
    summary: dict[str, Any] = dict(baselines)
    best_state = (net if first is None else first).state_dict()  # what the refiners are trained on
    done = 0
    for stage, stage_epochs, peak, loss_of, data in stages:
        train_set, val_set = sets[data]
        if stage != "weights":  # a refiner, the rest fixed (one in ``init`` is trained on)
            net = BlendNet(**{**net.config, stage: {}}).to(target)
            net.load_state_dict(best_state, strict=False)
            for parameter in net.parameters():
                parameter.requires_grad_(False)
            for parameter in getattr(net, stage).parameters():
                parameter.requires_grad_(True)
        trainable = [parameter for parameter in net.parameters() if parameter.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=peak / 3)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, peak, total_steps=stage_epochs * steps,
                                                       pct_start=0.1)
        best, best_epoch = float("inf"), -1
        for epoch in range(stage_epochs):
            net.train()
            running = 0.0
            for _ in range(steps):
                patches = random_patches(train_set, batch_size, patch, rng, transpose=stage != "weights")
                if stage == "weights":
                    loss = loss_of(net, patches.to(target))
                else:  # one order of the bins, drawn at random: half the work of both, which inference averages
                    loss = loss_of(net, patches.to(target), (bool(rng.random() < 0.5),))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                running += loss.item()
            val = validation_mse(net, val_set, target, loss_of)
            done += 1
            row = {"epoch": done, "stage": stage, "train_mse": running / steps, "val_mse": val,
                   "val_mse_plain": baselines[f"val_mse_plain_{data}"],
                   "val_mse_gacn": baselines[f"val_mse_gacn_{data}"], "lr": optimizer.param_groups[0]["lr"],
                   "seconds": round(time.perf_counter() - started, 1)}
            log_epoch(out, row)
            if val < best:
                best, best_epoch = val, epoch + 1
                best_state = {name: value.detach().clone() for name, value in net.state_dict().items()}
                save_blend_weights(net, out / "best.pt", {**metadata, "stage": stage, "epoch": best_epoch,
                                                          "val_mse": val})
            if progress is not None:
                progress(done, total_epochs, row)
        summary.update({f"{stage}_best_epoch": best_epoch, f"{stage}_val_mse": best})
    final, data = (stages[-1][0], stages[-1][4]) if stages else (None, None)
    return {**summary, "val_mse_plain": baselines.get(f"val_mse_plain_{data}", float("nan")),
            "best_epoch": summary.get(f"{final}_best_epoch", -1),
            "best_val_mse": summary.get(f"{final}_val_mse", float("nan")), "weights": str(out / "best.pt"),
            "installed": install(out / "best.pt", installed), "render_seconds": rendered,
            "seconds": round(time.perf_counter() - started, 1)}


def _initial_blend(init: str | Path) -> BlendNet:
    """The blend weights training starts from; an unusable file is refused naming ``init``."""
    from ..errors import WeightsError

    try:
        return load_blend_net(init, "cpu")
    except WeightsError as exc:
        raise WeightsError(str(exc), option="init") from exc


def gacn_mse(crops: torch.Tensor) -> float:
    """Mean squared error (8-bit scale, inside the margin) of GACN's own fused image in ``crops``."""
    _, truth, fused, _ = _split(crops)
    return _inner_mse(fused, truth).item()


def validation_mse(net: BlendNet, crops: torch.Tensor, device: torch.device,
                   loss_of: Callable[[BlendNet, torch.Tensor], torch.Tensor] | None = None,
                   batch_size: int = 16) -> float:
    """Mean of the validation crops' loss (``blend_loss`` unless given; whole crops, inside the margin)."""
    loss_of = loss_of or blend_loss
    net.eval()
    with torch.no_grad():
        losses = [loss_of(net, crops[k:k + batch_size].to(device)).item() * len(crops[k:k + batch_size])
                  for k in range(0, len(crops), batch_size)]
    return sum(losses) / len(crops)


__all__ = ["train_blend", "stack_crops", "pair_crops", "make_crops", "blend_loss", "blended", "refiner_loss",
           "refined"]
