"""The refiner of the boundary blend (methods/gacn/blend_refiner.py) and its streamed inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_blend_net, textured
from focusfuse import fuse_stack
from focusfuse.methods.gacn import boundary_blend
from focusfuse.methods.gacn.blend_net import load_blend_net, save_blend_weights
from focusfuse.methods.gacn.blend_refiner import BlendRefiner, bin_weights, refine
from focusfuse.methods.gacn.boundary_blend import SharpnessBlend, refiner_reach
from focusfuse.ops.color import to_gray
from focusfuse.train.blend import CHANNELS, FRAMES, refined


def refined_net(seed: int, gain: float = 0.05):
    """A blend net with a refiner, every weight random; the refiner's small enough to keep images in range."""
    net = random_blend_net(seed, refiner={})
    with torch.no_grad():
        for p in net.refiner.parameters():
            p.mul_(gain / 0.3)
    return net


@pytest.mark.parametrize("bins", [1, 2, 4, 5])
def test_bin_weights_are_hats_that_sum_to_one(bins):
    for position in np.linspace(0, 1, 23):
        shares = bin_weights(float(position), bins)
        assert len(shares) == bins and min(shares) >= 0 and abs(sum(shares) - 1) < 1e-9
        assert sum(s > 0 for s in shares) <= 2  # a frame lies in one bin or between two neighbours
    if bins > 1:
        assert bin_weights(0.0, bins)[0] == 1 and bin_weights(1.0, bins)[-1] == 1


def test_an_untrained_refiner_changes_nothing():
    refiner = BlendRefiner()
    blend = torch.rand(3, 20, 24)
    out = refine(refiner, blend, torch.rand(3, 20, 24), torch.rand(12, 20, 24), torch.zeros(4, 20, 24),
                 torch.ones(1, 20, 24))
    assert torch.equal(out, blend)


def test_the_correction_is_the_same_for_a_stack_given_far_to_near_or_near_to_far():
    refiner = refined_net(6).refiner.eval()
    blend, fused, binned, share, band = (torch.rand(1, 3, 30, 34), torch.rand(1, 3, 30, 34), torch.rand(1, 12, 30, 34),
                                         -torch.rand(1, 4, 30, 34), torch.ones(1, 1, 30, 34))
    reversed_bins = binned.reshape(1, 4, 3, 30, 34).flip(1).reshape(1, 12, 30, 34)
    with torch.no_grad():
        given, reversed_ = refiner(blend, fused, binned, share, band), refiner(blend, fused, reversed_bins,
                                                                               share.flip(1), band)
    assert given.abs().max() > 1e-3 and torch.allclose(given, reversed_, atol=1e-6)


def test_blocks_give_the_whole_regions_result():
    refiner = refined_net(0).refiner.eval()
    inputs = [torch.rand(3, 70, 50), torch.rand(3, 70, 50), torch.rand(12, 70, 50), -torch.rand(4, 70, 50),
              torch.ones(1, 70, 50)]
    whole = refine(refiner, *inputs, block=1000)
    assert not torch.equal(whole, inputs[0])
    assert torch.allclose(refine(refiner, *inputs, block=16), whole, atol=1e-5)
    band = torch.zeros(1, 70, 50)
    band[..., 40:, 20:] = 1  # blocks without band stay as they are
    partial = refine(refiner, *inputs[:4], band, block=16)
    assert torch.equal(partial[:, :32], inputs[0][:, :32]) and torch.equal(partial[:, :, :16], inputs[0][:, :, :16])
    assert not torch.equal(partial[:, 48:, 32:], inputs[0][:, 48:, 32:])


def test_the_streamed_refiner_matches_the_training_formula(monkeypatch):
    """SharpnessBlend (frames one at a time, in order) and train.blend.refined (a batch of crops) agree."""
    net = refined_net(1)
    h, w = 40, 44
    rng = np.random.default_rng(0)
    frames = [np.round(textured(h, w, k, 3) * 255).astype(np.uint8) for k in range(FRAMES)]
    truth, fused = frames[0], frames[3]
    band = np.round(np.clip(rng.random((h, w)) * 2 - 0.5, 0, 1) * 255).astype(np.uint8)
    crop = np.concatenate(frames + [truth, fused, band[:, :, None]], axis=2).transpose(2, 0, 1)
    assert crop.shape[0] == CHANNELS
    expected, _ = refined(net, torch.from_numpy(crop)[None])

    as_float = [torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames]
    blend = SharpnessBlend(net=net)
    for k, frame in enumerate(as_float):
        blend.add(frame, to_gray(frame)[None], None, k / (FRAMES - 1))
    band_map = torch.from_numpy(band).float()[None, None] / 255
    monkeypatch.setattr(boundary_blend, "blend_band", lambda index, separable: band_map)
    streamed = blend.apply(as_float[3], torch.zeros(h, w, dtype=torch.int64))
    assert torch.allclose(streamed, expected[0], atol=2e-5)
    assert (streamed - as_float[3]).abs().max() > 1e-3  # the refiner did something


def test_gray_stacks_are_refined_as_three_equal_channels():
    net = refined_net(2)
    frames = [torch.from_numpy(textured(30, 36, k, 1))[None] for k in range(4)]
    blend = SharpnessBlend(net=net)
    for k, frame in enumerate(frames):
        blend.add(frame, frame[None], None, k / 3)
    index = torch.zeros(30, 36, dtype=torch.int64)
    index[:, 18:] = 2
    out = blend.apply(frames[0], index)
    assert out.shape == (1, 30, 36) and torch.isfinite(out).all()


def test_a_tiled_refined_blend_equals_the_untiled_one(good_model, tmp_path):
    yy, xx = np.mgrid[:127, :141]
    depth = np.where((yy - 60) ** 2 + (xx - 70) ** 2 < 35 ** 2, 1.0, np.where(xx > 100, 0.5, 0.0)).astype(np.float32)
    from focusfuse.evaluation.synthetic import make_stack

    stack = make_stack(textured(127, 141, 5, 3), depth, 5, max_blur=5)
    frames = [np.round(f * 255).astype(np.uint8) for f in stack.frames]
    path = str(save_blend_weights(refined_net(3), tmp_path / "refined.pt"))
    plain = str(save_blend_weights(random_blend_net(3), tmp_path / "plain.pt"))  # the same weights, no refiner
    whole = fuse_stack(frames, weights=good_model, device="cpu", align="none", tile_size=0, boundary_blend=path)
    tiled = fuse_stack(frames, weights=good_model, device="cpu", align="none", tile_size=45, boundary_blend=path)
    unrefined = fuse_stack(frames, weights=good_model, device="cpu", align="none", tile_size=0, boundary_blend=plain)
    assert tiled.tiles > 1 and not np.array_equal(whole.fused, unrefined.fused)
    assert np.abs(whole.fused.astype(int) - tiled.fused).max() <= 1
    assert np.array_equal(whole.index_map, tiled.index_map)


def test_old_weights_without_a_refiner_still_load_and_the_halo_grows_with_one(tmp_path, good_model):
    from focusfuse.backends.cpu import CpuBackend
    from focusfuse.methods.gacn.method import GacnMethod

    old = load_blend_net(save_blend_weights(random_blend_net(4), tmp_path / "old.pt"), "cpu")
    new = load_blend_net(save_blend_weights(refined_net(4), tmp_path / "new.pt"), "cpu")
    assert old.refiner is None and "refiner" not in old.config and refiner_reach(old) == 0
    assert new.refiner is not None and refiner_reach(new) == sum(new.config["refiner"]["dilations"])
    backend = CpuBackend(torch.device("cpu"))
    halos = [GacnMethod(good_model, backend, "calibrated", 1, True, net).halo(5) for net in (old, new)]
    assert halos[1] >= halos[0] + refiner_reach(new) - 1


def test_pixels_without_image_in_a_bin_or_in_all_frames_stay_finite():
    """Edge fill has no weight: a bin (or every frame) may have none at a pixel; the refiner's inputs stay finite."""
    net = refined_net(5)
    frames = [torch.from_numpy(textured(32, 40, k, 3)).permute(2, 0, 1).contiguous() for k in range(5)]
    blend = SharpnessBlend(net=net)
    for k, frame in enumerate(frames):
        has_image = torch.ones(1, 1, 32, 40, dtype=torch.bool)
        has_image[..., :, :8 * (k + 1)] = False  # the left columns are fill in ever more frames; in all at 0..7
        blend.add(frame, to_gray(frame)[None], has_image, k / 4)
    index = torch.zeros(32, 40, dtype=torch.int64)
    index[:, 20:] = 3
    out = blend.apply(frames[0], index)
    assert torch.isfinite(out).all()
    assert torch.equal(out[:, :, :8], frames[0][:, :, :8])  # no frame has pixels there: the fused image stays
