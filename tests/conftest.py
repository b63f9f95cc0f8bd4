"""Shared fixtures: the ../shared data folder (optional), small models and weights files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from focusfuse.methods.gacn.model import GACN
from focusfuse.methods.gacn.weights import save_weights

SHARED = Path(os.environ.get("FOCUSFUSE_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
OFFICIAL_WEIGHTS = SHARED / "reference" / "gacn_official" / "GACN.pkl"


def need_shared(*parts: str) -> Path:
    """Path under ../shared, or skip the test with a clear reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's shared data folder is not present)")
    return path


def random_model(seed: int = 0) -> GACN:
    """A GACN with random weights and non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = GACN()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture
def model() -> GACN:
    return random_model()


@pytest.fixture
def weights_file(tmp_path: Path) -> Path:
    """Random weights saved in focusfuse's own format."""
    return save_weights(random_model(), tmp_path / "random.pt", {"training_data": "none (test)"})


@pytest.fixture
def good_model() -> GACN:
    """Trained weights: the package's default weights if installed, else the official checkpoint."""
    from focusfuse.errors import WeightsError
    from focusfuse.methods.gacn.weights import load_model

    try:
        return load_model(None)
    except WeightsError:
        return load_model(need_shared("reference", "gacn_official", "GACN.pkl"))


@pytest.fixture
def official_model() -> GACN:
    from focusfuse.methods.gacn.weights import load_model

    return load_model(need_shared("reference", "gacn_official", "GACN.pkl"))


def random_blend_net(seed: int, **config):
    """A boundary-blend network (``config``: its shape) with random, non-zero weights everywhere (its last layer
    included), in eval mode."""
    from focusfuse.methods.gacn.blend_net import BlendNet

    torch.manual_seed(seed)
    net = BlendNet(**config)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    return net.eval()


def textured(h: int, w: int, seed: int = 0, channels: int = 0) -> np.ndarray:
    """Smooth random texture in [0, 1] (float32), HxW or HxWxC."""
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 0 else (h, w, channels)
    x = rng.random(shape).astype(np.float32)
    import cv2

    return np.clip(cv2.GaussianBlur(x, (0, 0), 1.0) * 1.5 - 0.25, 0, 1).astype(np.float32)


def focus_pair(h: int = 64, w: int = 80, seed: int = 0, channels: int = 0):
    """(A, B, mask): A sharp where mask is 1, B sharp elsewhere; float32 in [0, 1]."""
    import cv2

    sharp = textured(h, w, seed, channels)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 2.5)
    mask = np.zeros((h, w), np.float32)
    mask[:, : w // 2] = 1.0
    m = mask if channels == 0 else mask[:, :, None]
    a = m * sharp + (1 - m) * blurred
    b = (1 - m) * sharp + m * blurred
    return a.astype(np.float32), b.astype(np.float32), mask
