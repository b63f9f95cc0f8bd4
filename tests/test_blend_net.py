"""The learned correction of the boundary blend's weights (methods/gacn/blend_net.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import random_blend_net, textured
from focusfuse import fuse_stack
from focusfuse.errors import WeightsError
from focusfuse.evaluation.synthetic import make_stack
from focusfuse.methods.gacn.blend_net import BlendNet, load_blend_net, save_blend_weights
from focusfuse.methods.gacn.boundary_blend import (ENERGY_REACH, SharpnessBlend, index_edges, laplacian_energy,
                                                   sharpness_weights, weight_reach)
from focusfuse.methods.gacn.weights import save_weights


def _gray(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(textured(h, w, seed, 1))[None, None]


def test_an_untrained_net_is_the_plain_blend():
    gray = _gray(37, 45)
    energy = laplacian_energy(gray)
    correction = BlendNet()(gray, torch.log1p(energy))
    assert correction.shape == gray.shape and correction.abs().max() == 0
    assert torch.equal(sharpness_weights(energy, correction), sharpness_weights(energy))


def test_the_weights_are_the_energys_times_exp_of_the_correction():
    gray = _gray(32, 40)
    energy = laplacian_energy(gray)
    correction = torch.linspace(-3, 3, 32 * 40).reshape(1, 1, 32, 40)
    expected = (energy + 1) ** 2 * torch.exp(correction)
    assert torch.allclose(sharpness_weights(energy, correction), expected, rtol=1e-5)
    huge = sharpness_weights(energy, torch.full_like(correction, 1e4))  # clamped, never inf
    assert torch.isfinite(huge).all()


@pytest.mark.parametrize("scale, reach", [(1, 7), (2, 17)])
@pytest.mark.parametrize("y, x", [(20, 24), (21, 25)])
def test_a_pixel_reaches_the_weights_no_farther_than_the_stated_reach(y, x, scale, reach):
    net = random_blend_net(0, scale=scale)
    gray = _gray(64, 72, 3)
    changed = gray.clone()
    changed[..., y + 21, x] += 0.5  # a pixel far below
    changed[..., 50, 60] += 0.5

    def weights(g):
        with torch.no_grad():
            e = laplacian_energy(g)
            return sharpness_weights(e, net(g, torch.log1p(e)))[0, 0]
    before, after = weights(gray), weights(changed)
    assert net.reach == reach and weight_reach(net) == ENERGY_REACH + reach
    differ = (before - after).abs() > 0
    ys, xs = np.nonzero(differ.numpy())
    # every changed weight lies within the reach of a changed pixel, and the reach is used (not too generous)
    near = np.minimum(np.maximum(abs(ys - (y + 21)), abs(xs - x)), np.maximum(abs(ys - 50), abs(xs - 60)))
    assert near.max() <= weight_reach(net) and near.max() >= weight_reach(net) - 2


def test_the_streamed_weights_match_the_net():
    net = random_blend_net(1)
    frames = [torch.from_numpy(textured(30, 34, k, 3)).permute(2, 0, 1).contiguous() for k in range(3)]
    blend = SharpnessBlend(net=net)
    for frame in frames:
        blend.add(frame, frame.mean(0, keepdim=True)[None], None)
    with torch.no_grad():
        ws = []
        for frame in frames:
            g = frame.mean(0, keepdim=True)[None]
            e = laplacian_energy(g)
            ws.append((e + 1) ** 2 * net(g, torch.log1p(e)).clamp(-20, 20).exp())
    assert torch.allclose(blend.total, sum(ws)[0], rtol=1e-5)
    assert torch.allclose(blend.weighted / blend.total, sum(w[0] * f for w, f in zip(ws, frames)) / sum(ws)[0],
                          atol=1e-5)


def test_blend_weights_given_by_a_relative_path_become_absolute(tmp_path, monkeypatch):
    from focusfuse.engine.options import FusionOptions

    save_blend_weights(random_blend_net(1), tmp_path / "mine.pt")
    monkeypatch.chdir(tmp_path)
    assert FusionOptions(boundary_blend="mine.pt").boundary_blend == str((tmp_path / "mine.pt").resolve())


def test_weights_files_round_trip_and_wrong_ones_name_the_option(tmp_path, model):
    net = random_blend_net(2)
    path = save_blend_weights(net, tmp_path / "blend.pt", {"note": "test"})
    loaded = load_blend_net(path, "cpu")
    assert not loaded.training and all(torch.equal(a, b) for a, b in zip(net.state_dict().values(),
                                                                         loaded.state_dict().values()))
    assert loaded.metadata["note"] == "test" and loaded.config == net.config
    half = load_blend_net(save_blend_weights(random_blend_net(2, scale=2, width=4), tmp_path / "half.pt"), "cpu")
    assert half.scale == 2 and half.config["width"] == 4  # the shape travels with the weights
    gacn = save_weights(model, tmp_path / "gacn.pt")
    with pytest.raises(WeightsError, match="architecture") as err:
        load_blend_net(gacn, "cpu")
    assert err.value.option == "boundary_blend"
    assert load_blend_net(None, "cpu").metadata  # the shipped default loads


def test_learned_blend_weights_given_by_path_change_the_fused_image(tmp_path, good_model):
    yy, xx = np.mgrid[:96, :104]
    depth = ((yy - 48) ** 2 + (xx - 52) ** 2 < 30 ** 2).astype(np.float32)
    stack = make_stack(textured(96, 104, 4, 3), depth, 4, max_blur=4)
    frames = [np.round(f * 255).astype(np.uint8) for f in stack.frames]
    path = save_blend_weights(random_blend_net(3), tmp_path / "mine.pt")
    results = {mode: fuse_stack(frames, weights=good_model, device="cpu", align="none", boundary_blend=mode)
               for mode in ("laplacian", str(path), "off")}
    assert np.array_equal(results["laplacian"].index_map, results[str(path)].index_map)
    changed = (results[str(path)].fused != results["laplacian"].fused).any(axis=2)
    assert changed.any()
    # the blend acts near the index map's edges only: far from them, the hard switch's pixels stay
    index = torch.from_numpy(results["off"].index_map.astype(np.int64))
    far = ndimage.distance_transform_cdt(~index_edges(index).numpy(), "chessboard") > 16
    assert far.any() and np.array_equal(results[str(path)].fused[far], results["off"].fused[far])
