import gc
import tracemalloc
import warnings

import numpy as np
import pytest
import torch

from focusfuse import fuse_stack
from focusfuse.errors import UsageError
from focusfuse.io.images import write_image
from focusfuse.evaluation.synthetic import make_stack

from conftest import textured


def _count_passes(monkeypatch):
    """Count frames through the feature extractor and pairs through the decision path of the network."""
    from focusfuse.methods.gacn.network import GacnNetwork

    counts = {"feature": 0, "decision": 0}
    features, decision = GacnNetwork.features, GacnNetwork.decision_logit

    def counted_features(self, gray, channel_weights=None):
        counts["feature"] += gray.shape[0]
        return features(self, gray, channel_weights)

    def counted_decision(self, sf_a, sf_b):
        counts["decision"] += sf_a.shape[0]
        return decision(self, sf_a, sf_b)

    monkeypatch.setattr(GacnNetwork, "features", counted_features)
    monkeypatch.setattr(GacnNetwork, "decision_logit", counted_decision)
    return counts


def _frames(n, h=24, w=28, channels=3):
    return [textured(h, w, seed=i, channels=channels) for i in range(n)]


@pytest.mark.parametrize("strategy,features,decisions", [
    ("calibrated", lambda n: n, lambda n: n - 1),
    ("calibration", lambda n: n, lambda n: n - 1),
    ("serial", lambda n: 2 * (n - 1), lambda n: n - 1),
])
@pytest.mark.parametrize("n", [2, 5])
def test_pass_counts(model, strategy, features, decisions, n, monkeypatch):
    counts = _count_passes(monkeypatch)
    fuse_stack(_frames(n), strategy=strategy, weights=model, device="cpu", align="none")
    assert counts == {"feature": features(n), "decision": decisions(n)}


@pytest.mark.parametrize("strategy", ["calibrated", "calibration", "serial"])
def test_two_frame_stack_fuses_like_a_pair(model, strategy):
    from focusfuse import fuse_pair

    a, b = _frames(2)
    pair = fuse_pair(a, b, weights=model, device="cpu")
    stack = fuse_stack([a, b], strategy=strategy, weights=model, device="cpu", align="none")
    expected_index = (pair.decision_map < 0.5).astype(np.uint16)
    if strategy == "calibration":  # hard choice of Eq. 18: DV_2 = 1 - p_2 > DV_1 = p_2
        expected_index = (1 - pair.decision_map > pair.decision_map).astype(np.uint16)
        assert np.allclose(stack.fused, np.where(expected_index[..., None] == 1, b, a))
    else:
        assert np.allclose(stack.fused, pair.fused, atol=1e-6)
    assert np.array_equal(stack.index_map, expected_index)


def test_result_types_and_names(model, tmp_path):
    for i, frame in enumerate(_frames(3)):
        write_image(tmp_path / f"img{i + 1}.png", np.round(frame * 65535).astype(np.uint16))
    result = fuse_stack(tmp_path, weights=model, device="cpu", align="none")
    assert result.fused.dtype == np.uint16 and result.fused.shape == (24, 28, 3)
    assert result.index_map.dtype == np.uint16 and result.index_map.max() <= 2
    assert result.frames == ["img1.png", "img2.png", "img3.png"]
    assert result.strategy == "calibrated"


def test_progress_is_reported_per_frame(model):
    seen = []
    fuse_stack(_frames(4), weights=model, device="cpu", align="none", progress=lambda d, t, name: seen.append((d, t)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_one_frame_and_unknown_strategy_are_refused(model):
    with pytest.raises(UsageError, match="at least 2 frames"):
        fuse_stack(_frames(1), weights=model, device="cpu", align="none")
    with pytest.raises(UsageError, match="unknown strategy"):
        fuse_stack(_frames(2), strategy="magic", weights=model, device="cpu", align="none")


def _live_tensor_bytes() -> int:
    """Bytes of CPU tensor storage that is alive now (parameters excluded)."""
    seen, total = set(), 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # isinstance on some torch module proxies warns
        tensors = [o for o in gc.get_objects() if isinstance(o, torch.Tensor) and not isinstance(o, torch.nn.Parameter)]
    for obj in tensors:
        storage = obj.untyped_storage()
        if storage.data_ptr() not in seen and obj.device.type == "cpu":
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def _peak_traced_memory(model, paths):
    """Peak Python/numpy allocation (tracemalloc) while fusing ``paths``."""
    tracemalloc.start()
    fuse_stack(paths, weights=model, device="cpu", align="none")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def _peak_tensor_memory(model, paths):
    """Largest live CPU tensor storage seen after each frame."""
    peaks = []
    fuse_stack(paths, weights=model, device="cpu", align="none", progress=lambda d, t, name: peaks.append(_live_tensor_bytes()))
    return max(peaks)


def test_streaming_memory_does_not_grow_with_the_number_of_frames(model, tmp_path):
    for i, frame in enumerate(_frames(30, 96, 96)):
        write_image(tmp_path / f"f{i:02d}.png", np.round(frame * 255).astype(np.uint8))
    paths = sorted(tmp_path.glob("*.png"))
    _peak_traced_memory(model, paths[:2])  # warm-up: one-time allocations of imports and lazy init
    gc.collect()
    # 8 frames fill the read-ahead (a few frames prepared ahead by the worker threads): from there on, nothing grows
    assert _peak_traced_memory(model, paths) <= 1.5 * _peak_traced_memory(model, paths[:8])
    assert _peak_tensor_memory(model, paths) <= 1.5 * _peak_tensor_memory(model, paths[:8])


@pytest.fixture(scope="module")
def synthetic_stack():
    from focusfuse.jobs.demo import motorcycle_scene

    image, disparity = motorcycle_scene(0.3)
    return make_stack(image, disparity, 5, max_blur=3.0)


def _psnr(x, truth):
    return 10 * np.log10(1.0 / np.mean((x.astype(np.float64) - truth) ** 2))


def test_calibrated_beats_eq18_on_a_stack_with_known_truth(official_model, synthetic_stack):
    frames = [np.round(f * 255).astype(np.uint8) for f in synthetic_stack.frames]
    truth = synthetic_stack.truth
    scores = {}
    for strategy in ("calibrated", "calibration", "serial"):
        result = fuse_stack(frames, strategy=strategy, weights=official_model, device="cpu", align="none")
        scores[strategy] = _psnr(result.fused / 255.0, truth)
    best_frame = max(_psnr(f, truth) for f in synthetic_stack.frames)
    assert scores["calibrated"] > best_frame + 3
    assert scores["calibrated"] > scores["calibration"] + 1
    assert scores["calibrated"] > scores["serial"] - 0.5
