"""The device backend against the CPU: stacks, tiles, --reduce, batch, a training step (marked ``gpu``).

They run on $FOCUSFUSE_TEST_DEVICE (benchmarks/gpu_check.sh sets it; ``cpu`` runs them here, end to end),
else on CUDA when present, else they are skipped.
"""

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from focusfuse import fuse_pair, fuse_stack
from focusfuse.cli import main
from focusfuse.io.images import read_image, write_image

from conftest import textured

pytestmark = pytest.mark.gpu


@pytest.fixture
def device() -> str:
    name = os.environ.get("FOCUSFUSE_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "")
    if not name:
        pytest.skip("needs CUDA (or FOCUSFUSE_TEST_DEVICE)")
    return name


def _frames(n=6, h=150, w=170, seed=0):
    return [np.round(textured(h, w, seed + s, 3) * 255).astype(np.uint8) for s in range(n)]


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """Fused images of two backends: within 1 level on >= 99.9% of pixels."""
    return np.mean(np.abs(a.astype(int) - b.astype(int)) <= 1) >= 0.999


@pytest.mark.parametrize("strategy", ["calibrated", "calibration", "serial"])
def test_stack_on_the_device_matches_the_cpu(good_model, device, strategy):
    frames = _frames()
    cpu = fuse_stack(frames, weights=good_model, device="cpu", strategy=strategy, align="none")
    dev = fuse_stack(frames, weights=good_model, device=device, strategy=strategy, align="none")
    assert _close(cpu.fused, dev.fused) and np.mean(cpu.index_map == dev.index_map) >= 0.99


def test_wavelet_on_the_device_matches_the_cpu(device):
    frames = _frames(n=5, h=500, w=520, seed=3)
    cpu = fuse_stack(frames, method="wavelet", device="cpu", align="none")
    dev = fuse_stack(frames, method="wavelet", device=device, align="none")
    tiled = fuse_stack(frames, method="wavelet", device=device, align="none", tile_size=256)
    assert tiled.tiles > 1 and _close(cpu.fused, dev.fused) and _close(dev.fused, tiled.fused)
    assert np.mean(cpu.index_map == dev.index_map) >= 0.999 and np.mean(dev.index_map == tiled.index_map) >= 0.999


def test_sesf_on_the_device_matches_the_cpu(device, tmp_path):
    from focusfuse.methods.sesf.network import SESFNet
    from focusfuse.methods.sesf.weights import save_sesf_weights

    torch.manual_seed(0)
    weights = save_sesf_weights(SESFNet().eval(), tmp_path / "sesf.pt")
    frames = _frames(n=3, h=160, w=170, seed=7)
    cpu = fuse_stack(frames, method="sesf", weights=weights, device="cpu", align="none")
    dev = fuse_stack(frames, method="sesf", weights=weights, device=device, align="none")
    assert _close(cpu.fused, dev.fused) and np.mean(cpu.index_map == dev.index_map) >= 0.999


def test_tiles_on_the_device_match_the_whole_image(good_model, device):
    frames = _frames(n=4, h=300, w=280)
    whole = fuse_stack(frames, weights=good_model, device=device, align="none", tile_size=0)
    tiled = fuse_stack(frames, weights=good_model, device=device, align="none", tile_size=96)
    assert tiled.tiles > 1 and _close(whole.fused, tiled.fused)
    assert np.mean(whole.index_map == tiled.index_map) >= 0.999


def test_reduce_on_the_device_matches_the_cpu(good_model, device):
    a, b = _frames(n=2, h=200, w=210, seed=5)
    cpu = fuse_pair(a, b, weights=good_model, device="cpu", reduce=2)
    dev = fuse_pair(a, b, weights=good_model, device=device, reduce=2)
    assert _close(cpu.fused, dev.fused)


def test_aligned_16_bit_stack_on_the_device_matches_the_cpu(good_model, device):
    import cv2

    scene = textured(160, 180, 7, 3)
    frames = []
    for k, sigma in enumerate((0.5, 1.5, 2.5, 1.0)):  # one scene, focused differently, drifting 1 px per frame
        frame = cv2.GaussianBlur(np.roll(scene, k, axis=1), (0, 0), sigma)
        frames.append(np.round(frame * 65535).astype(np.uint16))
    cpu = fuse_stack(frames, weights=good_model, device="cpu", align="translation")
    dev = fuse_stack(frames, weights=good_model, device=device, align="translation")
    assert dev.fused.dtype == np.uint16
    assert np.mean(np.abs(cpu.fused.astype(int) - dev.fused.astype(int)) <= 257) >= 0.999


def test_batch_on_the_device_matches_the_cpu(weights_file, device, tmp_path):
    root = tmp_path / "stacks"
    for k in range(2):
        folder = root / f"s{k}"
        folder.mkdir(parents=True)
        for i, frame in enumerate(_frames(n=3, h=64, w=72, seed=10 * k)):
            write_image(folder / f"f{i}.png", frame)
    for run, name in enumerate(("cpu", device)):
        r = CliRunner().invoke(main, ["batch", str(root), "-o", str(tmp_path / f"out{run}"), "--weights",
                                      str(weights_file), "--device", name, "--align", "none", "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout.splitlines()[-1])["ok"] == 2
    for k in range(2):
        assert _close(read_image(tmp_path / "out0" / f"s{k}.tif"), read_image(tmp_path / "out1" / f"s{k}.tif"))


def test_a_training_step_on_the_device(tmp_path, device, monkeypatch):
    from focusfuse.train.loop import TrainConfig, train

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # installed weights stay in the test's folder
    images = tmp_path / "images"
    images.mkdir()
    for i in range(12):
        write_image(images / f"i{i:02d}.png", np.round(textured(80, 96, i, 3) * 255).astype(np.uint8))
    cfg = TrainConfig(images=str(images), out=str(tmp_path / "run"), epochs=1, batch_size=2, crop=48,
                      samples_per_image=1, device=device, max_steps=2, name="gpu-smoke")
    summary = train(cfg, replace_installed=True)
    assert np.isfinite(summary["best_val_loss"])
