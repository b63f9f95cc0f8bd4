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


@pytest.mark.parametrize("focus", [0.0, 0.5, 1.0])
def test_a_continuous_slope_renders_without_seams(focus):
    # a linear ramp of brightness on a plane sloping in depth: any symmetric blur of a linear image is the
    # image itself, so a frame must match it away from the borders (within one 8-bit level: what a layer
    # hides is its edge colour extended, not the ramp continued), whatever layers the depth is cut into
    ramp = np.tile(np.linspace(0.2, 0.8, 96, dtype=np.float32)[:, None], (1, 64))
    depth = np.tile(np.linspace(0.0, 1.0, 96, dtype=np.float32)[:, None], (1, 64))
    frame = layered_defocus(ramp, depth, focus=focus, blur_per_unit=4.0, layers=12)
    assert np.abs(frame - ramp)[8:-8, 8:-8].max() < 1 / 255
    # the earlier slab model lets the layers behind show through at every layer edge: seams
    slab = layered_defocus(ramp, depth, focus=focus, blur_per_unit=4.0, layers=12, compositing="slab")
    assert np.abs(slab - ramp)[8:-8, 8:-8].max() > 0.01


def test_behind_a_blurred_near_edge_the_background_shows_its_own_colours():
    image = np.full((40, 60), 0.2, np.float32)
    image[:, 30:] = 0.9  # a bright near object on the right of a dark background
    image[:, :10] = 0.6  # a third, farther region: it must not show through at the near edge
    depth = np.zeros((40, 60), np.float32)
    depth[:, 10:30] = 0.5
    depth[:, 30:] = 1.0
    frame = layered_defocus(image, depth, focus=0.5, blur_per_unit=6.0, layers=3)
    near_edge = frame[:, 24:36]
    assert near_edge.min() >= 0.2 - 1e-5 and near_edge.max() <= 0.9 + 1e-5  # a blend of the two, nothing else
    assert np.all(np.diff(frame[20, 20:40]) >= -1e-5)  # rising from background to object, no dip


def test_layered_defocus_rejects_an_unknown_compositing():
    with pytest.raises(ValueError, match="compositing"):
        layered_defocus(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32), 0.0, 1.0, compositing="x")


def test_a_stack_cut_once_renders_each_frame_as_layered_defocus_does():
    from focusfuse.evaluation.synthetic import layered_pair

    rng = np.random.default_rng(4)
    image = rng.random((40, 52, 3)).astype(np.float32)
    depth = np.repeat(rng.random((1, 52)), 40, axis=0).astype(np.float32)
    stack = make_stack(image, depth, 3, max_blur=4.0, layers=6)
    lo, hi = np.percentile(depth, [2, 98])  # the depth range make_stack spreads the focus planes over
    blur_per_unit = 4.0 / float(hi - lo)
    for frame, focus in zip(stack.frames, stack.focus):
        assert np.array_equal(frame, layered_defocus(image, stack.depth, float(focus), blur_per_unit, 6))
    near = (depth > 0.5).astype(np.float32)
    pair = layered_pair(image, near, 3.0, 2.0)
    assert np.array_equal(pair[0], layered_defocus(image, near, 1.0, 3.0, 2))
    assert np.array_equal(pair[1], layered_defocus(image, near, 0.0, 2.0, 2))
