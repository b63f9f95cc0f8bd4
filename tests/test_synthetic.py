import numpy as np
import pytest

from focusfuse.evaluation.synthetic import disk_blur, disk_kernel, fill_invalid, layered_defocus, make_stack


@pytest.mark.parametrize("radius", [0.0, 0.4, 1.0, 2.5, 6.0])
def test_disk_kernel_is_normalised_and_round(radius):
    k = disk_kernel(radius)
    assert np.isclose(k.sum(), 1.0)
    assert np.allclose(k, k.T) and np.allclose(k, k[::-1])


def test_disk_blur_keeps_mean_and_lowers_contrast():
    rng = np.random.default_rng(0)
    x = rng.random((40, 40)).astype(np.float32)
    y = disk_blur(x, 3.0)
    assert abs(y.mean() - x.mean()) < 0.01 and y.std() < 0.5 * x.std()


def test_fill_invalid_uses_nearest_finite_value():
    d = np.array([[1.0, np.inf], [np.nan, 4.0]], np.float32)
    filled = fill_invalid(d)
    assert np.isfinite(filled).all() and filled[0, 0] == 1.0 and filled[1, 1] == 4.0


def test_layered_defocus_keeps_the_focused_layer_sharp_and_blurs_the_other():
    rng = np.random.default_rng(1)
    image = rng.random((60, 60)).astype(np.float32)
    depth = np.zeros((60, 60), np.float32)
    depth[:, 30:] = 10.0  # right half near
    near_focus = layered_defocus(image, depth, focus=10.0, blur_per_unit=0.4, layers=2)
    assert np.allclose(near_focus[:, 36:], image[:, 36:], atol=1e-5)
    assert np.abs(near_focus[:, :24] - image[:, :24]).mean() > 0.1
    # the blurred far layer does not leak over the sharp near layer, the near one spreads when blurred
    far_focus = layered_defocus(image, depth, focus=0.0, blur_per_unit=0.4, layers=2)
    assert np.allclose(far_focus[:, :25], image[:, :25], atol=1e-5)
    assert np.abs(far_focus[:, 26:30] - image[:, 26:30]).mean() > 0.05


def test_make_stack_gives_frames_truth_and_index():
    rng = np.random.default_rng(2)
    image = (rng.random((32, 48, 3)) * 255).astype(np.uint8)
    depth = np.tile(np.linspace(0, 1, 48, dtype=np.float32), (32, 1))
    stack = make_stack(image, depth, 4, max_blur=3.0, layers=8)
    assert len(stack.frames) == 4 and stack.frames[0].shape == (32, 48, 3)
    assert stack.truth.dtype == np.float32 and stack.truth.max() <= 1.0
    assert stack.index_truth.min() == 0 and stack.index_truth.max() == 3
    assert np.all(np.diff(stack.index_truth[0]) >= 0)  # depth grows left to right
