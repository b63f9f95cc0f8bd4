"""The boundary blend of GACN stacks (methods/gacn/boundary_blend.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy import ndimage

from conftest import textured
from focusfuse import fuse_stack
from focusfuse.cli import main
from focusfuse.engine.options import FusionOptions
from focusfuse.errors import UsageError
from focusfuse.evaluation.synthetic import make_stack
from focusfuse.io.images import write_image
from focusfuse.methods.gacn.boundary_blend import (BLEND_RADIUS, SharpnessBlend, blend_band, index_edges,
                                                   laplacian_energy)


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))


def test_laplacian_energy_is_opencvs_squared_laplacian_averaged_over_3x3():
    gray = textured(40, 48, 1)
    expected = cv2.boxFilter(cv2.Laplacian(gray * 255.0, cv2.CV_32F, ksize=3) ** 2, -1, (3, 3))
    energy = laplacian_energy(_tensor(gray)[None, None])[0, 0].numpy()
    inner = (slice(2, -2), slice(2, -2))  # the borders are padded differently
    assert np.allclose(energy[inner], expected[inner], rtol=1e-4, atol=1e-2)


def test_the_band_covers_the_pixels_near_index_edges_only():
    index = torch.zeros(60, 70, dtype=torch.int32)
    index[:, 35:] = 2
    band = blend_band(index)[0, 0].numpy()
    assert index_edges(index).sum() == 2 * 60
    assert band[:, 35 - BLEND_RADIUS + 3:35 + BLEND_RADIUS - 3].min() > 0.99  # full, then a soft edge
    assert band[:, :35 - BLEND_RADIUS - 6].max() < 1e-3 and band[:, 35 + BLEND_RADIUS + 6:].max() < 1e-3
    assert blend_band(torch.ones(20, 20, dtype=torch.int32)).abs().max() == 0  # no edge, no blend


def _frames(count: int, h: int = 40, w: int = 50) -> list[torch.Tensor]:
    sharp = textured(h, w, 3, 3)
    return [_tensor(cv2.GaussianBlur(sharp, (0, 0), 0.3 + 1.5 * k)).permute(2, 0, 1) for k in range(count)]


def _gray(frame: torch.Tensor) -> torch.Tensor:
    return frame.mean(dim=0, keepdim=True)[None]


def test_the_blend_takes_the_sharpness_weighted_mean_in_the_band_and_leaves_the_rest():
    frames = _frames(3)
    blend = SharpnessBlend()
    for frame in frames:
        blend.add(frame, _gray(frame), None)
    fused = frames[2].clone()
    index = torch.full((40, 50), 2, dtype=torch.int32)
    index[:, :10] = 0
    out = blend.apply(fused, index)
    weights = [laplacian_energy(_gray(f))[0].add(1.0).pow(2) for f in frames]
    mean = sum(w * f for w, f in zip(weights, frames)) / sum(weights)
    assert torch.allclose(out[:, :, 5:12], mean[:, :, 5:12], atol=1e-5)  # within the band
    assert torch.equal(out[:, :, 30:], fused[:, :, 30:])  # far from the edge
    # the sharpest frame dominates the mean
    assert (mean - frames[0]).abs().mean() < 0.2 * (frames[1] - frames[0]).abs().mean()


def test_a_pair_and_edge_fill_are_not_blended():
    frames = _frames(3)
    index = torch.zeros(40, 50, dtype=torch.int32)
    index[:, 25:] = 1
    pair = SharpnessBlend()
    for frame in frames[:2]:
        pair.add(frame, _gray(frame), None)
    assert torch.equal(pair.apply(frames[1], index), frames[1])
    stack = SharpnessBlend()
    has_image = torch.ones(1, 1, 40, 50, dtype=torch.bool)
    has_image[..., :, 20:] = False  # the sharpest frame is edge fill on the right
    stack.add(frames[0], _gray(frames[0]), has_image)
    for frame in frames[1:]:
        stack.add(frame, _gray(frame), None)
    out = stack.apply(frames[1], index)
    assert torch.allclose(out[:, :, 25:30], stack.weighted[:, :, 25:30] / stack.total[:, :, 25:30], atol=1e-6)
    assert (out[:, :, 25:30] - frames[0][:, :, 25:30]).abs().mean() > 0.01  # not the fill frame's pixels


def _layered_stack(seed: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """5 frames of a disc in front of a plane with a step; the truth and a 6 px band around depth edges."""
    yy, xx = np.mgrid[:128, :144]
    depth = (((yy - 64) ** 2 + (xx - 72) ** 2 < 40 ** 2) * 1.0 + (xx > 110) * 0.5).astype(np.float32)
    stack = make_stack(textured(128, 144, seed, 3), depth, 5, max_blur=5)
    edge = np.zeros(depth.shape, bool)
    edge[1:] |= depth[1:] != depth[:-1]
    edge[:, 1:] |= depth[:, 1:] != depth[:, :-1]
    frames = [np.round(f * 255).astype(np.uint8) for f in stack.frames]
    return frames, stack.truth * 255.0, ndimage.distance_transform_edt(~edge) <= 6


def test_the_blend_brings_stacks_closer_to_the_truth_at_depth_edges(good_model):
    errors = {"off": [], "laplacian": [], "learned": []}
    for seed in range(4):
        frames, truth, band = _layered_stack(seed)
        for blend in errors:
            fused = fuse_stack(frames, weights=good_model, device="cpu", align="none", boundary_blend=blend).fused
            errors[blend].append(float(((fused - truth) ** 2)[band].mean()))
    assert np.mean(errors["laplacian"]) < 0.97 * np.mean(errors["off"]), errors
    assert np.mean(errors["learned"]) < 0.97 * np.mean(errors["off"]), errors


def test_the_blend_changes_only_pixels_near_index_edges_and_never_pairs(good_model):
    frames, _, _ = _layered_stack(0)
    on = fuse_stack(frames, weights=good_model, device="cpu", align="none")
    off = fuse_stack(frames, weights=good_model, device="cpu", align="none", boundary_blend=False)
    assert np.array_equal(on.index_map, off.index_map)
    changed = np.abs(on.fused.astype(int) - off.fused).max(axis=2) > 0
    index = off.index_map.astype(np.int64)
    near = ndimage.distance_transform_cdt(~index_edges(torch.from_numpy(index)).numpy(), "chessboard") <= 16
    assert changed.any() and not (changed & ~near).any()
    pair_on = fuse_stack(frames[:2], weights=good_model, device="cpu", align="none")
    pair_off = fuse_stack(frames[:2], weights=good_model, device="cpu", align="none", boundary_blend=False)
    assert np.array_equal(pair_on.fused, pair_off.fused)


def test_the_blend_is_gacns_option(tmp_path, model, weights_file):
    assert FusionOptions().boundary_blend == "learned" and FusionOptions(method="wavelet").boundary_blend == "off"
    assert FusionOptions(boundary_blend=True).boundary_blend == "learned"
    assert FusionOptions(boundary_blend=False).boundary_blend == "off"
    assert FusionOptions(boundary_blend="laplacian").boundary_blend == "laplacian"
    with pytest.raises(UsageError, match="gacn method only") as err:
        FusionOptions(method="wavelet", boundary_blend=True)
    assert err.value.option == "boundary_blend"
    for bad in ("sharp", str(tmp_path / "missing.pt"), 3):
        with pytest.raises(UsageError, match="boundary blend") as err:
            FusionOptions(boundary_blend=bad)
        assert err.value.option == "boundary_blend"
    frames, _, _ = _layered_stack(1)
    for k, frame in enumerate(frames[:3]):
        write_image(tmp_path / f"f{k}.png", frame)
    inputs = [str(tmp_path / f"f{k}.png") for k in range(3)]
    runner = CliRunner()
    r = runner.invoke(main, ["stack", *inputs, "-o", str(tmp_path / "off.png"), "--weights", str(weights_file),
                             "--no-boundary-blend", "--align", "none", "-q"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["stack", *inputs, "-o", str(tmp_path / "w.png"), "--method", "wavelet",
                             "--boundary-blend", "learned", "-q"])
    assert r.exit_code == 2 and "--boundary-blend" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = runner.invoke(main, ["stack", *inputs, "-o", str(tmp_path / "g.png"), "--weights", str(weights_file),
                             "--boundary-blend", str(weights_file), "--align", "none", "-q"])  # GACN's, not a blend's
    assert r.exit_code == 2 and "--boundary-blend" in r.stderr and "architecture" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "g.png").exists()


@pytest.mark.parametrize("mode", ["learned", "laplacian", "half-resolution net"])
def test_a_tiled_blend_equals_the_untiled_one(good_model, mode, tmp_path):
    from conftest import random_blend_net
    from focusfuse.methods.gacn.blend_net import save_blend_weights

    if mode == "half-resolution net":  # 2x2 blocks: tiles must start on even pixels
        mode = str(save_blend_weights(random_blend_net(5, scale=2), tmp_path / "half.pt"))
    frames, _, _ = _layered_stack(2)
    frames = [f[:127, :141] for f in frames]  # odd sizes: partial 2x2 blocks at the edges
    whole = fuse_stack(frames, weights=good_model, device="cpu", align="none", tile_size=0, boundary_blend=mode)
    tiled = fuse_stack(frames, weights=good_model, device="cpu", align="none", tile_size=45, boundary_blend=mode)
    off = fuse_stack(frames, weights=good_model, device="cpu", align="none", tile_size=0, boundary_blend="off")
    assert tiled.tiles > 1 and not np.array_equal(whole.fused, off.fused)
    assert np.abs(whole.fused.astype(int) - tiled.fused).max() <= 1
    assert np.array_equal(whole.index_map, tiled.index_map)


def test_a_reduced_blend_net_starts_tiles_on_its_blocks(good_model):
    from conftest import random_blend_net
    from focusfuse.backends.cpu import CpuBackend
    from focusfuse.methods.gacn.method import GacnMethod
    from focusfuse.methods.registry import make_method

    backend = CpuBackend(torch.device("cpu"))
    half = GacnMethod(good_model, backend, "calibrated", 3, True, random_blend_net(0, scale=2))
    plain = make_method("gacn", backend, weights=good_model, boundary_blend="laplacian", reduce=3)
    learned = make_method("gacn", backend, weights=good_model, boundary_blend="learned", reduce=3)
    assert half.tile_multiple() == 6 and plain.tile_multiple() == 3 and learned.tile_multiple() == 3
    assert half.halo(5) % 6 == 0 and half.halo(5) >= plain.halo(5) and half.halo(2) < half.halo(5)
    assert "learned" in learned.description and "Laplacian" in plain.description
    pair = make_method("gacn", backend, weights=good_model, strategy="pair")
    assert pair.tile_multiple() == 1 and "blend" not in pair.description
