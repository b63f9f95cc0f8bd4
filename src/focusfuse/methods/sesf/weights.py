"""SESF-Fuse weights: our format (architecture ``sesf-v1``) or the authors' bare state dict (same key names)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..gacn.weights import save_weights
from ..network_weights import load_network, read_network_weights
from . import ARCHITECTURE, DEFAULT_WEIGHTS_NAME
from .network import SESFNet

AUTHORS_KEYS = ("features.0.weight", "conv_decode_4.0.weight")
TITLE = "SESF-Fuse"


def save_sesf_weights(model: SESFNet, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> Path:
    return save_weights(model, path, metadata, ARCHITECTURE)


def read_sesf_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return read_network_weights(path, ARCHITECTURE, AUTHORS_KEYS, TITLE)


def load_sesf(weights: str | os.PathLike | SESFNet | None = None, device: torch.device | str = "cpu") -> SESFNet:
    """An SESFNet in eval mode on ``device`` from a path, an installed name, the default, or a model."""
    return load_network(SESFNet, weights, device, architecture=ARCHITECTURE, default_name=DEFAULT_WEIGHTS_NAME,
                        authors_keys=AUTHORS_KEYS, title=TITLE)


__all__ = ["save_sesf_weights", "read_sesf_weights", "load_sesf"]
