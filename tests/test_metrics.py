"""Fusion metrics: reference values (../shared, optional) and synthetic properties."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from focusfuse.evaluation import metrics as m

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE_VALUES = SHARED / "reference" / "metrics" / "values.json"
TOLERANCE = 1e-4


def _reference_params() -> list:
    if not REFERENCE_VALUES.exists():
        reason = f"needs {REFERENCE_VALUES} (the project's shared data folder is not present)"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-shared-data")]
    entries = json.loads(REFERENCE_VALUES.read_text())
    return [pytest.param(entry, id=Path(entry["fused"]).stem) for entry in entries]


def _read_gray(relative: str) -> np.ndarray:
    from focusfuse.io.images import read_image

    return m.to_gray_matlab(read_image(SHARED / relative))


@pytest.mark.parametrize("entry", _reference_params())
def test_reference_values(entry: dict) -> None:
    a, b, fused = (_read_gray(entry[key]) for key in ("a", "b", "fused"))
    got = m.compute_all([a, b], fused)
    wrong = {k: (got[k], entry[k]) for k in m.METRIC_NAMES if not abs(got[k] - entry[k]) <= TOLERANCE}
    assert not wrong, f"{entry['fused']}: (got, reference) {wrong}"


# --------------------------------------------------------------------------------------------------
# Synthetic images
# --------------------------------------------------------------------------------------------------


def scene(shape: tuple[int, int] = (48, 56), seed: int = 0) -> np.ndarray:
    """Integer-valued texture on 0..255 with an exactly flat band (exercises the constant-window cases)."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.random(shape) * 255, 1.5)
    texture = np.round((texture - texture.min()) / np.ptp(texture) * 255)
    texture[:, : shape[1] // 4] = 90.0
    return texture


def defocus(img: np.ndarray, sigma: float, region: slice) -> np.ndarray:
    """Blur the columns in ``region`` (a synthetic out-of-focus part), rounded to integer levels."""
    out = img.copy()
    out[:, region] = np.round(ndimage.gaussian_filter(img, sigma)[:, region])
    return out


@pytest.fixture(scope="module")
def triple() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two complementary 'multi-focus' sources and an imperfect fused image."""
    sharp = scene()
    a = defocus(sharp, 2.0, slice(28, None))
    b = defocus(sharp, 2.0, slice(0, 28))
    fused = np.round(0.7 * sharp + 0.3 * (a + b) / 2)
    return a, b, fused


TWO_SOURCE = {
    "Qg": m.qg,
    "Qy": m.qy,
    "Qcb": m.qcb,
    "Qncie": m.qncie,
    "FMI_edge": lambda a, b, f: m.fmi(a, b, f, feature="edge"),
    "FMI_dct": lambda a, b, f: m.fmi(a, b, f, feature="dct"),
    "FMI_none": lambda a, b, f: m.fmi(a, b, f, feature="none"),
}
MULTI_SOURCE = {
    "Qg": m.qg_multi,
    "Qy": m.qy_multi,
    "Qcb": m.qcb_multi,
    "Qncie": m.qncie_multi,
    "FMI_edge": lambda s, f: m.fmi_multi(s, f, feature="edge"),
    "FMI_dct": lambda s, f: m.fmi_multi(s, f, feature="dct"),
    "FMI_none": lambda s, f: m.fmi_multi(s, f, feature="none"),
}
# Q_g's +1e-5 guard on the fused gradient is applied after the first source only (as the reference
# does), so swapping sources may move it by about 1e-5 * sigmoid slope at flat fused pixels.
SYMMETRY_TOLERANCE = {"Qg": 1e-6}


# --------------------------------------------------------------------------------------------------
# Colour conversion
# --------------------------------------------------------------------------------------------------


def test_round_half_away_from_zero() -> None:
    values = [0.5, 1.5, 2.5, -0.5, -2.5, 0.49999999999999994, 254.5, 3.2]
    assert m.round_half_away(values).tolist() == [1, 2, 3, -1, -3, 0, 255, 3]


def test_to_gray_uint8_colour_uses_rgb2gray_weights_and_rounds() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 200, 30]]], dtype=np.uint8)
    gray = m.to_gray_matlab(rgb)
    wr, wg, wb = m.RGB2GRAY_WEIGHTS
    exact = [255 * wr, 255 * wg, 255 * wb, 10 * wr + 200 * wg + 30 * wb]
    assert gray.dtype == np.float64 and gray.shape == (1, 4)
    assert gray[0].tolist() == [float(math.floor(x + 0.5)) for x in exact] == [76.0, 150.0, 29.0, 124.0]


def test_to_gray_passes_gray_through_and_drops_alpha() -> None:
    gray8 = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert m.to_gray_matlab(gray8).tolist() == gray8.astype(float).tolist()
    rgba = np.dstack([np.full((2, 2, 3), 100, np.uint8), np.zeros((2, 2, 1), np.uint8)])
    assert np.all(m.to_gray_matlab(rgba) == 100)
    floats = np.array([[0.25, 254.75]])
    assert m.to_gray_matlab(floats).tolist() == [[0.25, 254.75]]


def test_to_gray_uint16_is_scaled_onto_0_255() -> None:
    levels = np.array([[0, 1, 128, 255]], dtype=np.uint16)
    assert m.to_gray_matlab(levels * np.uint16(257)).tolist() == levels.astype(float).tolist()
    grey_rgb = np.repeat((levels * np.uint16(257))[:, :, None], 3, axis=2)
    assert m.to_gray_matlab(grey_rgb).tolist() == levels.astype(float).tolist()


def test_to_gray_rejects_unsupported_input() -> None:
    with pytest.raises(TypeError):
        m.to_gray_matlab(np.zeros((4, 4), dtype=np.int32))
    with pytest.raises(ValueError):
        m.to_gray_matlab(np.zeros((4, 4, 5), dtype=np.uint8))


# --------------------------------------------------------------------------------------------------
# Properties of the metrics
# --------------------------------------------------------------------------------------------------


ORDER_FREE = [name for name in TWO_SOURCE if name != "FMI_none"]  # see test_fmi_none_keeps_fmi_m_order_quirk


@pytest.mark.parametrize("name", ORDER_FREE)
def test_symmetric_in_the_two_sources(name: str, triple) -> None:
    a, b, fused = triple
    forward, backward = TWO_SOURCE[name](a, b, fused), TWO_SOURCE[name](b, a, fused)
    assert math.isfinite(forward)
    assert forward == pytest.approx(backward, abs=SYMMETRY_TOLERANCE.get(name, 1e-12))


@pytest.mark.parametrize("name", TWO_SOURCE)
def test_multi_source_with_two_sources_equals_two_source_call(name: str, triple) -> None:
    a, b, fused = triple
    assert MULTI_SOURCE[name]([a, b], fused) == TWO_SOURCE[name](a, b, fused)


@pytest.mark.parametrize("name", ORDER_FREE)
def test_multi_source_does_not_depend_on_source_order(name: str, triple) -> None:
    a, b, fused = triple
    c = defocus(scene(), 1.0, slice(10, 40))
    first, second = MULTI_SOURCE[name]([a, b, c], fused), MULTI_SOURCE[name]([c, a, b], fused)
    assert math.isfinite(first)
    assert first == pytest.approx(second, abs=SYMMETRY_TOLERANCE.get(name, 1e-12))


def test_perfect_fusion_scores() -> None:
    img = scene()
    sigmoid_at_ideal = 1 / (1 + math.exp(-5))  # Gamma = 1 in the reference: Q_g and Q_alpha peak here
    assert m.qg(img, img, img) == pytest.approx(sigmoid_at_ideal**2, abs=1e-12)
    assert m.qg_multi([img, img, img], img) == pytest.approx(sigmoid_at_ideal**2, abs=1e-12)
    for name in ("Qy", "Qcb", "FMI_edge", "FMI_dct", "FMI_none"):
        assert TWO_SOURCE[name](img, img, img) == pytest.approx(1.0, abs=1e-12), name
        assert MULTI_SOURCE[name]([img, img, img], img) == pytest.approx(1.0, abs=1e-12), name


def test_qncie_of_identical_images_follows_the_entropy_of_the_image() -> None:
    img = scene()
    counts = np.bincount(m.normalize_to_levels(img).astype(int).ravel())
    prob = counts[counts > 0] / img.size
    ncc = float(-(prob * np.log2(prob)).sum()) / 8  # NCC(X, X) = H(X) / log2(256)
    eigenvalues = np.array([1 + 2 * ncc, 1 - ncc, 1 - ncc])  # of [[1, n, n], [n, 1, n], [n, n, 1]]
    expected = 1 + float(np.sum(eigenvalues / 3 * np.log2(eigenvalues / 3))) / 8
    assert m.qncie(img, img, img) == pytest.approx(expected, abs=1e-12)
    all_levels = np.arange(256, dtype=float).reshape(16, 16)  # H = 8 bits: the NCC matrix is all ones
    assert m.qncie(all_levels, all_levels, all_levels) == pytest.approx(1.0, abs=1e-12)


def test_fmi_of_fused_equal_to_a_source_counts_that_source_as_perfect(triple) -> None:
    a, b, _ = triple
    for feature in ("edge", "dct"):
        other_half = m.fmi(b, b, a, feature=feature)  # both halves measure FMI(b, a)
        assert m.fmi(a, b, a, feature=feature) == pytest.approx((1 + other_half) / 2, abs=1e-12)


def test_fmi_none_keeps_fmi_m_order_quirk() -> None:
    # fmi.m compares the second source with the fused patch as the first source left it (normalised).
    # A second source equal to a 'flat but one pixel' fused patch then gets 0 instead of 1; with edge
    # or DCT features this cannot change the result, with raw pixels ('none') it can.
    fused = np.full((3, 3), 90.0)
    fused[2, 0] = 91.0
    flat = np.full((3, 3), 90.0)
    assert m.fmi(flat, fused, fused, feature="none") == 0.0
    assert m.fmi(fused, flat, fused, feature="none") == 0.5
    for feature in ("edge", "dct"):
        assert m.fmi(flat, fused, fused, feature=feature) == pytest.approx(0.5, abs=1e-9)
        assert m.fmi(fused, flat, fused, feature=feature) == pytest.approx(0.5, abs=1e-9)


def test_better_fusion_scores_higher(triple) -> None:
    a, b, _ = triple
    sharp = scene()
    blurred_everywhere = np.round(ndimage.gaussian_filter(sharp, 2.0))
    for name, metric in TWO_SOURCE.items():
        if name == "FMI_none":
            continue
        assert metric(a, b, sharp) > metric(a, b, blurred_everywhere), name


def test_qy_handles_exactly_constant_windows() -> None:
    flat = np.full((40, 40), 200.0)
    textured = scene((40, 40))
    value = m.qy(flat, textured, textured)
    assert math.isfinite(value) and 0 <= value <= 1
    # where both sources are flat the window's SSIM is its luminance term, with lambda = 0.5
    assert m.qy(flat, flat, flat) == 1.0
    darker = np.full((40, 40), 100.0)
    luminance = (2 * 200 * 100) / (200**2 + 100**2)
    assert m.qy(flat, flat, darker) == pytest.approx(luminance, abs=1e-12)


def test_matlab_sobel_edges_thins_a_step_to_one_column() -> None:
    img = np.zeros((16, 16))
    img[:, 8:] = 255.0
    edges = m.matlab_sobel_edges(img)
    assert edges[:, 8].all() and edges.sum() == 16  # left <= b > right keeps the right-hand column


def test_psnr() -> None:
    img = scene()
    assert m.psnr(img, img) == math.inf
    assert m.psnr(img + 1, img) == pytest.approx(20 * math.log10(255), abs=1e-12)
    assert m.psnr(img + 2, img, peak=510) == pytest.approx(20 * math.log10(255), abs=1e-12)


def test_ssim_matches_wang_definition() -> None:
    from skimage.metrics import structural_similarity

    img = scene()
    noisy = np.clip(img + np.random.default_rng(1).normal(0, 10, img.shape), 0, 255)
    assert m.ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    expected = structural_similarity(
        noisy, img, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )  # same Gaussian window and constants, averaged over the region away from the border
    assert m.ssim(noisy, img) == pytest.approx(expected, abs=1e-9)
    assert m.ssim(noisy, img) < 0.95


def test_constant_images_give_finite_values() -> None:
    flat = np.full((30, 30), 7.0)
    textured = scene((30, 30))
    for sources, fused in (([flat, flat], flat), ([np.zeros_like(flat)] * 2, np.zeros_like(flat))):
        values = m.compute_all(sources, fused)
        assert values["Qy"] == values["Qcb"] == values["FMI_edge"] == values["FMI_dct"] == 1.0, values
    assert all(np.isfinite(list(m.compute_all([textured, textured[::-1]], np.zeros_like(flat)).values())))


def test_compute_all_keys_and_stack_input(triple) -> None:
    a, b, fused = triple
    result = m.compute_all([a, b], fused)
    assert list(result) == list(m.METRIC_NAMES)
    with_gt = m.compute_all(np.stack([a, b]), fused, gt=scene())
    assert list(with_gt) == [*m.METRIC_NAMES, "PSNR", "SSIM"]
    assert all(with_gt[k] == result[k] for k in m.METRIC_NAMES)


def test_invalid_input_is_rejected(triple) -> None:
    a, b, fused = triple
    with pytest.raises(ValueError, match="at least 2"):
        m.qg_multi([a], fused)
    with pytest.raises(ValueError, match="shape"):
        m.qcb(a, b[:-1], fused)
    with pytest.raises(ValueError, match="feature"):
        m.fmi(a, b, fused, feature="gradient")
    with pytest.raises(ValueError, match="2-D"):
        m.qncie(np.dstack([a, a, a]), b, fused)
