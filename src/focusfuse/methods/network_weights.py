"""Weights files of the networks other than GACN (SESF-Fuse, R-PSNN): our format or the authors' bare state dict.

Our format is GACN's (``{"format": "focusfuse-weights", "architecture": ..., "state_dict": ..., "metadata":
...}``); the authors' checkpoints are bare state dicts whose keys our modules reproduce, so they load as
they are. Everything loads with ``weights_only=True``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import WeightsError
from .gacn.weights import fitted, load_payload, our_format_state, resolve_weights


def read_network_weights(path: str | os.PathLike, architecture: str, authors_keys: Sequence[str],
                         title: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, metadata) from our format (``architecture``) or the authors' checkpoint (a bare state dict
    holding ``authors_keys``; none: the network has no authors' checkpoint); ``title`` names the network in
    errors."""
    path = Path(path)
    payload = load_payload(path, title, option="weights")
    if (state := our_format_state(payload, path, architecture, title, option="weights")) is not None:
        return state
    if authors_keys and all(key in payload for key in authors_keys):
        return dict(payload), {"source": f"the authors' {title} checkpoint layout"}
    raise WeightsError(f"{path} is neither a focusfuse {title} weights file nor a {title} checkpoint",
                       option="weights")


def load_network(network: type[nn.Module], weights: Any, device: torch.device | str, *, architecture: str,
                 default_name: str, authors_keys: Sequence[str], title: str) -> Any:
    """A ``network`` in eval mode on ``device`` from a path, an installed name, the default, or a model. A
    network whose shape varies is built from the keyword arguments saved as its metadata's ``config``."""
    if isinstance(weights, nn.Module):
        if not isinstance(weights, network):
            raise WeightsError(f"{type(weights).__name__} weights given to the {title} method", option="weights")
        model = weights if not weights.training and weights.device == torch.device(device) else copy.deepcopy(weights)
        return model.to(device).eval()
    other = f"the authors' {title} checkpoint" if authors_keys else "weights trained by focusfuse train"
    path = resolve_weights(weights, default_name, other)
    state, metadata = read_network_weights(path, architecture, authors_keys, title)
    config = metadata.get("config") or {}
    try:
        model = network(**config)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: unusable {title} shape {config!r} ({exc})", option="weights") from exc
    return fitted(model, state, metadata, path, title).to(device).eval()


__all__ = ["read_network_weights", "load_network"]
