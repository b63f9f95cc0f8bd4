"""Checkpoint parity with the authors' outputs on the 26 GACN test pairs (needs ../shared)."""


import numpy as np
import pytest
import torch

from focusfuse.ops.color import to_tensor
from focusfuse.backends.select import select_backend
from focusfuse.engine.fuse import fuse_tensors
from focusfuse.methods.gacn.network import GacnNetwork
from focusfuse.io.images import read_image

from conftest import SHARED

PAIRS = SHARED / "data" / "test" / "gacn26"
REFERENCE = SHARED / "reference" / "gacn_official" / "gacn26"
NAMES = sorted(p.name[: -len("_1.png")] for p in PAIRS.glob("*_1.png")) if PAIRS.exists() else []


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    mse = np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_all_26_pairs_are_present():
    if not PAIRS.exists():
        pytest.skip(f"needs {PAIRS} (shared data folder absent)")
    assert len(NAMES) == 26


@pytest.mark.parametrize("name", NAMES or ["(shared data absent)"])
def test_parity_with_official_outputs(name, official_model):
    a = to_tensor(read_image(PAIRS / f"{name}_1.png"))
    b = to_tensor(read_image(PAIRS / f"{name}_2.png"))
    with torch.inference_mode():
        fused, p, _ = fuse_tensors(GacnNetwork(official_model, select_backend("cpu")), a, b)
    ours = np.round(fused.clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy() * 255)
    reference = read_image(REFERENCE / f"{name}_fused.png")
    assert psnr(ours, reference) >= 45.0
    dm = read_image(REFERENCE / f"{name}_dmfinal.png").astype(np.float64) / 65535.0
    agreement = np.mean(np.abs(p.numpy() - dm) <= 1.0 / 255.0)
    assert agreement >= 0.995
