"""SESF-Fuse weights: our format (architecture ``sesf-v1``) or the authors' bare state dict (same key names)."""

from __future__ import annotations

import copy
import datetime as _dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ...errors import WeightsError
from ..gacn.weights import FORMAT, FORMAT_VERSION, fitted, load_problem, resolve_weights
from . import ARCHITECTURE, DEFAULT_WEIGHTS_NAME
from .network import SESFNet


def save_sesf_weights(model: SESFNet, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> Path:
    """Save weights in our format (atomically: temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **(metadata or {})}
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "architecture": ARCHITECTURE,
                "state_dict": state, "metadata": meta}, tmp)
    os.replace(tmp, path)
    return path


def read_sesf_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, metadata) from our format or the authors' checkpoint (a bare state dict)."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise WeightsError(f"cannot read weights file {path}: {load_problem(path, exc)}", option="weights") from exc
    if not isinstance(payload, Mapping):
        raise WeightsError(f"{path} is not an SESF-Fuse weights file", option="weights")
    if payload.get("format") == FORMAT:
        if payload.get("architecture") != ARCHITECTURE:
            raise WeightsError(f"{path} holds architecture {payload.get('architecture')!r}, the sesf method needs "
                               f"{ARCHITECTURE!r}", option="weights")
        return dict(payload["state_dict"]), dict(payload.get("metadata", {}))
    if "features.0.weight" in payload and "conv_decode_4.0.weight" in payload:
        return dict(payload), {"source": "the authors' SESF-Fuse checkpoint layout"}
    raise WeightsError(f"{path} is neither a focusfuse SESF weights file nor an SESF-Fuse checkpoint",
                       option="weights")


def load_sesf(weights: str | os.PathLike | SESFNet | None = None, device: torch.device | str = "cpu") -> SESFNet:
    """An SESFNet in eval mode on ``device`` from a path, an installed name, the default, or a model."""
    if isinstance(weights, SESFNet):
        model = weights if not weights.training and weights.device == torch.device(device) else copy.deepcopy(weights)
        return model.to(device).eval()
    path = resolve_weights(weights, DEFAULT_WEIGHTS_NAME, "the authors' SESF-Fuse checkpoint")
    state, metadata = read_sesf_weights(path)
    return fitted(SESFNet(), state, metadata, path, "SESF-Fuse").to(device).eval()


__all__ = ["save_sesf_weights", "read_sesf_weights", "load_sesf"]
