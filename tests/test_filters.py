import numpy as np
import pytest
import torch
import torch.nn.functional as F

from focusfuse.methods.gacn.decision import blend, boundary_weight, reduce_resolution, refine_decision_map, restore_resolution
from focusfuse.ops.filters import (box_mean, box_sum, gaussian_blur, gaussian_kernel1d, gradient_energy, guided_filter,
                               separable_filter, spatial_frequency)


def test_box_sum_matches_zero_padded_convolution():
    x = torch.rand(1, 3, 17, 23, dtype=torch.float64)
    ones = torch.ones(3, 1, 11, 11, dtype=torch.float64)
    expected = F.conv2d(x, ones, padding=5, groups=3)
    assert torch.allclose(box_sum(x, 5), expected, atol=1e-10)


def test_box_mean_is_normalised_by_pixels_inside_the_image():
    x = torch.ones(1, 1, 9, 9, dtype=torch.float64)
    assert torch.allclose(box_mean(x, 3), x)  # a constant stays constant, also at the borders
    x = torch.arange(25, dtype=torch.float64).view(1, 1, 5, 5)
    corner = x[0, 0, :2, :2].mean()
    assert torch.isclose(box_mean(x, 1)[0, 0, 0, 0], corner)


def test_gradient_energy_uses_left_and_upper_neighbours_with_zero_padding():
    x = torch.tensor([[1.0, 3.0], [2.0, 7.0]]).view(1, 1, 2, 2)
    g = gradient_energy(x)[0, 0]
    # (left - x)^2 + (up - x)^2, zeros outside
    assert g[0, 0] == 1 + 1
    assert g[0, 1] == (1 - 3) ** 2 + 9
    assert g[1, 0] == 4 + (1 - 2) ** 2
    assert g[1, 1] == (2 - 7) ** 2 + (3 - 7) ** 2


def test_spatial_frequency_is_window_sum_of_gradient_energy():
    x = torch.rand(2, 4, 20, 20)
    sf = spatial_frequency(x, 5)
    direct = F.conv2d(gradient_energy(x).view(8, 1, 20, 20), torch.ones(1, 1, 11, 11), padding=5).view(2, 4, 20, 20)
    assert torch.allclose(sf, direct, rtol=1e-5, atol=1e-4)


def test_gaussian_kernel_and_blur_keep_constants_inside():
    k = gaussian_kernel1d(9, 8.0, dtype=torch.float64)
    assert torch.isclose(k.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(k, k.flip(0))
    x = torch.ones(1, 1, 30, 30, dtype=torch.float64)
    y = gaussian_blur(x, 9, 8.0)
    assert torch.allclose(y[..., 4:-4, 4:-4], torch.ones(1, 1, 22, 22, dtype=torch.float64))
    assert y[0, 0, 0, 0] < 0.5  # zero padding darkens the corner


def test_guided_filter_preserves_constant_input_and_smooths_noise():
    guide = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    const = torch.full_like(guide, 0.3)
    assert torch.allclose(guided_filter(guide, const, 3, 0.1), const, atol=1e-12)
    noisy = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    assert guided_filter(torch.zeros_like(noisy), noisy, 3, 0.1).std() < noisy.std()


def test_boundary_weight_is_one_on_the_boundary_and_zero_inside_regions():
    p0 = torch.zeros(1, 1, 40, 40)
    p0[..., :, :20] = 1.0
    w = boundary_weight(p0)
    assert torch.allclose(w[0, 0, 20, 18:22], torch.ones(4), atol=1e-6)
    assert w[0, 0, 20, 35] == 0.0  # blurred value exactly 0 -> weight 0
    assert torch.all((w >= 0) & (w <= 1))


def test_refined_map_equals_initial_map_away_from_the_boundary():
    p0 = torch.zeros(1, 1, 40, 40)
    p0[..., :, :20] = 1.0
    a, b = torch.rand(1, 1, 40, 40), torch.rand(1, 1, 40, 40)
    p = refine_decision_map(p0, a, b)
    assert torch.equal(p[..., :, 30:], p0[..., :, 30:])
    assert not torch.equal(p[..., :, 17:23], p0[..., :, 17:23])


def test_blend_is_eq4():
    a, b = torch.full((3, 4, 4), 0.8), torch.full((3, 4, 4), 0.2)
    p = torch.full((1, 4, 4), 0.25)
    assert torch.allclose(blend(p, a, b), torch.full((3, 4, 4), 0.35))
    assert np.isclose(float(blend(torch.tensor(1.0), a, b)[0, 0, 0]), 0.8)


def test_separable_filter_passes_gradients_and_refuses_even_taps():
    x = torch.rand(1, 1, 6, 5, dtype=torch.float64, requires_grad=True)
    taps = gaussian_kernel1d(5, 1.5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: separable_filter(t, taps), (x,))
    for bad in (torch.ones(4), torch.ones(3, 3)):
        with pytest.raises(ValueError):
            separable_filter(x, bad)


def test_separable_filter_keeps_channels_last():
    x = torch.rand(1, 2, 9, 11).contiguous(memory_format=torch.channels_last)
    y = box_sum(x, 2)
    expected = F.conv2d(x.contiguous(), torch.ones(2, 1, 5, 5), padding=2, groups=2)
    assert torch.allclose(y, expected, atol=1e-5) and y.is_contiguous(memory_format=torch.channels_last)


def test_reduce_resolution_averages_blocks_and_partial_edge_blocks():
    x = torch.arange(5 * 7, dtype=torch.float32).reshape(1, 1, 5, 7)
    r = reduce_resolution(x, 2)
    assert r.shape == (1, 1, 3, 4)
    assert r[0, 0, 0, 0] == x[0, 0, :2, :2].mean()
    assert r[0, 0, 2, 3] == x[0, 0, 4, 6]  # a 1x1 partial block
    assert r[0, 0, 1, 3] == x[0, 0, 2:4, 6].mean()  # a 2x1 partial block
    assert reduce_resolution(x, 1) is x


def test_restore_resolution_inverts_reduction_of_smooth_maps():
    y, x = torch.meshgrid(torch.arange(40.0), torch.arange(50.0), indexing="ij")
    ramp = (0.01 * x + 0.02 * y)[None, None]
    for factor in (2, 3, 4):
        back = restore_resolution(reduce_resolution(ramp, factor), factor, (40, 50))
        assert back.shape == ramp.shape
        inner = (slice(factor, -2 * factor), slice(factor, -2 * factor))  # away from edge clamping
        assert torch.allclose(back[0, 0][inner], ramp[0, 0][inner], atol=1e-5)
