"""R-PSNN weights: our format (architecture ``rpsnn-v1``) or the authors' bare state dict (same key names)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..gacn.weights import save_weights
from ..network_weights import load_network
from . import ARCHITECTURE, DEFAULT_WEIGHTS_NAME
from .network import RPSNN

AUTHORS_KEYS = ("Siamese_1.0.conv.0.weight", "Gen_Module.7.conv.0.weight")


def save_rpsnn_weights(model: RPSNN, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> Path:
    return save_weights(model, path, metadata, ARCHITECTURE)


def load_rpsnn(weights: str | os.PathLike | RPSNN | None = None, device: torch.device | str = "cpu") -> RPSNN:
    """An R-PSNN in eval mode on ``device`` from a path, an installed name, the default, or a model."""
    return load_network(RPSNN, weights, device, architecture=ARCHITECTURE, default_name=DEFAULT_WEIGHTS_NAME,
                        authors_keys=AUTHORS_KEYS, title="R-PSNN")


__all__ = ["save_rpsnn_weights", "load_rpsnn"]
