"""Training the boundary blend's network (train/blend.py, ``focusfuse train --method blend``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import random_blend_net, textured
from focusfuse.cli import main
from focusfuse.errors import UsageError
from focusfuse.io.images import write_image
from focusfuse.methods.gacn.blend_net import load_blend_net
from focusfuse.methods.gacn.boundary_blend import SharpnessBlend
from focusfuse.ops.color import to_gray
from focusfuse.train.blend import (CHANNELS, FRAMES, blend_loss, blended, make_crops, pair_crops, stack_crops,
                                   train_blend)
from focusfuse.train.data import shapes_depth


def test_stack_crops_hold_frames_truth_fused_and_band_around_the_band(good_model):
    image = np.round(textured(150, 170, 5, 3) * 255).astype(np.uint8)
    yy, xx = np.mgrid[:150, :170]
    depth = ((yy - 75) ** 2 + (xx - 85) ** 2 < 45 ** 2).astype(np.float32)
    crops = stack_crops(image, depth, good_model, np.random.default_rng(0), crops=3, size=64)
    assert crops.shape == (3, CHANNELS, 64, 64) and crops.dtype == np.uint8
    truth = crops[:, 3 * FRAMES:3 * FRAMES + 3]
    band = crops[:, -1]
    assert (band[:, 32, 32] > 127).all()  # centred on the blend's band
    # the truth is a crop of the image itself
    for crop in truth:
        hw = crop.transpose(1, 2, 0)
        assert any(np.array_equal(hw, image[y:y + 64, x:x + 64]) for y in range(87) for x in range(107))


def test_pair_crops_hold_two_frames_truth_fused_and_band(good_model):
    image = textured(150, 170, 6, 3)
    yy, xx = np.mgrid[:150, :170]
    near = ((yy - 75) ** 2 + (xx - 85) ** 2 < 45 ** 2).astype(np.float32)
    crops = pair_crops(image, near, good_model, np.random.default_rng(0), crops=2, size=64)
    assert crops.shape == (2, 13, 64, 64) and crops.dtype == np.uint8
    assert (crops[:, -1, 32, 32] > 127).all()  # centred on the band
    truth = np.round(image * 255).astype(np.uint8)
    for crop in crops:
        hw = crop[6:9].transpose(1, 2, 0)
        assert any(np.array_equal(hw, truth[y:y + 64, x:x + 64]) for y in range(87) for x in range(107))
        a, b = crop[0:3].astype(int), crop[3:6].astype(int)
        assert np.abs(a - b).mean() > 1  # two frames focused apart


def test_training_weighs_the_frames_as_inference_does():
    rng = np.random.default_rng(1)
    batch = torch.from_numpy(rng.integers(0, 256, (1, CHANNELS, 40, 44), dtype=np.uint8))
    batch[:, -1] = 255  # the band everywhere: the output is the weighted mean of the frames
    net = random_blend_net(4)
    with torch.no_grad():
        out, truth = blended(net, batch)
    frames = batch[0, :3 * FRAMES].float().reshape(FRAMES, 3, 40, 44) / 255.0
    streamed = SharpnessBlend(net=net)
    for frame in frames:
        streamed.add(frame, to_gray(frame)[None], None)
    assert torch.allclose(out[0], streamed.weighted / streamed.total, atol=1e-5)
    assert torch.equal(truth[0], batch[0, 3 * FRAMES:3 * FRAMES + 3].float() / 255.0)
    with torch.no_grad():
        assert blend_loss(net, batch) > 0


def _image_folder(tmp_path, count: int = 11):
    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(count):
        write_image(folder / f"im{k:02d}.png", np.round(textured(140, 150, k, 3) * 255).astype(np.uint8))
    return folder


def test_a_short_run_writes_loadable_weights_and_a_log(tmp_path):
    folder = _image_folder(tmp_path)
    summary = train_blend(folder, tmp_path / "run", epochs=2, steps_per_epoch=2, batch_size=2, patch=32,
                          crops_per_image=1, refiner_epochs=2, pair_epochs=1, device="cpu")
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1, 2, 3, 4, 5] and len({row["val_mse_plain"] for row in log[:4]}) == 1
    assert [row["stage"] for row in log] == ["weights", "weights", "refiner", "refiner", "pair_refiner"]
    assert log[0]["val_mse_plain"] > 0 and log[4]["val_mse_gacn"] > 0
    assert log[4]["val_mse_gacn"] != log[0]["val_mse_gacn"]  # scored on pairs
    assert summary["best_val_mse"] == log[4]["val_mse"] and summary["installed"] is None
    assert summary["weights_val_mse"] == min(row["val_mse"] for row in log[:2])
    assert summary["refiner_val_mse"] == min(row["val_mse"] for row in log[2:4])
    net = load_blend_net(summary["weights"], "cpu")
    assert net.metadata["frames"] == FRAMES and net.metadata["crops"] == {"stacks": 9, "pairs": 9}  # 0, 10 held out
    assert any(p.abs().sum() > 0 for p in net.out.parameters())  # trained away from the plain blend
    assert net.refiner is not None and any(p.abs().sum() > 0 for p in net.refiner.out.parameters())
    assert net.pair_refiner is not None and any(p.abs().sum() > 0 for p in net.pair_refiner.out.parameters())
    with pytest.raises(UsageError, match="already holds a run"):
        train_blend(folder, tmp_path / "run", epochs=1, device="cpu")

    # --init: the weights' network is kept as it is, only the refiner is trained
    again = train_blend(folder, tmp_path / "refiner-only", steps_per_epoch=1, batch_size=2, patch=32,
                        crops_per_image=1, refiner_epochs=1, pair_epochs=0, init=summary["weights"], device="cpu")
    log = [json.loads(line) for line in (tmp_path / "refiner-only" / "log.jsonl").read_text().splitlines()]
    assert [row["stage"] for row in log] == ["refiner"]
    second = load_blend_net(again["weights"], "cpu")
    frame_part = [name for name in net.state_dict() if not name.startswith("refiner.")]
    assert all(torch.equal(net.state_dict()[name], second.state_dict()[name]) for name in frame_part)
    assert second.pair_refiner is not None  # kept from ``init``
    # the pair refiner alone: everything else kept
    pair_only = train_blend(folder, tmp_path / "pair-only", steps_per_epoch=1, batch_size=2, patch=32,
                            crops_per_image=1, refiner_epochs=0, pair_epochs=1, init=summary["weights"], device="cpu")
    third = load_blend_net(pair_only["weights"], "cpu")
    kept = [name for name in net.state_dict() if not name.startswith("pair_refiner.")]
    assert all(torch.equal(net.state_dict()[name], third.state_dict()[name]) for name in kept)
    assert not torch.equal(net.pair_refiner.out.weight, third.pair_refiner.out.weight)
    without = train_blend(folder, tmp_path / "no-refiner", epochs=1, steps_per_epoch=1, batch_size=2, patch=32,
                          crops_per_image=1, refiner_epochs=0, pair_epochs=0, device="cpu")
    assert load_blend_net(without["weights"], "cpu").refiner is None
    assert load_blend_net(without["weights"], "cpu").pair_refiner is None


def test_bad_settings_are_refused_before_any_work(tmp_path, model):
    from focusfuse.errors import WeightsError
    from focusfuse.methods.gacn.weights import save_weights

    folder = _image_folder(tmp_path, 3)
    with pytest.raises(UsageError, match="patch"):
        train_blend(folder, tmp_path / "a", patch=200)
    with pytest.raises(WeightsError, match="architecture") as err:  # GACN's weights are no blend to start from
        train_blend(folder, tmp_path / "a", init=save_weights(model, tmp_path / "gacn.pt"))
    assert err.value.option == "init"
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="held out"):
        train_blend(tmp_path / "empty", tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_shapes_depth_has_several_depths():
    depth = shapes_depth(60, 80, np.random.default_rng(3))
    assert depth.shape == (60, 80) and depth.dtype == np.float32 and len(np.unique(depth)) >= 2


def test_the_cli_refuses_options_of_other_trainings(tmp_path):
    folder = _image_folder(tmp_path, 3)
    runner = CliRunner()
    for extra in (["--lr-decay", "0.5"], ["--qg-weight", "2"], ["--resume"]):
        r = runner.invoke(main, ["train", "--method", "blend", "--images", str(folder), "--out",
                                 str(tmp_path / "run"), *extra])
        assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.output
        assert extra[0] in r.stderr
    for flag in ("--refiner-epochs", "--pair-epochs"):
        r = runner.invoke(main, ["train", "--method", "rpsnn", "--images", str(folder), "--out",
                                 str(tmp_path / "run"), flag, "3"])
        assert r.exit_code == 2 and flag in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_crops_are_the_same_made_here_or_in_worker_processes(tmp_path):
    folder = _image_folder(tmp_path, 2)
    paths = sorted(folder.glob("*.png"))
    here = make_crops(paths, None, seed=3, workers=0, crops=1, size=64)
    workers = make_crops(paths, None, seed=3, workers=2, crops=1, size=64)
    assert here.shape == (2, CHANNELS, 64, 64) and torch.equal(here, workers)
    assert not torch.equal(here, make_crops(paths, None, seed=4, workers=0, crops=1, size=64))
