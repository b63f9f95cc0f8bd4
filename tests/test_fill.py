"""Edge fill: finding constant bands along frame edges, replacing them for the network, keeping them out."""

from __future__ import annotations

import numpy as np
import pytest

from focusfuse import fuse_pair, fuse_stack
from focusfuse.frames.fill import EdgeFill, edge_fill, find_edge_fill, replace_fill
from focusfuse.box import Box

from conftest import focus_pair, textured


def with_bands(image: np.ndarray, fill: EdgeFill, value: float) -> np.ndarray:
    out = image.copy()
    h, w = out.shape[:2]
    out[:fill.top] = value
    out[h - fill.bottom:] = value
    out[:, :fill.left] = value
    out[:, w - fill.right:] = value
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [0, 3])
def test_bands_of_known_width_are_found(dtype, channels):
    scale = {np.uint8: 255, np.uint16: 65535, np.float32: 1.0}[dtype]
    image = (textured(320, 400, seed=1, channels=channels) * scale).astype(dtype)
    assert edge_fill(image) == EdgeFill()
    bands = EdgeFill(top=0, bottom=37, left=5, right=1)  # 37: more than one strip of lines
    assert edge_fill(with_bands(image, bands, 0)) == bands
    assert edge_fill(with_bands(image, EdgeFill(top=3), 0.5 * scale)) == EdgeFill(top=3)


def test_noisy_or_graded_lines_are_not_fill():
    image = textured(100, 100, seed=2)
    rng = np.random.default_rng(0)
    noisy = image.copy()
    noisy[:4] = 0.1 + rng.normal(0, 0.02, (4, 100))  # spans more than 1% of the scale
    assert edge_fill(noisy).top == 0
    graded = image.copy()
    graded[:6] = np.linspace(0.0, 0.25, 6)[:, None]  # each line constant, but not one fill value
    assert edge_fill(graded).top == 1
    assert edge_fill(np.zeros((40, 48), np.float32)) == EdgeFill(5, 5, 6, 6)  # at most an eighth per side


def test_a_noisy_dark_background_is_not_fill():
    rng = np.random.default_rng(1)
    dark = np.clip(rng.normal(100, 15, (200, 200)), 0, 4095).astype(np.uint16)  # 12-bit camera, no light
    dark[80:120, 80:120] = 3000
    assert edge_fill(dark) == EdgeFill()
    dark[:6] = 100  # one exact value, as registration writes it
    assert edge_fill(dark) == EdgeFill(top=6)


def test_bands_found_region_by_region_equal_the_whole_frame():
    image = with_bands(textured(400, 90, seed=3, channels=3), EdgeFill(top=40, left=2, right=9), 0.0)
    reads = []

    def read(box: Box) -> np.ndarray:
        reads.append(box)
        return image[box.slices]

    assert find_edge_fill(read, image.shape[:2], image.dtype) == edge_fill(image) == EdgeFill(top=40, left=2, right=9)
    assert max(b.shape[0] for b in reads if b.shape[1] == 90) <= 32  # the edges are read in strips


def test_replaced_fill_is_the_nearest_image_pixel_in_any_region():
    image = with_bands(textured(60, 70, seed=4), EdgeFill(top=20, right=5), 0.0)
    area = EdgeFill(top=20, right=5).image_area(image.shape)
    whole = replace_fill(lambda b: image[b.slices], Box(0, 60, 0, 70), image, area)
    assert np.array_equal(whole[:20], np.repeat(whole[20:21], 20, axis=0))
    assert np.array_equal(whole[:, 65:], np.repeat(whole[:, 64:65], 5, axis=1))
    assert np.array_equal(whole[20:, :65], image[20:, :65])
    for box in (Box(0, 10, 0, 30), Box(5, 40, 50, 70), Box(30, 60, 66, 70)):  # inside the band, across, corner
        region = replace_fill(lambda b: image[b.slices], box, image[box.slices], area)
        assert np.array_equal(region, whole[box.slices])


def clock_like_pair() -> tuple[np.ndarray, np.ndarray]:
    """A sharp on the left, B on the right, both faint (a plain wall); A carries black fill along its right
    edge, where B is the sharp frame."""
    a, b, _ = focus_pair(96, 128, seed=5)
    a, b = 0.4 + 0.3 * (a - 0.5), 0.4 + 0.3 * (b - 0.5)
    return with_bands(a, EdgeFill(right=6), 0.0), b


def test_fill_next_to_the_other_frames_sharp_pixels_is_not_chosen(good_model):
    a, b = clock_like_pair()
    handled = fuse_pair(a, b, weights=good_model, device="cpu")
    ignored = fuse_pair(a, b, weights=good_model, device="cpu", edge_fill=False)
    strip = np.s_[:, -16:]  # the band and the pixels next to it: B is the sharp frame there
    assert ignored.decision_map[strip].mean() > 0.5  # the failure this guards against: the fill's step wins
    assert handled.decision_map[strip].mean() < 0.05
    assert np.array_equal(handled.decision_map[:, -6:], np.zeros((96, 6), np.float32))
    assert np.allclose(handled.fused[:, -6:], b[:, -6:], atol=1e-6)
    assert handled.decision_map[:, :40].mean() > 0.9  # A's sharp half is still taken from A


def test_fill_in_every_frame_keeps_its_own_values(good_model):
    a, b, _ = focus_pair(96, 128, seed=6)
    a, b = with_bands(a, EdgeFill(bottom=8), 0.2), with_bands(b, EdgeFill(bottom=8), 0.2)
    fused = fuse_pair(a, b, weights=good_model, device="cpu").fused
    assert np.allclose(fused[-8:], 0.2, atol=1e-6)  # not the replicated rows the network saw


@pytest.mark.parametrize("reduce", [1, 2])
def test_tiles_give_the_whole_frame_result_with_wide_fill(good_model, reduce):
    a, b, _ = focus_pair(480, 64, seed=7, channels=3)
    a = with_bands(a, EdgeFill(top=58, left=3), 0.0)  # the first tiles' crops (16 + 40 px) lie inside the band
    whole = fuse_pair(a, b, weights=good_model, device="cpu", tile_size=0, reduce=reduce)
    tiled = fuse_pair(a, b, weights=good_model, device="cpu", tile_size=16, reduce=reduce)
    assert np.abs(whole.decision_map - tiled.decision_map).max() < 1 / 255
    assert np.abs(whole.fused - tiled.fused).max() < 1 / 255
    assert whole.decision_map[:58].max() == 0.0 and whole.decision_map[:, :3].max() == 0.0


def test_stack_tiles_give_the_whole_frame_result_with_fill(good_model):
    frames = [with_bands(f, EdgeFill(left=6 * k), 0.0) for k, f in enumerate(thirds_stack(96))]
    whole = fuse_stack(frames, weights=good_model, device="cpu", align="none", tile_size=0)
    tiled = fuse_stack(frames, weights=good_model, device="cpu", align="none", tile_size=64)
    assert np.array_equal(whole.index_map, tiled.index_map)
    assert np.abs(whole.fused - tiled.fused).max() < 1e-5


def thirds_stack(size: int) -> list[np.ndarray]:
    """Three frames of one texture; frame k is sharp in the k-th third of the columns."""
    import cv2

    sharp = textured(size, size, seed=8)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 2.5)
    frames = []
    for k in range(3):
        m = np.zeros_like(sharp)
        m[:, size * k // 3:size * (k + 1) // 3] = 1
        frames.append(m * sharp + (1 - m) * blurred)
    return frames


@pytest.mark.parametrize("strategy", ["calibrated", "calibration", "serial"])
def test_stacks_never_take_fill_where_another_frame_has_pixels(good_model, strategy):
    frames = thirds_stack(96)
    frames[0] = with_bands(frames[0], EdgeFill(left=10), 0.0)  # fill where frame 0 is the sharp one
    frames[2] = with_bands(frames[2], EdgeFill(top=5), 0.0)
    result = fuse_stack(frames, strategy=strategy, weights=good_model, device="cpu", align="none")
    assert not (result.index_map[:, :10] == 0).any()
    assert not (result.index_map[:5] == 2).any()
    assert (result.index_map[10:, 40:56] == 1).mean() > 0.9  # elsewhere the sharp frame still wins


@pytest.mark.parametrize("strategy", ["calibrated", "calibration", "serial"])
def test_fill_shared_by_earlier_frames_does_not_step_into_the_decision(good_model, strategy):
    """Frames 0 and 1 both have fill along the left edge, frame 2 is sharp there: beside the band, where
    every frame has pixels, the sharp frame must win, not the earlier frames' replaced fill."""
    frames = [0.4 + 0.3 * (f - 0.5) for f in thirds_stack(96)[::-1]]  # faint; frame 2 sharp in the left third
    frames = [with_bands(f, EdgeFill(left=8), 0.0) for f in frames[:2]] + [frames[2]]
    result = fuse_stack(frames, strategy=strategy, weights=good_model, device="cpu", align="none")
    assert (result.index_map[:, :8] == 2).all()
    assert (result.index_map[10:-10, 8:24] == 2).mean() > 0.97  # 0.90 with edge_fill=False
