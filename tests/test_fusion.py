import numpy as np
import pytest
import torch

from focusfuse import fuse_pair
from focusfuse.errors import InputError, UsageError
from focusfuse.io.images import write_image

from conftest import focus_pair, textured


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [0, 3])
def test_fused_keeps_dtype_and_layout(model, dtype, channels):
    a = textured(24, 30, 1, channels)
    b = textured(24, 30, 2, channels)
    if dtype != np.float32:
        scale = np.iinfo(dtype).max
        a, b = (np.round(x * scale).astype(dtype) for x in (a, b))
    result = fuse_pair(a, b, weights=model, device="cpu")
    assert result.fused.dtype == dtype
    assert result.fused.shape == a.shape
    assert result.decision_map.shape == result.initial_map.shape == (24, 30)
    assert result.decision_map.dtype == np.float32
    assert np.all((result.decision_map >= 0) & (result.decision_map <= 1))


def test_fused_is_the_per_pixel_blend_of_the_inputs(model):
    a, b = textured(20, 20, 3, 3), textured(20, 20, 4, 3)
    result = fuse_pair(a, b, weights=model, device="cpu")
    p = result.decision_map[:, :, None]
    assert np.allclose(result.fused, p * a + (1 - p) * b, atol=1e-6)


def test_rgba_alpha_is_dropped_with_a_warning(model):
    a = np.dstack([np.round(textured(16, 16, 1, 3) * 255).astype(np.uint8), np.full((16, 16), 255, np.uint8)])
    b = np.dstack([np.round(textured(16, 16, 2, 3) * 255).astype(np.uint8), np.full((16, 16), 255, np.uint8)])
    with pytest.warns(UserWarning, match="alpha"):
        result = fuse_pair(a, b, weights=model, device="cpu")
    assert result.fused.shape == (16, 16, 3)


def test_gray_with_colour_gives_colour(model):
    a = textured(16, 16, 1)
    b = textured(16, 16, 2, 3)
    with pytest.warns(UserWarning, match="gray and colour"):
        result = fuse_pair(a, b, weights=model, device="cpu")
    assert result.fused.shape == (16, 16, 3)


def test_mismatched_sizes_are_refused(model):
    with pytest.raises(InputError, match="differs from the first frame"):
        fuse_pair(textured(16, 16), textured(16, 18), weights=model, device="cpu")


def test_paths_are_accepted(model, tmp_path):
    a, b = textured(16, 16, 1, 3), textured(16, 16, 2, 3)
    pa = write_image(tmp_path / "a.png", np.round(a * 255).astype(np.uint8))
    pb = write_image(tmp_path / "b.tif", np.round(b * 255).astype(np.uint8))
    from_paths = fuse_pair(pa, pb, weights=model, device="cpu")
    from_arrays = fuse_pair(np.round(a * 255).astype(np.uint8), np.round(b * 255).astype(np.uint8),
                            weights=model, device="cpu")
    assert np.array_equal(from_paths.fused, from_arrays.fused)


def test_unusable_pairs_raise_usage_errors(model, tmp_path):
    import tifffile

    pa = write_image(tmp_path / "a.png", np.round(textured(16, 16, 1) * 255).astype(np.uint8))
    with pytest.raises(UsageError, match="given twice"):
        fuse_pair(pa, tmp_path / "." / "a.png", weights=model, device="cpu")
    tifffile.imwrite(tmp_path / "z.tif", np.zeros((3, 16, 16), np.uint8), photometric="minisblack")
    with pytest.raises(UsageError, match="exactly two single frames"):
        fuse_pair(tmp_path / "z.tif", pa, weights=model, device="cpu")
    with pytest.raises(UsageError, match="unknown alignment 'sideways'"):
        fuse_pair(pa, textured(16, 16, 2), weights=model, device="cpu", align="sideways")


def test_official_weights_pick_the_sharp_halves(official_model):
    a, b, mask = focus_pair(64, 80, seed=1)
    result = fuse_pair(a, b, weights=official_model, device="cpu")
    inner = (slice(8, -8), slice(8, 32))
    assert result.decision_map[inner].mean() > 0.95  # left half from A
    assert result.decision_map[8:-8, 48:-8].mean() < 0.05  # right half from B


def test_reduced_network_still_picks_the_sharp_halves(good_model):
    a, b, mask = focus_pair(96, 120, seed=1)
    full = fuse_pair(a, b, weights=good_model, device="cpu")
    half = fuse_pair(a, b, weights=good_model, device="cpu", reduce=2)
    assert half.decision_map.shape == full.decision_map.shape == mask.shape
    assert half.decision_map[8:-8, 8:48].mean() > 0.95 and half.decision_map[8:-8, 72:-8].mean() < 0.05
    assert not np.array_equal(half.decision_map, full.decision_map)


@pytest.mark.parametrize("reduce", [0, 9, 1.5, "2", True])
def test_reduce_out_of_range_is_refused(model, reduce):
    from focusfuse.errors import UsageError

    a, b = textured(20, 20, 1), textured(20, 20, 2)
    with pytest.raises(UsageError, match="reduce"):
        fuse_pair(a, b, weights=model, device="cpu", reduce=reduce)



def test_reduce_takes_numpy_integers(model):
    a, b = textured(20, 20, 1), textured(20, 20, 2)
    assert fuse_pair(a, b, weights=model, device="cpu", reduce=np.int64(2)).fused.shape == a.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(model):
    a, b = textured(40, 40, 1, 3), textured(40, 40, 2, 3)
    cpu = fuse_pair(a, b, weights=model, device="cpu")
    gpu = fuse_pair(a, b, weights=model, device="cuda")
    assert np.abs(cpu.fused - gpu.fused).max() < 1e-3


def test_read_only_arrays_are_fused_without_warnings_and_left_as_they_are(model):
    import warnings

    from focusfuse import fuse_pair

    a, b, _ = focus_pair(40, 48)
    a8, b8 = (np.round(x * 255).astype(np.uint8) for x in (a, b))
    for x in (a8, b8):
        x.flags.writeable = False
    before = a8.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fuse_pair(a8, b8, weights=model, device="cpu")
    assert np.array_equal(a8, before)
