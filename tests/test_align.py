"""focusfuse.align.estimate on small synthetic focus brackets with known motion, focus and exposure."""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from focusfuse.align.ecc import corner_motion, ecc_target, find_warp
from focusfuse.align.estimate import (
    SNAP_SHIFT_PX,
    AlignmentEstimator,
    FrameAlignment,
    StackAlignment,
    _Link,
    anchored_frames,
    crop_to_box,
    detail_image,
    estimate_alignment,
    focus_signature,
    frame_alignments,
    partner_candidates,
    resize_matrix,
    snap_to_identity,
    source_coordinates,
    valid_box,
    warp_frame,
)

SHAPE = (240, 320)  # (H, W) of the synthetic frames
GAINS = (1.0, 0.93, 1.08, 0.9, 1.1, 0.96, 1.04)  # exposure drift, one per frame
TOLERANCE_PX = 0.2


# ---------------------------------------------------------------------------------------------
# Synthetic brackets


def scene() -> np.ndarray:
    """A textured gray scene (512x512, float64 in 0..1)."""
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY).astype(np.float64) / 255.0


def motion(scale: float = 1.0, angle_deg: float = 0.0, dx: float = 0.0, dy: float = 0.0,
           perspective: tuple[float, float] = (0.0, 0.0), shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """3x3 map from frame coordinates to scene-crop coordinates: scale/rotation about the frame centre."""
    height, width = shape
    centre = np.array([[1.0, 0.0, (width - 1) / 2], [0.0, 1.0, (height - 1) / 2], [0.0, 0.0, 1.0]])
    angle = np.deg2rad(angle_deg)
    linear = np.array([
        [scale * np.cos(angle), -scale * np.sin(angle), 0.0],
        [scale * np.sin(angle), scale * np.cos(angle), 0.0],
        [perspective[0], perspective[1], 1.0],
    ])
    shift = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
    return shift @ centre @ linear @ np.linalg.inv(centre)


MILD_BLUR = (0.6, 1.0, 1.6, 2.6)  # Gaussian sigmas (px) of the defocus model, sharpest first
DEEP_BLUR = (0.6, 1.0, 1.6, 2.6, 4.2, 6.8)  # a deeper model: far-apart focus planes no longer match


def focus_blurred(image: np.ndarray, focus: float, strength: float = 2.0,
                  blur: Sequence[float] = MILD_BLUR) -> np.ndarray:
    """Depth-dependent defocus: depth rises left to right, the plane at ``focus`` (0..1) is sharp."""
    levels = np.asarray(blur, dtype=np.float64)
    blurred = np.stack([cv2.GaussianBlur(image, (0, 0), sigma) for sigma in levels])
    depth = np.linspace(0.0, 1.0, image.shape[1])
    position = np.interp(0.6 + strength * np.abs(depth - focus), levels, np.arange(len(levels)))
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, len(levels) - 1)
    weight = position - low
    columns = np.arange(image.shape[1])
    return (blurred[low, :, columns] * (1 - weight)[:, None] + blurred[high, :, columns] * weight[:, None]).T


def render(image: np.ndarray, frame_to_crop: np.ndarray) -> np.ndarray:
    """The frame whose pixel x shows ``image`` at the centred crop's point ``frame_to_crop @ x`` (exact cubic)."""
    height, width = SHAPE
    crop = np.array([[1.0, 0.0, (image.shape[1] - width) / 2], [0.0, 1.0, (image.shape[0] - height) / 2],
                     [0.0, 0.0, 1.0]])
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    points = (crop @ frame_to_crop) @ np.stack([cols.ravel(), rows.ravel(), np.ones(rows.size)])
    points = points[:2] / points[2]
    return ndimage.map_coordinates(image, [points[1], points[0]], order=3, mode="reflect").reshape(SHAPE)


def bracket(motions: list[np.ndarray], gains: Sequence[float] = GAINS, colour: bool = False,
            seed: int = 0, focus_order: Sequence[int] | None = None, strength: float = 2.0,
            blur: Sequence[float] = MILD_BLUR) -> list[np.ndarray]:
    """uint8 frames: moved, focused at successive depths, with exposure drift and noise.

    ``focus_order[i]`` is the focus step (0..N-1) of frame i (default: i, i.e. in focus order).
    """
    rng = np.random.default_rng(seed)
    source = scene()
    order = range(len(motions)) if focus_order is None else focus_order
    frames = []
    for index, frame_motion in enumerate(motions):
        focus = order[index] / max(1, len(motions) - 1)
        frame = render(focus_blurred(source, focus, strength, blur), frame_motion) * gains[index]
        frame = frame + rng.normal(0.0, 0.003, frame.shape)
        if colour:
            frame = frame[:, :, None] * np.array([1.0, 0.95, 0.85])
        frames.append(np.clip(np.rint(frame * 255), 0, 255).astype(np.uint8))
    return frames


def true_transforms(motions: list[np.ndarray], reference: int) -> list[np.ndarray]:
    """Frame -> reference-frame coordinate maps of the synthetic bracket."""
    return [np.linalg.inv(motions[reference]) @ frame_motion for frame_motion in motions]


def mapped_points(transform: np.ndarray) -> np.ndarray:
    """The frame's corners and centre mapped by ``transform`` (full resolution)."""
    height, width = SHAPE
    points = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1],
                       [(width - 1) / 2, (height - 1) / 2]])
    homogeneous = np.column_stack([points, np.ones(len(points))]) @ transform.T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def point_errors(alignment: StackAlignment, motions: list[np.ndarray]) -> list[float]:
    """Per frame: largest distance (px) between estimated and true positions of corners and centre."""
    truth = true_transforms(motions, alignment.reference)
    return [float(np.linalg.norm(mapped_points(frame.transform) - mapped_points(expected), axis=1).max())
            for frame, expected in zip(alignment.frames, truth)]


def assert_gains(alignment: StackAlignment, gains: Sequence[float] = GAINS) -> None:
    """Recovered exposure matches reference gain / frame gain (offset ~ 0), within 3 %."""
    for index, frame in enumerate(alignment.frames):
        expected = gains[alignment.reference] / gains[index]
        assert frame.gain == pytest.approx(expected, rel=0.03), f"frame {index}"
        assert abs(frame.offset) < 0.02, f"frame {index}"


SHIFTS = [motion(dx=1.37 * i - 3.1, dy=-0.73 * i + 1.2) for i in range(7)]
LARGE_SHIFTS = [motion(dx=21.5 * (i - 3), dy=-14.5 * (i - 3)) for i in range(7)]
BREATHING = [motion(scale=1.0 + 0.005 * i, dx=0.2 * i, dy=-0.15 * i) for i in range(7)]  # 1.000 -> 1.030
ROTATION = [motion(angle_deg=0.3 * i, dx=0.5 * i, dy=0.25 * i) for i in range(7)]
PERSPECTIVE = [motion(scale=1.0 + 0.003 * i, perspective=(1.5e-5 * i, -1.0e-5 * i)) for i in range(7)]
DRIFT = [motion(scale=1.0 + 0.004 * i, dx=2.3 * i - 7.0, dy=-1.1 * i + 3.0) for i in range(7)]  # ~3 px per step


# ---------------------------------------------------------------------------------------------
# Geometry and exposure


@pytest.mark.parametrize("mode", ["translation", "affine", "auto"])
def test_subpixel_translations_are_recovered(mode: str) -> None:
    alignment = estimate_alignment(bracket(SHIFTS), mode=mode)
    assert alignment.reference == 3 and alignment.shape == SHAPE
    assert alignment.failures() == []
    assert max(point_errors(alignment, SHIFTS)) < TOLERANCE_PX
    assert_gains(alignment)


def test_translation_mode_keeps_a_pure_translation() -> None:
    alignment = estimate_alignment(bracket(SHIFTS), mode="translation")
    for frame in alignment.frames:
        np.testing.assert_allclose(frame.transform[:2, :2], np.eye(2), atol=1e-12)
        np.testing.assert_allclose(frame.transform[2], [0.0, 0.0, 1.0], atol=1e-12)


@pytest.mark.parametrize("mode", ["affine", "auto"])
def test_focus_breathing_scale_ramp_is_recovered(mode: str) -> None:
    frames = bracket(BREATHING, colour=True)
    alignment = estimate_alignment(frames, mode=mode)
    assert alignment.failures() == []
    assert max(point_errors(alignment, BREATHING)) < TOLERANCE_PX
    scales = [np.sqrt(np.linalg.det(frame.transform[:2, :2])) for frame in alignment.frames]
    assert scales[0] == pytest.approx(1.0 / 1.015, abs=5e-4)
    assert scales[-1] == pytest.approx(1.030 / 1.015, abs=5e-4)
    assert_gains(alignment)


def test_small_rotations_are_recovered() -> None:
    alignment = estimate_alignment(bracket(ROTATION), mode="auto")
    assert alignment.failures() == []
    assert max(point_errors(alignment, ROTATION)) < TOLERANCE_PX


def test_homography_mode_recovers_a_mild_perspective_warp() -> None:
    frames = bracket(PERSPECTIVE)
    alignment = estimate_alignment(frames, mode="homography")
    assert alignment.failures() == []
    assert max(point_errors(alignment, PERSPECTIVE)) < TOLERANCE_PX
    affine = estimate_alignment(frames, mode="affine")
    assert max(point_errors(affine, PERSPECTIVE)) > 2 * TOLERANCE_PX  # the perspective is really there


def test_large_shifts_are_found_by_phase_correlation() -> None:
    alignment = estimate_alignment(bracket(LARGE_SHIFTS), mode="auto")
    assert alignment.failures() == []
    assert max(point_errors(alignment, LARGE_SHIFTS)) < TOLERANCE_PX
    # Shifts of +-64.5 px and +-43.5 px: the crop keeps x 65..254 and y 44..195.
    assert alignment.valid_box() == (65, 44, 255, 196)


@pytest.mark.parametrize("factor", [0.5, 0.625])
def test_resize_matrix_follows_area_downscaling(factor: float) -> None:
    rows, cols = np.mgrid[0:100, 0:120].astype(np.float64)
    centre = (57.3, 41.8)
    blob = np.exp(-((cols - centre[0]) ** 2 + (rows - centre[1]) ** 2) / (2 * 4.0**2)).astype(np.float32)
    small = cv2.resize(blob, (round(120 * factor), round(100 * factor)), interpolation=cv2.INTER_AREA)
    small_rows, small_cols = np.mgrid[0 : small.shape[0], 0 : small.shape[1]]
    centroid = np.array([(small * small_cols).sum(), (small * small_rows).sum()]) / small.sum()
    expected = resize_matrix(small.shape[1] / 120, small.shape[0] / 100) @ np.array([*centre, 1.0])
    np.testing.assert_allclose(centroid, expected[:2], atol=0.01)


def test_neighbour_steps_are_composed_towards_the_reference() -> None:
    def similarity(angle_deg: float, scale: float, dx: float, dy: float) -> np.ndarray:
        c, s = scale * np.cos(np.deg2rad(angle_deg)), scale * np.sin(np.deg2rad(angle_deg))
        return np.array([[c, -s, dx], [s, c, dy], [0.0, 0.0, 1.0]])

    step_1, step_2 = similarity(20, 1.0, 30, -5), similarity(-5, 1.3, -10, 12)  # frame i -> frame i-1
    exposure_1, exposure_2 = np.array([[1.2, 0.01], [0, 1]]), np.array([[0.8, -0.02], [0, 1]])
    links = [_Link(None, np.eye(3), np.eye(2)), _Link(0, step_1, exposure_1), _Link(1, step_2, exposure_2)]
    frames = frame_alignments(links, reference=2, to_small=np.eye(3))
    np.testing.assert_allclose(frames[0].transform, np.linalg.inv(step_1 @ step_2), atol=1e-12)
    np.testing.assert_allclose(frames[1].transform, np.linalg.inv(step_2), atol=1e-12)
    np.testing.assert_allclose(frames[2].transform, np.eye(3), atol=1e-12)
    to_reference = np.linalg.inv(exposure_1 @ exposure_2)  # frame 0 values -> frame 2 values
    assert (frames[0].gain, frames[0].offset) == pytest.approx((to_reference[0, 0], to_reference[0, 1]))
    # Steps estimated at half resolution come back conjugated to full resolution.
    full = frame_alignments(links, reference=0, to_small=resize_matrix(0.5, 0.5))
    expected = np.linalg.inv(resize_matrix(0.5, 0.5)) @ step_1 @ step_2 @ resize_matrix(0.5, 0.5)
    np.testing.assert_allclose(full[2].transform, expected, atol=1e-9)


def test_downscaled_estimation_is_rescaled_to_full_resolution() -> None:
    alignment = estimate_alignment(bracket(BREATHING), mode="auto", max_size=200)  # 0.625x
    assert max(point_errors(alignment, BREATHING)) < TOLERANCE_PX


def test_chosen_reference_gets_the_identity() -> None:
    alignment = estimate_alignment(bracket(SHIFTS), reference=0)
    assert alignment.reference == 0
    np.testing.assert_allclose(alignment.frames[0].transform, np.eye(3), atol=1e-12)
    assert alignment.frames[0].gain == pytest.approx(1.0) and alignment.frames[0].offset == pytest.approx(0.0)
    assert max(point_errors(alignment, SHIFTS)) < TOLERANCE_PX


# ---------------------------------------------------------------------------------------------
# Failures


def test_noise_and_constant_frames_are_reported_and_the_rest_still_align() -> None:
    frames = bracket(SHIFTS)
    rng = np.random.default_rng(5)
    frames[2] = rng.integers(0, 256, frames[2].shape, dtype=np.uint8)
    frames[5] = np.full_like(frames[5], 128)
    alignment = estimate_alignment(frames)
    failed = [index for index, frame in enumerate(alignment.frames) if not frame.ok]
    assert failed == [2, 5]
    assert alignment.frames[2].message.startswith("frame 2: ")
    assert "no texture" in alignment.frames[5].message
    assert len(alignment.failures()) == 2
    # A failed frame keeps the transform of the aligned neighbour it was compared with.
    np.testing.assert_allclose(alignment.frames[2].transform, alignment.frames[1].transform)
    np.testing.assert_allclose(alignment.frames[5].transform, alignment.frames[4].transform)
    errors = point_errors(alignment, SHIFTS)
    assert max(errors[i] for i in (0, 1, 3, 4, 6)) < TOLERANCE_PX


def test_a_bad_first_frame_is_blamed_not_its_successor() -> None:
    frames = bracket(SHIFTS)
    frames[0] = np.random.default_rng(6).integers(0, 256, frames[0].shape, dtype=np.uint8)
    alignment = estimate_alignment(frames)
    assert [frame.ok for frame in alignment.frames] == [False] + [True] * 6
    assert alignment.frames[0].message.startswith("frame 0: ")
    assert max(point_errors(alignment, SHIFTS)[1:]) < TOLERANCE_PX


def test_nan_frame_is_reported_not_raised() -> None:
    frames = [frame.astype(np.float32) / 255 for frame in bracket(SHIFTS)]
    frames[4][10:20, 10:20] = np.nan
    alignment = estimate_alignment(frames)
    assert not alignment.frames[4].ok and "NaN" in alignment.frames[4].message
    assert max(point_errors(alignment, SHIFTS)[i] for i in (0, 1, 2, 3, 5, 6)) < TOLERANCE_PX


def test_unusable_input_raises_value_error() -> None:
    frames = bracket(SHIFTS[:3])
    with pytest.raises(ValueError, match="mode"):
        estimate_alignment(frames, mode="rigid")
    with pytest.raises(ValueError, match="size"):
        estimate_alignment(frames + [frames[0][:200]])
    with pytest.raises(ValueError, match="reference"):
        estimate_alignment(frames, reference=3)
    with pytest.raises(ValueError):
        estimate_alignment([])
    with pytest.raises(ValueError, match="pixel type"):
        estimate_alignment([frame.astype(np.int32) for frame in frames])


# ---------------------------------------------------------------------------------------------
# Streaming


class CountingFrames(Sequence):
    """A lazy sequence of frames that counts how often a frame is read."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames, self.reads = frames, 0

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index):  # type: ignore[override]
        frame = self.frames[index]  # IndexError ends iteration; not a read
        self.reads += 1
        return frame


def test_none_mode_reads_only_the_first_frame() -> None:
    frames = CountingFrames(bracket(SHIFTS[:4]))
    alignment = estimate_alignment(frames, mode="none")
    assert frames.reads == 1
    assert alignment.reference == 2 and alignment.shape == SHAPE and len(alignment.frames) == 4
    for frame in alignment.frames:
        np.testing.assert_array_equal(frame.transform, np.eye(3))
        assert (frame.gain, frame.offset, frame.ok, frame.message) == (1.0, 0.0, True, "")


def test_sequence_is_read_once_and_progress_is_reported() -> None:
    frames = CountingFrames(bracket(SHIFTS))
    calls: list[tuple[int, int]] = []
    alignment = estimate_alignment(frames, progress=lambda done, total: calls.append((done, total)))
    assert frames.reads == 7
    assert calls == [(done, 7) for done in range(1, 8)]
    from_generator = estimate_alignment(frame for frame in frames.frames)
    for left, right in zip(alignment.frames, from_generator.frames):
        np.testing.assert_allclose(left.transform, right.transform)


def shifted_textures(count: int) -> Iterator[np.ndarray]:
    """``count`` freshly made 120x160 textured frames, each shifted by one pixel."""
    texture = cv2.GaussianBlur(np.random.default_rng(2).random((160, 240)).astype(np.float32), (0, 0), 2.0)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    for index in range(count):
        yield texture[20:140, 20 + index : 180 + index].copy()


def peak_memory(count: int) -> int:
    tracemalloc.start()
    estimate_alignment(shifted_textures(count), mode="translation")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_memory_does_not_grow_with_the_number_of_frames() -> None:
    few, many = peak_memory(4), peak_memory(24)
    assert many < few + 100_000  # 20 more frames of 77 kB each would add ~1.5 MB


# ---------------------------------------------------------------------------------------------
# Warping and cropping


def test_warp_frame_moves_content_and_applies_exposure() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 200, (40, 50, 3), dtype=np.uint8)
    shift = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0], [0.0, 0.0, 1.0]])
    warped = warp_frame(image, FrameAlignment(shift, gain=1.2, offset=0.02), (40, 50))
    assert warped.dtype == np.uint8 and warped.shape == image.shape
    expected = np.clip(np.rint(image.astype(np.float64) * 1.2 + 0.02 * 255), 0, 255)
    # Reference pixel (x, y) shows frame pixel (x - 3, y + 2).
    difference = warped[5:30, 10:45].astype(int) - expected[7:32, 7:42]
    assert np.abs(difference).max() <= 1


@pytest.mark.parametrize("gain", [1.0, 1.5])
@pytest.mark.parametrize(
    ("dtype", "layout"),
    [(np.uint8, (30, 40)), (np.uint16, (30, 40, 3)), (np.float32, (30, 40, 3)), (np.float32, (30, 40, 1))],
)
def test_warp_frame_keeps_dtype_and_layout(dtype: type, layout: tuple[int, ...], gain: float) -> None:
    rng = np.random.default_rng(4)
    scale = {np.uint8: 255, np.uint16: 65535, np.float32: 1.0}[dtype]
    image = (rng.random(layout) * scale).astype(dtype)
    alignment = FrameAlignment(np.array([[1.01, 0.0, 0.4], [0.0, 1.01, -0.3], [1e-5, 0.0, 1.0]]), gain=gain)
    warped = warp_frame(image, alignment, (30, 40))
    assert warped.dtype == image.dtype and warped.shape == image.shape
    assert not np.array_equal(warped, image)
    if gain > 1 and dtype != np.float32:
        assert warped.max() == scale  # gain 1.5 saturates: clipped, not wrapped around
    elif gain > 1:
        assert warped.max() > 1.2  # float is kept as it is


def test_identity_warp_returns_the_frame_and_other_output_sizes_resample() -> None:
    image = np.arange(600, dtype=np.uint8).reshape(20, 30)
    assert warp_frame(image, FrameAlignment(np.eye(3)), (20, 30)) is image
    window = warp_frame(image, FrameAlignment(translation(-5, -3)), (10, 12))  # a region of the frame
    assert window.shape == (10, 12) and np.array_equal(window, image[3:13, 5:17])


def translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def test_valid_box_shrinks_to_the_region_every_shifted_frame_covers() -> None:
    transforms = [translation(0, 0), translation(2.4, -1.3), translation(-3.6, 0.7)]
    stack = StackAlignment(0, [FrameAlignment(t) for t in transforms], (50, 60))
    # x in [2.4, 59 - 3.6] -> pixels 3..55; y in [0.7, 49 - 1.3] -> pixels 1..47.
    assert stack.valid_box() == (3, 1, 56, 48)
    assert StackAlignment(0, [FrameAlignment(np.eye(3))], (50, 60)).valid_box() == (0, 0, 60, 50)
    assert valid_box([translation(70, 0)], (50, 60)) == (0, 0, 0, 0)


def inside_every_frame(box: tuple[int, int, int, int], transforms: list[np.ndarray], shape: tuple[int, int]) -> bool:
    """True when all four corner pixels of ``box`` map inside every frame (and the reference)."""
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0, 1.0], [x1 - 1, y0, 1.0], [x1 - 1, y1 - 1, 1.0], [x0, y1 - 1, 1.0]])
    for transform in [np.eye(3), *transforms]:
        source = corners @ np.linalg.inv(transform).T
        source = source[:, :2] / source[:, 2:3]
        if (source < -1e-6).any() or (source[:, 0] > shape[1] - 1 + 1e-6).any() or (
            source[:, 1] > shape[0] - 1 + 1e-6
        ).any():
            return False
    return True


def test_valid_box_with_rotation_is_inside_and_cannot_grow() -> None:
    shape = (120, 160)
    transforms = [motion(angle_deg=2.0, scale=1.01, shape=shape), translation(1.5, 2.5)]
    box = valid_box(transforms, shape)
    assert inside_every_frame(box, transforms, shape)
    x0, y0, x1, y1 = box
    for grown in [(x0 - 1, y0, x1, y1), (x0, y0 - 1, x1, y1), (x0, y0, x1 + 1, y1), (x0, y0, x1, y1 + 1)]:
        assert not inside_every_frame(grown, transforms, shape)


def test_valid_box_of_a_rotated_frame_is_the_largest_box() -> None:
    shape = (60, 80)
    transforms = [motion(angle_deg=6.0, shape=shape)]  # about the centre: the best box is centred
    best_centred = max(
        (80 - 2 * left) * (60 - 2 * top)
        for left in range(40)
        for top in range(30)
        if inside_every_frame((left, top, 80 - left, 60 - top), transforms, shape)
    )
    x0, y0, x1, y1 = valid_box(transforms, shape)
    assert inside_every_frame((x0, y0, x1, y1), transforms, shape)
    assert (x1 - x0) * (y1 - y0) >= best_centred


def test_crop_to_box_cuts_a_view() -> None:
    image = np.arange(5 * 6 * 3).reshape(5, 6, 3)
    cropped = crop_to_box(image, (1, 2, 4, 5))
    assert cropped.shape == (3, 3, 3)
    np.testing.assert_array_equal(cropped, image[2:5, 1:4])
    with pytest.raises(ValueError):
        crop_to_box(image, (0, 0, 7, 5))


# ---------------------------------------------------------------------------------------------
# Recovery of failed frames through a similar-focus partner

SHUFFLED = (0, 1, 6, 2, 3, 4, 5)  # frame 2 is focused at the far end: its neighbours do not match it


def shuffled_bracket() -> list[np.ndarray]:
    """DRIFT frames with deep defocus, out of focus order: only frame 6 is focused near frame 2."""
    return bracket(DRIFT, focus_order=SHUFFLED, strength=5.0, blur=DEEP_BLUR)


def test_a_frame_out_of_focus_order_is_aligned_through_a_similar_focus_partner() -> None:
    frames = CountingFrames(shuffled_bracket())
    alignment = estimate_alignment(frames)
    assert alignment.failures() == []
    assert [frame.message for frame in alignment.frames] == [""] * 7
    assert alignment.notes() == [alignment.frames[2].note]
    assert alignment.frames[2].note.startswith("frame 2: aligned via frame 6 (neighbour step: no match")
    assert frames.reads == 7 + 2  # the failed frame and its one partner, read again
    # The recovered frame and the frames after it (which skipped it) chain correctly.
    assert max(point_errors(alignment, DRIFT)) < TOLERANCE_PX
    assert_gains(alignment)  # exposure is chained through the partner too


def test_a_one_shot_iterator_is_not_read_again_and_the_frame_stays_failed() -> None:
    alignment = estimate_alignment(iter(shuffled_bracket()))
    assert [frame.ok for frame in alignment.frames] == [True, True, False, True, True, True, True]
    assert alignment.frames[2].message.startswith("frame 2: no match") and alignment.notes() == []
    np.testing.assert_allclose(alignment.frames[2].transform, alignment.frames[1].transform)  # copied
    errors = point_errors(alignment, DRIFT)
    assert errors[2] > 1.0  # the copied transform is a poor guess: what the recovery is for
    assert max(errors[i] for i in (0, 1, 3, 4, 5, 6)) < TOLERANCE_PX


def test_focus_signature_ranks_frames_by_focus_not_by_position() -> None:
    frames = shuffled_bracket()
    signatures = [focus_signature(frame.astype(np.float32) / 255) for frame in frames]
    assert signatures[0].shape == (12, 16) and signatures[0].dtype == np.float32
    distances = [float(np.linalg.norm(signature - signatures[2])) for signature in signatures]
    assert int(np.argsort(distances)[1]) == 6  # focus step 5 is nearest to focus step 6
    gain_changed = focus_signature(frames[2].astype(np.float32) / 255 * 0.7)
    np.testing.assert_allclose(gain_changed, signatures[2], atol=1e-3)  # exposure does not matter


def test_partners_are_aligned_frames_not_chained_through_the_failed_one() -> None:
    identity = (np.eye(3), np.eye(2))
    links = [
        _Link(None, *identity),
        _Link(0, *identity),
        _Link(1, *identity, ok=False, message="frame 2: no match", tried=(1, 0)),
        _Link(2, *identity),  # matched the failed frame 2 (a jump in the chain)
        _Link(3, *identity),
        _Link(1, *identity),
    ]
    assert anchored_frames(links) == [True, True, False, False, False, True]
    signatures = [np.full((2, 2), value, np.float32) for value in (0.0, 0.1, 1.0, 0.9, 0.8, 0.5)]
    signatures[5] = None  # unusable
    # Most similar to frame 2: 3, 4 (chained through it), 1, 0 (already tried), 5 (unusable).
    assert partner_candidates(signatures, links, 2) == []
    links[2].tried = ()
    assert partner_candidates(signatures, links, 2) == [1, 0]


# ---------------------------------------------------------------------------------------------
# Snapping near-identity results


def test_near_identity_is_snapped_and_the_threshold_holds() -> None:
    inside = snap_to_identity(FrameAlignment(translation(0.8 * SNAP_SHIFT_PX, 0.0), 1.0015, -0.0009), SHAPE)
    np.testing.assert_array_equal(inside.transform, np.eye(3))
    assert (inside.gain, inside.offset) == (1.0, 0.0)
    scaled = motion(scale=1.0 + 1.2 * SNAP_SHIFT_PX / 200.0)  # corners move by ~1.2 x the threshold
    outside = snap_to_identity(FrameAlignment(scaled, 1.003, 0.0), SHAPE)
    np.testing.assert_array_equal(outside.transform, scaled)
    assert outside.gain == 1.003
    exposure_only = snap_to_identity(FrameAlignment(scaled, 1.001, 0.0005), SHAPE)
    assert (exposure_only.gain, exposure_only.offset) == (1.0, 0.0)


def test_an_aligned_focus_bracket_gets_exact_identity_transforms() -> None:
    still = [motion()] * 7
    alignment = estimate_alignment(bracket(still, gains=[1.0] * 7))
    assert alignment.failures() == []
    for frame in alignment.frames:
        np.testing.assert_array_equal(frame.transform, np.eye(3))


def test_an_aligned_stack_is_not_resampled() -> None:
    shots = [bracket([motion()], gains=[1.0], seed=seed)[0] for seed in range(4)]  # same focus, new noise
    alignment = estimate_alignment(shots)
    for shot, frame in zip(shots, alignment.frames):
        np.testing.assert_array_equal(frame.transform, np.eye(3))
        assert (frame.gain, frame.offset, frame.ok) == (1.0, 0.0, True)
        assert warp_frame(shot, frame, SHAPE) is shot


# ---------------------------------------------------------------------------------------------
# The streaming estimator


def same_alignment(left: StackAlignment, right: StackAlignment) -> bool:
    """True when two alignments are identical, to the last bit of every float."""
    return left.reference == right.reference and left.shape == right.shape and all(
        np.array_equal(a.transform, b.transform) and (a.gain, a.offset, a.ok, a.message, a.note)
        == (b.gain, b.offset, b.ok, b.message, b.note)
        for a, b in zip(left.frames, right.frames, strict=True)
    )


def add_from_threads(estimator: AlignmentEstimator, frames: list[np.ndarray], order: list[int], threads: int) -> None:
    """Add ``frames`` in ``order``, dealt round-robin to ``threads`` threads that run at the same time."""
    def add_share(share: list[int]) -> None:
        for index in share:
            estimator.add(index, frames[index])

    with ThreadPoolExecutor(threads) as adders:
        for done in [adders.submit(add_share, order[start::threads]) for start in range(threads)]:
            done.result()


def test_estimator_gives_the_same_floats_for_frames_added_in_any_order_from_two_threads() -> None:
    frames = shuffled_bracket()  # frame 2 fails its neighbour steps: fallback steps and recovery are exercised
    in_order = estimate_alignment(frames, workers=1)
    assert in_order.notes() and in_order.failures() == []
    order = list(np.random.default_rng(7).permutation(len(frames)))
    with ThreadPoolExecutor(2) as steps:
        estimator = AlignmentEstimator(len(frames), SHAPE, executor=steps)
        add_from_threads(estimator, frames, order, threads=2)
        shuffled = estimator.result(reread=frames.__getitem__)
    assert same_alignment(shuffled, in_order)
    without_executor = AlignmentEstimator(len(frames), SHAPE)
    add_from_threads(without_executor, frames, order[::-1], threads=2)
    assert same_alignment(without_executor.result(reread=frames.__getitem__), in_order)
    assert same_alignment(estimate_alignment(frames, workers=2), in_order)
    assert same_alignment(estimate_alignment(iter(frames)), estimate_alignment(iter(frames), workers=1))


def test_results_do_not_depend_on_threads_of_opencv_or_of_the_estimator() -> None:
    frames = [cv2.resize(frame, (960, 720), interpolation=cv2.INTER_CUBIC) for frame in bracket(BREATHING)]
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(1)
        single = estimate_alignment(frames, workers=1)
        cv2.setNumThreads(2)  # OpenCV splits big calls among its threads, and runs concurrent calls unsplit
        assert same_alignment(estimate_alignment(frames, workers=1), single)
        assert same_alignment(estimate_alignment(frames, workers=3), single)
    finally:
        cv2.setNumThreads(threads)


def test_estimator_recovers_a_failed_frame_only_through_reread() -> None:
    frames = CountingFrames(shuffled_bracket())
    estimator = AlignmentEstimator(len(frames), SHAPE)
    for index in range(len(frames)):
        estimator.add(index, frames[index])
    assert frames.reads == 7
    without = estimator.result()
    assert [frame.ok for frame in without.frames] == [True, True, False, True, True, True, True]
    assert without.frames[2].message.startswith("frame 2: no match")
    calls: list[tuple[int, int]] = []
    recovered = estimator.result(reread=frames.__getitem__, progress=lambda done, total: calls.append((done, total)))
    assert frames.reads == 7 + 2  # the failed frame and its one partner
    assert calls == [(done, 7) for done in range(1, 8)]
    assert recovered.failures() == [] and recovered.frames[2].note.startswith("frame 2: aligned via frame 6")
    assert max(point_errors(recovered, DRIFT)) < TOLERANCE_PX
    assert same_alignment(recovered, estimate_alignment(shuffled_bracket(), workers=1))


def test_estimator_refuses_bad_frames_and_missing_ones() -> None:
    frames = bracket(SHIFTS[:3])
    estimator = AlignmentEstimator(3, SHAPE)
    with pytest.raises(ValueError, match="size"):
        estimator.add(0, frames[0][:200])
    with pytest.raises(ValueError, match="out of range"):
        estimator.add(3, frames[0])
    with pytest.raises(ValueError, match="pixel type"):
        estimator.add(0, frames[0].astype(np.int32))
    estimator.add(2, frames[2])
    with pytest.raises(ValueError, match="twice"):
        estimator.add(2, frames[2])
    with pytest.raises(ValueError, match="never added"):
        estimator.result()
    estimator.add(1, np.full_like(frames[1], 128))  # usable layout, but no texture: a failed frame, no error
    estimator.add(0, frames[0])
    result = estimator.result()
    assert [frame.ok for frame in result.frames] == [True, False, True] and "no texture" in result.frames[1].message
    with pytest.raises(ValueError, match="reference"):
        AlignmentEstimator(3, SHAPE, reference=3)


class LazyTextures(Sequence):
    """``count`` textured frames made when indexed (like frames read from files), see :func:`shifted_textures`."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):  # type: ignore[override]
        if not 0 <= index < self.count:
            raise IndexError(index)
        return list(itertools.islice(shifted_textures(index + 1), index, None))[0]


def threaded_peak_memory(count: int) -> int:
    tracemalloc.start()
    estimate_alignment(LazyTextures(count), mode="translation", workers=2)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_memory_does_not_grow_with_the_number_of_frames_read_by_threads() -> None:
    # 20 more frames of ~0.2 MB of working images each would add ~4 MB; how many of the few frames the
    # window lets ahead of the chain are in flight at the peak depends on thread timing (a frame or two), so
    # the lowest peak of the long runs is compared with the highest of the short ones
    few = max(threaded_peak_memory(10) for _ in range(3))
    many = min(threaded_peak_memory(30) for _ in range(3))
    assert many < few + 500_000


def test_estimator_keeps_only_the_frames_the_chain_can_still_need() -> None:
    frames = bracket(SHIFTS)
    in_order = AlignmentEstimator(len(frames), SHAPE)
    held = []
    for index, frame in enumerate(frames):
        in_order.add(index, frame)
        held.append(in_order.held_frames)
    assert max(held) <= 3  # the two last aligned frames and the newest one
    backwards = AlignmentEstimator(len(frames), SHAPE)
    for index in range(len(frames) - 1, 0, -1):
        backwards.add(index, frames[index])
    assert backwards.held_frames == len(frames) - 1  # far out of order: all wait for frame 0
    backwards.add(0, frames[0])
    assert backwards.held_frames <= 2
    assert same_alignment(backwards.result(), in_order.result())


# ---------------------------------------------------------------------------------------------
# ECC and warping internals


@pytest.mark.parametrize("motion", [cv2.MOTION_TRANSLATION, cv2.MOTION_AFFINE])
def test_banded_ecc_follows_opencv_iteration_by_iteration(motion: int) -> None:
    frames = bracket(BREATHING[:2], gains=(1.0, 0.9))
    anchor, frame = (detail_image(frame.astype(np.float32) / 255) for frame in frames)
    margin = 12
    template = np.ascontiguousarray(frame[margin:-margin, margin:-margin])
    mask = np.zeros(anchor.shape, np.uint8)
    mask[margin:-margin, margin:-margin] = 255
    start = np.array([[1.0, 0.0, margin + 0.4], [0.0, 1.0, margin - 0.3]], np.float32)
    target = ecc_target(anchor, margin)
    for iterations in (1, 2, 5):
        criteria = (cv2.TERM_CRITERIA_COUNT, iterations, 0)
        rho, expected = cv2.findTransformECC(template, anchor, start.copy(), motion, criteria, mask, 1)
        result = find_warp(template, target, start, motion, max_iterations=iterations)
        assert result.iterations == iterations and result.correlation == pytest.approx(rho, abs=1e-6)
        np.testing.assert_allclose(result.warp, expected, atol=1e-4)  # float32 OpenCV vs float64 here
    strided = find_warp(template, target, start, motion, max_iterations=30, tolerance=1e-4, stride=2)
    full = find_warp(template, target, start, motion, max_iterations=30, tolerance=1e-4)
    assert corner_motion(strided.warp - full.warp, template.shape) < 0.02  # every other row and column: nearly there


@pytest.mark.parametrize("transform", [
    [[1.003, 0.002, -2.6], [-0.0015, 0.998, 1.3], [0.0, 0.0, 1.0]],
    [[1.0, 0.0, 0.5 + 1 / 64], [0.0, 1.0, -1 / 64], [0.0, 0.0, 1.0]],  # sums that fall on rounding ties
])
def test_affine_coordinates_are_those_of_the_general_formula(transform: list) -> None:
    transform = np.array(transform)
    inverse = np.linalg.inv(transform)
    ys, xs = np.mgrid[7:47, 3:83].astype(np.float64)
    x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    w = inverse[2, 0] * xs + inverse[2, 1] * ys + inverse[2, 2]
    fast_x, fast_y = source_coordinates(transform, (7, 3), (40, 80))
    np.testing.assert_array_equal(fast_x, np.round(x / w * 32) / 32)
    np.testing.assert_array_equal(fast_y, np.round(y / w * 32) / 32)


def plain_warp(image: np.ndarray, alignment: FrameAlignment, shape: tuple[int, int]) -> np.ndarray:
    """warp_frame written out the straightforward way: whole-frame float maps and float exposure, then rounding."""
    scale = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}.get(image.dtype, 1.0)
    pixels = image.astype(np.float32) * np.float32(alignment.gain) + np.float32(alignment.offset * scale)
    inverse = np.linalg.inv(alignment.transform)
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    w = inverse[2, 0] * xs + inverse[2, 1] * ys + inverse[2, 2]
    maps = [(np.round((row[0] * xs + row[1] * ys + row[2]) / w * 32) / 32).astype(np.float32) for row in inverse[:2]]
    warped = cv2.remap(pixels, *maps, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE).reshape(shape + image.shape[2:])
    return warped if image.dtype.kind == "f" else np.clip(np.rint(warped), 0, scale).astype(image.dtype)


@pytest.mark.parametrize("transform", [
    [[1.004, 0.03, -4.2], [-0.025, 0.998, 3.1], [0.0, 0.0, 1.0]],
    [[0.8, 0.0, 10.0], [0.0, 0.8, 5.0], [0.0, 0.0, 1.0]],  # bands read rows beyond the frame's edges
    [[1.001, 0.002, 0.3], [-0.001, 0.999, -0.2], [1e-5, -2e-5, 1.0]],
])
@pytest.mark.parametrize("dtype, channels", [(np.uint8, 3), (np.uint8, 1), (np.uint16, 3), (np.float32, 3)])
def test_banded_warp_with_exposure_equals_the_plain_formula(transform: list, dtype: type, channels: int) -> None:
    rng = np.random.default_rng(8)
    scale = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1.0)
    smooth = cv2.GaussianBlur(rng.random((150, 170, channels)).astype(np.float32), (0, 0), 1.5)
    image = (smooth.reshape(150, 170, channels) * 1.6 - 0.3).clip(0, 1) * scale
    image = image.astype(dtype) if dtype != np.float32 else image.astype(np.float32)
    alignment = FrameAlignment(np.array(transform), gain=1.07, offset=-0.02)
    np.testing.assert_array_equal(warp_frame(image, alignment, (150, 170)), plain_warp(image, alignment, (150, 170)))


@pytest.mark.parametrize("shape", [(8, 2000), (2000, 8), (40, 1500)])
def test_frames_too_narrow_to_align_are_refused_in_words(shape) -> None:
    frames = [np.full(shape, 0.5, np.float32)] * 2
    with pytest.raises(ValueError, match="too narrow to align"):
        estimate_alignment(frames)


def test_an_elongated_frame_that_can_be_aligned_is() -> None:
    rng = np.random.default_rng(0)
    scene = cv2.GaussianBlur(rng.random((64, 2000)).astype(np.float32), (0, 0), 1.5)
    moved = np.roll(scene, 3, axis=1)
    result = estimate_alignment([scene, moved], mode="translation", reference=0)
    assert abs(result.frames[1].transform[0, 2] + 3) < 0.2
