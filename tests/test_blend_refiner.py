"""The refiner of the boundary blend (methods/gacn/blend_refiner.py) and its streamed inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_blend_net, textured
from focusfuse import fuse_stack
from focusfuse.methods.gacn import boundary_blend
from focusfuse.methods.gacn.blend_net import load_blend_net, save_blend_weights
from focusfuse.methods.gacn.blend_refiner import BlendRefiner, bin_weights, refine, within_pair
from focusfuse.methods.gacn.boundary_blend import SharpnessBlend, refiner_reach
from focusfuse.ops.color import to_gray
from focusfuse.train.blend import CHANNELS, FRAMES, refined


def refined_net(seed: int, gain: float = 0.05, **refiners):
    """A blend net with a refiner (``refiners``: which, default the stack's), every weight random; the refiners
    small enough to keep images in range."""
    net = random_blend_net(seed, **(refiners or {"refiner": {}}))
    with torch.no_grad():
        for refiner in (net.refiner, net.pair_refiner):
            for p in [] if refiner is None else refiner.parameters():
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


@pytest.mark.parametrize("count", [FRAMES, 2])
def test_the_streamed_refiner_matches_the_training_formula(monkeypatch, count):
    """SharpnessBlend (frames one at a time, in order) and train.blend.refined (a batch of crops) agree, for
    stacks (the refiner) and pairs (the pair refiner, its frames kept in the stack refiner's outer bins)."""
    net = refined_net(1, refiner={}, pair_refiner={})
    h, w = 40, 44
    rng = np.random.default_rng(0)
    frames = [np.round(textured(h, w, k, 3) * 255).astype(np.uint8) for k in range(count)]
    truth, fused = frames[0], np.round(textured(h, w, 9, 3) * 255).astype(np.uint8)
    band = np.round(np.clip(rng.random((h, w)) * 2 - 0.5, 0, 1) * 255).astype(np.uint8)
    crop = np.concatenate(frames + [truth, fused, band[:, :, None]], axis=2).transpose(2, 0, 1)
    assert crop.shape[0] == (CHANNELS if count == FRAMES else 13)
    expected, _ = refined(net, torch.from_numpy(crop)[None])

    as_float = [torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames]
    blend = SharpnessBlend(net=net)
    for k, frame in enumerate(as_float):
        blend.add(frame, to_gray(frame)[None], None, k / (count - 1))
    band_map = torch.from_numpy(band).float()[None, None] / 255
    monkeypatch.setattr(boundary_blend, "blend_band", lambda index, separable: band_map)
    fused_float = torch.from_numpy(fused).permute(2, 0, 1).float() / 255
    streamed = blend.apply(fused_float, torch.zeros(h, w, dtype=torch.int64))
    assert torch.allclose(streamed, expected[0], atol=2e-5)
    assert (streamed - fused_float).abs().max() > 1e-3  # the refiner did something
    other = net.refiner if count == 2 else net.pair_refiner  # and it was the right one
    with torch.no_grad():
        other.out.bias.add_(0.1)
    assert torch.allclose(refined(net, torch.from_numpy(crop)[None])[0], expected, atol=1e-6)


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


def _pair(h: int = 96, w: int = 104):
    """A rendered pair: a disc in front, A focused on it, B behind it (the disc spread over the background)."""
    from focusfuse.evaluation.synthetic import layered_defocus

    yy, xx = np.mgrid[:h, :w]
    near = ((yy - h // 2) ** 2 + (xx - w // 2) ** 2 < 30 ** 2).astype(np.float32)
    image = textured(h, w, 7, 3)
    return [np.round(layered_defocus(image, near, focus=f, blur_per_unit=4.0, layers=2) * 255).astype(np.uint8)
            for f in (1.0, 0.0)]


def test_a_pair_is_redrawn_only_by_a_pair_refiner_and_keeps_gacns_maps(good_model, tmp_path):
    from focusfuse import fuse_pair

    a, b = _pair()
    stack_only = str(save_blend_weights(refined_net(8), tmp_path / "stack-only.pt"))
    with_pair = str(save_blend_weights(refined_net(8, refiner={}, pair_refiner={}), tmp_path / "pair.pt"))
    off = fuse_pair(a, b, weights=good_model, device="cpu", boundary_blend="off")
    for mode in (stack_only, "laplacian"):  # nothing to redraw a pair with: GACN's image
        assert np.array_equal(fuse_pair(a, b, weights=good_model, device="cpu", boundary_blend=mode).fused, off.fused)
    redrawn = fuse_pair(a, b, weights=good_model, device="cpu", boundary_blend=with_pair)
    assert np.array_equal(redrawn.decision_map, off.decision_map)
    assert np.array_equal(redrawn.initial_map, off.initial_map)
    changed = np.abs(redrawn.fused.astype(int) - off.fused).max(axis=2) > 0
    assert changed.any()
    band = boundary_blend.blend_band(torch.from_numpy((off.decision_map < 0.5).astype(np.int64)))[0, 0].numpy()
    assert not (changed & (band == 0)).any()  # only in the band
    as_stack = fuse_stack([a, b], weights=good_model, device="cpu", align="none", boundary_blend=with_pair)
    assert np.array_equal(as_stack.fused, redrawn.fused)  # a two-frame stack is the same pair


def test_a_tiled_redrawn_pair_equals_the_untiled_one(good_model, tmp_path):
    from focusfuse import fuse_pair

    a, b = _pair(127, 141)
    path = str(save_blend_weights(refined_net(9, refiner={}, pair_refiner={}), tmp_path / "pair.pt"))
    whole = fuse_pair(a, b, weights=good_model, device="cpu", tile_size=0, boundary_blend=path)
    tiled = fuse_pair(a, b, weights=good_model, device="cpu", tile_size=45, boundary_blend=path)
    assert np.abs(whole.fused.astype(int) - tiled.fused).max() <= 1
    assert not np.array_equal(whole.fused, fuse_pair(a, b, weights=good_model, device="cpu",
                                                      boundary_blend="off").fused)


def test_the_pair_halo_and_working_set_count_the_pair_refiner(tmp_path, good_model):
    from focusfuse.backends.cpu import CpuBackend
    from focusfuse.methods.gacn.method import GacnMethod

    stack_only = load_blend_net(save_blend_weights(refined_net(4), tmp_path / "s.pt"), "cpu")
    both = load_blend_net(save_blend_weights(refined_net(4, refiner={}, pair_refiner={}), tmp_path / "b.pt"), "cpu")
    pair_only = load_blend_net(save_blend_weights(refined_net(4, pair_refiner={}), tmp_path / "p.pt"), "cpu")
    assert both.pair_refiner.bins == 2 and both.config["pair_refiner"]["bins"] == 2 and stack_only.pair_refiner is None
    backend = CpuBackend(torch.device("cpu"))
    methods = {name: GacnMethod(good_model, backend, "pair", 1, True, net)
               for name, net in (("stack_only", stack_only), ("both", both), ("pair_only", pair_only))}
    assert not methods["stack_only"].boundary_blend  # a pair strategy without a pair refiner does not blend
    assert methods["both"].halo(2) >= methods["stack_only"].halo(2) + refiner_reach(both, 2) - 1
    assert methods["pair_only"].bytes_per_pixel() == backend.bytes_per_pixel + 2 * 16
    assert methods["both"].bytes_per_pixel() == backend.bytes_per_pixel + 4 * 16
    stack_method = GacnMethod(good_model, backend, "calibrated", 1, True, pair_only)
    assert stack_method.blends(2) and stack_method.blends(5) and refiner_reach(pair_only, 5) == 0


def test_a_redrawn_pair_lies_within_its_two_frames():
    a, b = torch.rand(3, 20, 24), torch.rand(3, 20, 24)
    wild = torch.rand(3, 20, 24) * 3 - 1  # far outside both frames in places
    bounded = within_pair(wild, torch.cat([a, b]))
    assert torch.all(bounded >= torch.minimum(a, b)) and torch.all(bounded <= torch.maximum(a, b))
    inside = (wild >= torch.minimum(a, b)) & (wild <= torch.maximum(a, b))
    assert inside.any() and torch.equal(bounded[inside], wild[inside])  # values within the range are kept


def test_the_shipped_pair_file_keeps_the_default_blend_and_adds_a_pair_refiner():
    default, pairs = load_blend_net(None, "cpu"), load_blend_net("focusfuse-blend-pairs", "cpu")
    assert default.pair_refiner is None and pairs.pair_refiner is not None and pairs.pair_refiner.bins == 2
    shared = default.state_dict()
    assert all(torch.equal(value, pairs.state_dict()[name]) for name, value in shared.items())  # stacks fuse the same


def test_the_pair_command_redraws_with_the_pair_file_only(tmp_path):
    from click.testing import CliRunner

    from focusfuse.cli import main
    from focusfuse.io.images import read_image, write_image

    a, b = _pair()
    write_image(tmp_path / "a.png", a)
    write_image(tmp_path / "b.png", b)
    runner = CliRunner()
    outputs = {}
    for name, extra in (("default", []), ("off", ["--no-boundary-blend"]),
                        ("pairs", ["--boundary-blend", "focusfuse-blend-pairs"])):
        r = runner.invoke(main, ["pair", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o",
                                 str(tmp_path / f"{name}.png"), "--device", "cpu", "-q", *extra])
        assert r.exit_code == 0, r.output
        outputs[name] = read_image(tmp_path / f"{name}.png")
    assert np.array_equal(outputs["default"], outputs["off"]) and not np.array_equal(outputs["pairs"], outputs["off"])


def test_one_order_at_a_time_averages_to_the_inference_correction():
    """Training takes one order of the bins per step; inference averages both."""
    refiner = refined_net(6).refiner.eval()
    inputs = (torch.rand(2, 3, 22, 26), torch.rand(2, 3, 22, 26), torch.rand(2, 12, 22, 26), -torch.rand(2, 4, 22, 26),
              torch.ones(2, 1, 22, 26))
    with torch.no_grad():
        both = refiner(*inputs)
        given, reversed_ = refiner(*inputs, orders=(False,)), refiner(*inputs, orders=(True,))
    assert (given - reversed_).abs().max() > 1e-4
    assert torch.allclose(both, (given + reversed_) / 2, atol=1e-6)
