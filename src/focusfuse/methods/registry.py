"""Make a fusion method by name, its weights loaded onto a backend's device."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..backends.base import Backend
from . import METHOD_NAMES
from .base import FusionMethod
from .gacn.method import GacnMethod
from .gacn.model import GACN
from .gacn.weights import load_model

METHODS = METHOD_NAMES


def make_method(name: str, backend: Backend, *, weights: str | os.PathLike | GACN | None = None,
                strategy: str = "calibrated", reduce: int = 1, boundary_blend: str = "learned") -> FusionMethod:
    """Method ``name`` with its weights (if it has any) loaded onto ``backend``'s device (options already
    validated); ``strategy`` ``pair``: two frames, keeping the decision maps. ``reduce`` and ``boundary_blend``
    (learned, laplacian, off, or the blend net's weights) are GACN's."""
    if name not in METHODS:
        from ..errors import UsageError

        raise UsageError(f"unknown method {name!r} (use {', '.join(METHODS)})", option="method")
    loaded = load_method_weights(name, weights, backend.device)
    if name == "wavelet":
        from .wavelet.method import WaveletMethod

        return WaveletMethod(backend, pair=strategy == "pair")
    if name == "sesf":
        from .sesf.method import SesfMethod

        return SesfMethod(loaded, backend, strategy, pair=strategy == "pair")
    if name == "rpsnn":
        from .rpsnn.method import RpsnnMethod

        return RpsnnMethod(loaded, backend, pair=strategy == "pair")
    blend_net = None
    if boundary_blend not in ("off", "laplacian"):
        from .gacn.blend_net import load_blend_net

        blend_net = load_blend_net(None if boundary_blend == "learned" else boundary_blend, backend.device)
    return GacnMethod(loaded, backend, strategy, reduce, boundary_blend != "off", blend_net)


def load_method_weights(name: str, weights: Any, device: torch.device) -> Any:
    """The weights of method ``name`` loaded onto ``device`` (GACN, SESF-Fuse, R-PSNN), None for a method without
    weights; loading first lets their errors come before any work."""
    if name == "gacn":
        return load_model(weights, device)
    if name == "sesf":
        from .sesf.weights import load_sesf

        return load_sesf(weights, device)
    if name == "rpsnn":
        from .rpsnn.weights import load_rpsnn

        return load_rpsnn(weights, device)
    refuse_weights(name, weights)
    return None


def refuse_weights(name: str, weights: Any) -> None:
    """A method without weights given some: an error, not silence."""
    if weights is not None:
        from ..errors import UsageError

        raise UsageError(f"weights apply to the gacn, sesf and rpsnn methods; the {name} method has none",
                         option="weights")


__all__ = ["METHODS", "make_method", "load_method_weights"]
