"""SESF-Fuse: the network's layout, the fusion rule's steps, weights files, the method, training and the CLI."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from focusfuse import fuse_pair, fuse_stack
from focusfuse.cli import main
from focusfuse.engine.options import FusionOptions
from focusfuse.errors import UsageError, WeightsError
from focusfuse.io.images import read_image, write_image
from focusfuse.methods.sesf.network import SESFNet
from focusfuse.methods.sesf.rule import activity, consistency_verification, guided_filter
from focusfuse.methods.sesf.weights import load_sesf, read_sesf_weights, save_sesf_weights

from conftest import textured
from test_wavelet import split_focus, to8


@pytest.fixture(scope="module")
def sesf_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sesf") / "random.pt"
    save_sesf_weights(SESFNet().eval(), path)
    return path


def test_network_has_the_published_layout():
    net = SESFNet()
    assert sum(p.numel() for p in net.parameters()) == 74_803  # the published checkpoint's count
    keys = list(net.state_dict())
    for key in ("features.0.weight", "features.2.running_var", "se_f.fc.0.weight", "se_3.fc.2.weight",
                "conv_encode_3.0.weight", "conv_decode_4.2.num_batches_tracked"):
        assert key in keys
    assert net.state_dict()["se_1.fc.0.weight"].shape == (2, 16)
    assert net.state_dict()["conv_encode_2.0.weight"].shape == (16, 32, 3, 3)
    x = torch.rand(2, 1, 20, 24)
    assert net.encode(x).shape == (2, 64, 20, 24) and net(x).shape == (2, 1, 20, 24)


def test_activity_differences_against_zero_outside_the_image():
    features = torch.full((1, 2, 6, 7), 2.0)
    energy = activity(features, radius=0)[0, 0]
    assert energy[0, 0] == 2 * (4 + 4)  # both neighbours outside: differences against 0, two channels
    assert energy[0, 3] == 2 * 4 and energy[3, 0] == 2 * 4 and energy[3, 3] == 0
    window = activity(features, radius=1)[0, 0]
    assert window[3, 3] == 0 and window[1, 1] == energy[:3, :3].sum()


def test_consistency_verification_removes_small_regions_and_keeps_large_ones():
    d = np.zeros((100, 100), bool)
    d[:, :50] = True  # a large region
    d[80:84, 80:84] = True  # an island of 16 px (< 1% of the image)
    d[20:23, 20:23] = False  # a hole of 9 px
    out = consistency_verification(d)
    assert out[:, 5:45].all() and not out[:, 55:].any()
    assert not out[80:84, 80:84].any() and out[20:23, 20:23].all()


def test_guided_filter_gray_is_he_s_filter():
    rng = np.random.default_rng(0)
    guide = torch.from_numpy(rng.random((1, 1, 30, 40)).astype(np.float64) * 255)
    p = torch.from_numpy((rng.random((1, 1, 30, 40)) > 0.5).astype(np.float64))
    q = guided_filter(guide, p, radius=2, eps=0.1)[0, 0].numpy()

    def mean(x):  # window mean over in-image pixels
        out = np.zeros_like(x)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                out[i, j] = x[max(i - 2, 0):i + 3, max(j - 2, 0):j + 3].mean()
        return out

    g, pp = guide[0, 0].numpy(), p[0, 0].numpy()
    a = (mean(g * pp) - mean(g) * mean(pp)) / (mean(g * g) - mean(g) ** 2 + 0.1)
    b = mean(pp) - a * mean(g)
    assert np.allclose(q, mean(a) * g + mean(b), atol=1e-9)


def test_weights_files_of_both_layouts(tmp_path, sesf_weights):
    state, meta = read_sesf_weights(sesf_weights)
    bare = tmp_path / "authors.pkl"
    torch.save(state, bare)  # the authors' checkpoint is a bare state dict with the same keys
    assert load_sesf(bare).source == str(bare)
    assert read_sesf_weights(bare)[1]["source"].startswith("the authors'")
    wrong = tmp_path / "wrong.pt"
    torch.save({"something": torch.zeros(1)}, wrong)
    with pytest.raises(WeightsError, match="neither"):
        load_sesf(wrong)


def test_pairs_take_the_sharp_half_and_keep_their_maps(sesf_weights):
    truth, a, b = split_focus(120, 160)
    result = fuse_pair(to8(a), to8(b), method="sesf", weights=sesf_weights, device="cpu")
    assert result.decision_map[:, 10:70].mean() > 0.95 and result.decision_map[:, 90:150].mean() < 0.05
    assert set(np.unique(result.initial_map)) <= {0.0, 1.0}
    error = np.abs(result.fused.astype(float) - to8(truth)).mean()
    assert error < 0.3 * min(np.abs(to8(f).astype(float) - to8(truth)).mean() for f in (a, b))


@pytest.mark.parametrize("strategy", ["calibrated", "serial"])
def test_stacks_16_bit_and_gray(sesf_weights, strategy):
    truth, a, b = split_focus(100, 140, channels=1)
    frames = [np.round(f * 65535).astype(np.uint16) for f in (a, (a + b) / 2, b)]
    result = fuse_stack(frames, method="sesf", strategy=strategy, weights=sesf_weights, device="cpu", align="none")
    assert result.fused.dtype == np.uint16 and result.fused.shape == a.shape
    assert np.mean(result.index_map[:, 10:60] == 0) > 0.9 and np.mean(result.index_map[:, 80:130] == 2) > 0.9


def test_options_and_serial_tiles_are_refused_clearly(sesf_weights):
    with pytest.raises(UsageError, match="sesf method takes calibrated or serial") as err:
        FusionOptions(method="sesf", strategy="calibration")
    assert err.value.option == "strategy"
    frames = [np.round(textured(80, 90, s) * 255).astype(np.uint8) for s in range(2)]
    with pytest.raises(UsageError, match="serial strategy cannot run in tiles") as err:
        fuse_stack(frames, method="sesf", strategy="serial", weights=sesf_weights, device="cpu", align="none",
                   tile_size=32)
    assert err.value.option == "tile_size"


def test_tiles_take_decisions_verified_on_the_whole_frame(sesf_weights):
    truth, a, b = split_focus(150, 170)
    patch = (slice(40, 54), slice(30, 44))  # B sharp, A blurred, on A's side: ~200 px that B wins, under 1% of
    a[patch], b[patch] = b[patch].copy(), truth[patch].copy()  # the image (255 px), so the verification gives them
    # to A; in a 48 px tile's crop (1% of it: under 50 px) they would stay B's
    whole = fuse_pair(to8(a), to8(b), method="sesf", weights=sesf_weights, device="cpu", tile_size=0)
    tiled = fuse_pair(to8(a), to8(b), method="sesf", weights=sesf_weights, device="cpu", tile_size=48)
    assert whole.initial_map[patch].mean() == 1
    assert np.array_equal(whole.initial_map, tiled.initial_map)
    assert np.abs(whole.decision_map - tiled.decision_map).max() < 1e-5
    assert np.abs(whole.fused.astype(int) - tiled.fused).max() <= 1


def test_a_tiled_stack_equals_the_untiled_one_with_a_halo_growing_with_the_frames(sesf_weights, monkeypatch):
    from focusfuse.methods.sesf.method import SesfMethod

    truth, a, b = split_focus(150, 170)
    frames = [np.round(f * 65535).astype(np.uint16) for f in (a, 0.5 * (a + b), b, 0.7 * a + 0.3 * b)]
    whole = fuse_stack(frames, method="sesf", weights=sesf_weights, device="cpu", align="none", tile_size=0)
    tiled = fuse_stack(frames, method="sesf", weights=sesf_weights, device="cpu", align="none", tile_size=48)
    assert tiled.tiles == 16 and whole.tiles == 1
    assert np.abs(whole.fused.astype(int) - tiled.fused).max() <= 1
    assert np.array_equal(whole.index_map, tiled.index_map)
    monkeypatch.setattr(SesfMethod, "halo", lambda self, frames=2: 8)  # a pair's halo: short for 4 frames
    short = fuse_stack(frames, method="sesf", weights=sesf_weights, device="cpu", align="none", tile_size=48)
    assert np.abs(whole.fused.astype(int) - short.fused).max() > 1


def test_training_writes_loadable_weights(tmp_path):
    from focusfuse.train.sesf import train_sesf

    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(12):
        write_image(folder / f"img{k:02d}.png", np.round(textured(40, 48, k, 3) * 255).astype(np.uint8))
    summary = train_sesf(folder, tmp_path / "run", epochs=2, batch_size=4, size=32, max_steps=1)
    assert summary["best_epoch"] in (1, 2) and len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 2
    assert isinstance(load_sesf(summary["weights"]), SESFNet)
    with pytest.raises(UsageError, match="already holds a run"):
        train_sesf(folder, tmp_path / "run", epochs=1, batch_size=4, size=32, max_steps=1)


def test_cli_pair_and_stack(tmp_path, sesf_weights):
    _, a, b = split_focus()
    write_image(tmp_path / "a.png", to8(a))
    write_image(tmp_path / "b.png", to8(b))
    runner = CliRunner()
    r = runner.invoke(main, ["pair", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "f.png"),
                             "--method", "sesf", "--weights", str(sesf_weights), "--decision-map",
                             str(tmp_path / "d.png"), "-q"])
    assert r.exit_code == 0, r.output
    assert read_image(tmp_path / "d.png").shape == a.shape[:2]
    r = runner.invoke(main, ["stack", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "s.png"),
                             "--method", "sesf", "--weights", str(sesf_weights), "--align", "none", "--json"])
    assert r.exit_code == 0, r.output
    done = json.loads(r.output.strip().splitlines()[-1])
    assert done["method"] == "sesf" and done["weights"] == sesf_weights.name
    r = runner.invoke(main, ["stack", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "s.tif"),
                             "--method", "sesf", "--weights", str(sesf_weights), "--align", "none", "--tile-size",
                             "48", "-q"])  # tiles streamed into a TIFF
    assert r.exit_code == 0, r.output
    assert np.abs(read_image(tmp_path / "s.tif").astype(int) - read_image(tmp_path / "s.png")).max() <= 1
    r = runner.invoke(main, ["stack", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "t.png"),
                             "--method", "sesf", "--weights", str(sesf_weights), "--strategy", "calibration"])
    assert r.exit_code == 2 and "--strategy" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_memory_limit_too_small_for_the_whole_image_names_the_limit(sesf_weights):
    from focusfuse.backends.base import Backend
    from focusfuse.engine.plan import plan_fusion, resident_memory
    from focusfuse.methods.sesf.method import SesfMethod

    backend = Backend(torch.device("cpu"))
    method = SesfMethod(load_sesf(sesf_weights), backend, strategy="serial")
    options = FusionOptions(method="sesf", strategy="serial")
    limit = resident_memory() + backend.runtime_reserve + (100 << 20)
    with pytest.raises(UsageError, match="needs about") as err:
        plan_fusion((2000, 2000), 3, np.dtype(np.uint8), method, backend, replace(options, memory_limit=limit))
    assert err.value.option == "memory_limit"
    whole = plan_fusion((2000, 2000), 3, np.dtype(np.uint8), method, backend, options)
    assert len(whole.tiles) == 1  # no limit given: a method that cannot tile runs whole


@pytest.mark.parametrize("method, extra", [("sesf", ["--boundary-weight", "1"]), ("sesf", ["--crop", "64"]),
                                           ("rpsnn", ["--recipe", "max_gain=0.1"]), ("rpsnn", ["--symmetric-dice"])])
def test_gacn_training_options_are_refused_for_other_methods(tmp_path, method, extra):
    folder = tmp_path / "images"
    folder.mkdir()
    r = CliRunner().invoke(main, ["train", "--images", str(folder), "--out", str(tmp_path / "run"), "--method", method,
                                  *extra])
    assert r.exit_code == 2 and extra[0] in r.stderr and "--method gacn" in r.stderr
    assert not (tmp_path / "run").exists()


def test_an_aligned_tiled_stack_with_edge_fill_equals_the_untiled_one(sesf_weights):
    import cv2

    from test_tiling import _stack

    base = _stack(1, 160, 180)[0]
    frames = []
    for k in range(3):  # frame k sharp in the k-th third of the columns, shifted and scaled: black edges to fill
        sharp = cv2.GaussianBlur(np.kron(np.eye(3, dtype=np.float32)[k], np.ones((160, 60), np.float32)), (0, 0), 8)
        frame = sharp[:, :, None] * base + (1 - sharp[:, :, None]) * cv2.GaussianBlur(base, (0, 0), 1.5)
        m = np.float32([[1 + 0.01 * (k - 1), 0, 2.0 * (k - 1)], [0, 1 + 0.01 * (k - 1), -1.5 * (k - 1)]])
        frames.append(cv2.warpAffine(np.round(frame).astype(np.uint8), m, (180, 160)))
    whole = fuse_stack(frames, method="sesf", weights=sesf_weights, device="cpu", align="auto", crop=False,
                       tile_size=0)
    tiled = fuse_stack(frames, method="sesf", weights=sesf_weights, device="cpu", align="auto", crop=False,
                       tile_size=64)
    assert not whole.skipped and tiled.tiles == 9 and set(np.unique(whole.index_map)) == {0, 1, 2}
    assert np.abs(whole.fused.astype(int) - tiled.fused).max() <= 1
    assert np.array_equal(whole.index_map, tiled.index_map)
