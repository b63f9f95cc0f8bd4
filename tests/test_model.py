import math

import pytest
import torch

from focusfuse.methods.gacn.model import GACN, activity, initial_decision_map
from focusfuse.methods.gacn.weights import focusfuse_to_official, official_keys, official_to_focusfuse

from conftest import random_model


def test_feature_and_decision_shapes(model):
    gray = torch.rand(2, 1, 33, 47)
    with torch.no_grad():
        feats = model.features(gray)
        sf = model.focus_measure(gray)
        logit = model.decision_logit(sf[:1], sf[1:])
        p0 = model(gray[:1], gray[1:])
    assert feats.shape == (2, 64, 33, 47)
    assert sf.shape == (2, 64, 33, 47) and torch.all(sf >= 0)
    assert logit.shape == (1, 1, 33, 47)
    assert p0.shape == (1, 1, 33, 47) and torch.all((p0 >= 0) & (p0 <= 1))


def test_parameter_count_matches_the_official_checkpoint():
    # about 70k parameters; 68,820 in the authors' state dict (without BatchNorm buffers)
    assert sum(p.numel() for p in GACN().parameters()) == 68820


def test_features_are_densely_connected():
    model = GACN()
    in_channels = [block.conv.in_channels for block in model.features.blocks]
    assert in_channels == [1, 16, 32, 48]
    assert [b.conv.out_channels for b in model.decision.blocks] == [48, 32, 16, 1]


def test_activity_is_one_where_a_is_sharper():
    a = torch.tensor([1.0, 0.0, 0.5])
    b = torch.tensor([0.0, 1.0, 0.5])
    assert torch.allclose(activity(a, b), torch.tensor([1.0, 0.0, 0.5]))
    assert float(initial_decision_map(torch.tensor(0.01))) == pytest.approx(1.0 / (1.0 + math.exp(-10.0)))


def test_official_layout_maps_onto_every_parameter_and_back():
    ours = set(GACN().state_dict())
    mapped = official_to_focusfuse({k: torch.zeros(1) for k in official_keys()})
    assert set(mapped) == ours
    state = random_model().state_dict()
    back = official_to_focusfuse(focusfuse_to_official(state))
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_siamese_features_are_per_frame(model):
    """A frame's features do not depend on what it is batched with (cacheable)."""
    a, b = torch.rand(1, 1, 24, 24), torch.rand(1, 1, 24, 24)
    with torch.no_grad():
        together = model.features(torch.cat([a, b]))
        alone = model.features(a)
    assert torch.allclose(together[:1], alone, atol=1e-6)


def test_official_checkpoint_loads(official_model):
    assert official_model.metadata["source"].startswith("official")
    bn = official_model.features.blocks[0].bn
    assert not torch.all(bn.running_var == 1)  # real statistics came through


@pytest.mark.parametrize("h,w", [(1, 1), (5, 3)])
def test_tiny_images_run(model, h, w):
    with torch.no_grad():
        p0 = model(torch.rand(1, 1, h, w), torch.rand(1, 1, h, w))
    assert p0.shape == (1, 1, h, w)


def test_decision_is_a_threshold_on_the_last_conv_output():
    # y > 0 exactly where the last conv's output z exceeds -shift / scale of its BatchNorm
    # (conv -> ReLU -> BatchNorm, then a positive gate); benchmarks/order_bias.py relies on it
    torch.manual_seed(0)
    model = GACN().eval()
    act = torch.rand(2, 64, 24, 24)
    with torch.no_grad():
        z = model.decision.last_conv_output(act.clone())
        threshold = float(z.quantile(0.6).clamp(min=1e-3))  # z does not depend on the last BatchNorm
        bn = model.decision.blocks[-1].bn
        bn.weight.fill_(2.0), bn.running_mean.fill_(0.1), bn.running_var.fill_(1.0)
        bn.bias.fill_(2.0 * (0.1 - threshold) / math.sqrt(1.0 + bn.eps))  # shift / scale = -threshold
        y = model.decision(act.clone())
    clear = (z - threshold).abs() > 1e-6  # away from float round-off at the threshold
    assert clear.float().mean() > 0.9
    assert 0 < (z > threshold).float().mean() < 1  # both decisions occur, so the test can fail
    assert torch.equal((y > 0)[clear], (z > threshold)[clear])
