"""GACN network: a siamese feature extractor (per frame) and a decision path (per pair).

Architecture (Ma et al., GACN): four densely connected 3x3 conv blocks (conv -> ReLU -> BatchNorm),
1->16, 16->16, 32->16, 48->16, each followed by a channel squeeze-excitation (CSE, reduction 8);
the four outputs concatenate to 64 feature channels. Two frames are compared through the spatial
frequency (SF) of their features; the activity sigmoid(1000 * (SF_A - SF_B)) goes through a spatial
SE and conv blocks 64->48->32->16->1, each followed by a spatial SE (SSE). The output is the
decision logit y; the initial decision map is sigmoid(1000 * y).

The split matters for stacks: ``features`` runs once per frame and can be cached, ``decision_logit``
runs once per compared pair and only needs the two frames' SF maps.

This module is the paper's math in plain torch operations, for training and as the reference;
fusion runs the same math through :class:`focusfuse.methods.gacn.network.GacnNetwork`, which
calls a backend's kernels (see :mod:`focusfuse.backends`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...ops.filters import spatial_frequency
from .decision import refine_decision_map

ARCHITECTURE = "gacn-v1"
ACTIVITY_STEEPNESS = 1000.0  # sigmoid(1000 * (SF_A - SF_B))
DECISION_STEEPNESS = 1000.0  # initial DM = sigmoid(1000 * y)
SF_RADIUS = 5  # 11x11 window


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """The value of ``hard`` with the gradient of ``soft``."""
    return soft + (hard - soft).detach()


class _ReluLeakyGrad(torch.autograd.Function):
    """ReLU forward; backward lets a fraction of the gradient through where the input is negative."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, leak: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.leak = leak
        return torch.relu(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.where(x > 0, 1.0, ctx.leak).to(grad.dtype), None


class ConvBlock(nn.Module):
    """3x3 conv -> ReLU -> BatchNorm (the paper's order)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu_grad_leak = 0.0  # training aid, see GACN.use_surrogate_gradients

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = _ReluLeakyGrad.apply(x, self.relu_grad_leak) if self.relu_grad_leak else torch.relu(x)
        return self.bn(x)

    def bn_scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The BatchNorm in eval mode as per-channel ``scale * x + shift``."""
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return scale, bn.bias - bn.running_mean * scale


class ChannelSE(nn.Module):
    """Channel squeeze-excitation: x * sigmoid(W2 relu(W1 mean_hw(x)))."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.squeeze = nn.Linear(channels, channels // reduction, bias=False)
        self.excite = nn.Linear(channels // reduction, channels, bias=False)

    def channel_weights(self, channel_means: torch.Tensor) -> torch.Tensor:
        """(B, C) spatial means -> (B, C) channel weights in (0, 1)."""
        return torch.sigmoid(self.excite(torch.relu(self.squeeze(channel_means))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.channel_weights(x.mean(dim=(2, 3)))
        return x * w[:, :, None, None]


class SpatialSE(nn.Module):
    """Spatial squeeze-excitation: x * sigmoid(conv7x7(x) -> 1 channel)."""

    def __init__(self, channels: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial weights sigmoid(conv7x7(x)), (B, 1, H, W)."""
        return torch.sigmoid(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class FeatureExtractor(nn.Module):
    """Densely connected feature extractor: gray (B,1,H,W) in [0,1] -> features (B,64,H,W)."""

    def __init__(self, growth: int = 16, depth: int = 4) -> None:
        super().__init__()
        in_channels = [1] + [growth * i for i in range(1, depth)]
        self.blocks = nn.ModuleList(ConvBlock(c, growth) for c in in_channels)
        self.cse = nn.ModuleList(ChannelSE(growth) for _ in in_channels)

    def forward(self, gray: torch.Tensor, channel_weights: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Features of ``gray``. Each CSE weighs its block's channels by statistics of the whole frame:
        computed from this input by default, or given as ``channel_weights`` ((B, 16) per block) when
        the frame is processed in tiles (see :func:`focusfuse.methods.gacn.statistics.frame_channel_weights`)."""
        outputs: list[torch.Tensor] = []
        x = gray
        for k, (block, cse) in enumerate(zip(self.blocks, self.cse)):
            y = block(x)
            w = cse.channel_weights(y.mean(dim=(2, 3))) if channel_weights is None else channel_weights[k]
            outputs.append(y * w[:, :, None, None])
            x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
        return x

    def block_output(self, gray: torch.Tensor, k: int, channel_weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """Output of block ``k`` before its CSE, given the CSE weights of blocks 0..k-1."""
        outputs: list[torch.Tensor] = []
        x = gray
        for j in range(k + 1):
            y = self.blocks[j](x)
            if j == k:
                return y
            outputs.append(y * channel_weights[j][:, :, None, None])
            x = torch.cat(outputs, dim=1)
        raise IndexError(k)


class DecisionPath(nn.Module):
    """Activity (B,64,H,W) -> decision logit y (B,1,H,W)."""

    def __init__(self, channels: tuple[int, ...] = (64, 48, 32, 16, 1)) -> None:
        super().__init__()
        self.sse_in = SpatialSE(channels[0])
        self.blocks = nn.ModuleList(ConvBlock(a, b) for a, b in zip(channels[:-1], channels[1:]))
        self.sse = nn.ModuleList(SpatialSE(c) for c in channels[1:])

    def forward(self, activity: torch.Tensor) -> torch.Tensor:
        return _block_then_gate(self.blocks[-1], self.sse[-1], self.hidden(activity))

    def last_conv_output(self, activity: torch.Tensor) -> torch.Tensor:
        """z (B,1,H,W), the last block's conv output: y > 0 exactly where z > -shift / scale of that
        block's BatchNorm (conv -> ReLU -> BatchNorm, then a positive gate; benchmarks/order_bias.py)."""
        return self.blocks[-1].conv(self.hidden(activity))

    def hidden(self, activity: torch.Tensor) -> torch.Tensor:
        """The input of the last block (B,16,H,W)."""
        x = self.sse_in(activity)
        for block, sse in zip(self.blocks[:-1], self.sse[:-1]):
            x = _block_then_gate(block, sse, x)
        return x


def _block_then_gate(block: ConvBlock, sse: SpatialSE, x: torch.Tensor) -> torch.Tensor:
    return sse(block(x))


def activity(sf_a: torch.Tensor, sf_b: torch.Tensor, surrogate: float | None = None) -> torch.Tensor:
    """Per-channel activity sigmoid(1000 * (SF_A - SF_B)): 1 where A's features are sharper.

    ``surrogate`` s (training only): the same values, with the gradient of sigmoid(s * (SF_A - SF_B)).
    """
    if surrogate is None:
        return torch.sub(sf_a, sf_b).mul_(ACTIVITY_STEEPNESS).sigmoid_()
    difference = sf_a - sf_b
    return straight_through(torch.sigmoid(ACTIVITY_STEEPNESS * difference), torch.sigmoid(surrogate * difference))


def initial_decision_map(logit: torch.Tensor, surrogate: float | None = None) -> torch.Tensor:
    """Initial decision map p0 = sigmoid(1000 * y): probability that frame A is in focus.

    ``surrogate`` s (training only): the same values, with the gradient of sigmoid(s * y).
    """
    if surrogate is None:
        return torch.sigmoid(DECISION_STEEPNESS * logit)
    return straight_through(torch.sigmoid(DECISION_STEEPNESS * logit), torch.sigmoid(surrogate * logit))


class GACN(nn.Module):
    """Gradient Aware Cascade Network, split into per-frame and per-pair parts."""

    def __init__(self) -> None:
        super().__init__()
        self.features = FeatureExtractor()
        self.decision = DecisionPath()
        self.source: str | None = None  # where the weights came from (file path), for reports
        self.metadata: dict = {}  # metadata stored with the weights
        self.activity_surrogate: float | None = None  # training aids, see use_surrogate_gradients
        self.decision_surrogate: float | None = None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def focus_measure(self, gray: torch.Tensor, channel_weights: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Per-frame part: gray (B,1,H,W) -> spatial frequency of its deep features (B,64,H,W).

        The spatial frequency is always computed in float32, also under mixed-precision autocast: the
        activity multiplies SF differences by 1000, so their round-off decides the decisions.
        """
        features = self.features(gray, channel_weights)
        with torch.autocast(device_type=features.device.type, enabled=False):
            return spatial_frequency(features.float(), SF_RADIUS)

    def decision_logit(self, sf_a: torch.Tensor, sf_b: torch.Tensor) -> torch.Tensor:
        """Per-pair part: two focus measures -> decision logit y (B,1,H,W), > 0 where A is sharper."""
        return self.decision(activity(sf_a, sf_b, self.activity_surrogate if self.training else None))

    def initial_map(self, sf_a: torch.Tensor, sf_b: torch.Tensor) -> torch.Tensor:
        """Per-pair part: two focus measures -> initial decision map p0 (B,1,H,W), 1 where A is sharper."""
        return initial_decision_map(self.decision_logit(sf_a, sf_b),
                                    self.decision_surrogate if self.training else None)

    def refine(self, p0: torch.Tensor, gray_a: torch.Tensor, gray_b: torch.Tensor) -> torch.Tensor:
        """Final decision map: the initial map's focus boundary guided-filtered (see :mod:`.decision`)."""
        return refine_decision_map(p0, gray_a, gray_b)

    def use_surrogate_gradients(self, activity_steepness: float | None = 1.0, decision_steepness: float | None = 10.0,
                                relu_leak: float = 0.05) -> None:
        """Training aid that changes no forward value: the sigmoid(1000 x) steps pass the gradient of a
        gentler sigmoid(s x), and ReLUs pass ``relu_leak`` of the gradient where they are off.

        With sigmoid(1000 x) almost every pixel is saturated once training has started, so Dice and Q_g
        otherwise reach the weights through very few pixels, and units stuck below zero never recover.
        Only applies in training mode.
        """
        self.activity_surrogate = activity_steepness
        self.decision_surrogate = decision_steepness
        for module in self.modules():
            if isinstance(module, ConvBlock):
                module.relu_grad_leak = relu_leak

    def forward(self, gray_a: torch.Tensor, gray_b: torch.Tensor) -> torch.Tensor:
        """Initial decision map p0 for a pair of gray frames (B,1,H,W) in [0,1]."""
        sf = self.focus_measure(torch.cat([gray_a, gray_b], dim=0))
        sf_a, sf_b = sf.chunk(2, dim=0)
        return self.initial_map(sf_a, sf_b)


__all__ = [
    "ARCHITECTURE",
    "GACN",
    "ConvBlock",
    "ChannelSE",
    "SpatialSE",
    "FeatureExtractor",
    "DecisionPath",
    "activity",
    "initial_decision_map",
]
