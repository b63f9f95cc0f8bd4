"""The R-PSNN network: two branches (same layout, separate weights) and a generation module.

Branch: C7(3->16), C3(16->64), RB, RACP, RB, RACP, RB. Generation: C3(128->64), RB x4, C1(64->64),
C7(64->3), C3(3->3). Ck = k x k conv (no bias, zero padding) -> LeakyReLU(0.1). RB: x + conv3(lrelu(conv3(x))).
RACP: x + P1(x) + P2(x) + P3(x), each pyramid = 3x3 convs with dilation 1, 4, 8 (each -> LeakyReLU),
concatenated and merged by a 1x1 conv. Module names follow the published layout (``Siamese_1.3.conv2_3``).
"""

from __future__ import annotations

import torch
from torch import nn

from . import LEAK

DILATIONS = (1, 4, 8)


class ConvAct(nn.Module):
    """k x k conv (no bias, same size) -> LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, size: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, out_channels, size, padding=size // 2, bias=False),
                                  nn.LeakyReLU(LEAK))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ResidualBlock(nn.Module):
    """x + conv3(lrelu(conv3(x))), 64 channels."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.res = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.LeakyReLU(LEAK),
                                 nn.Conv2d(channels, channels, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res(x)


class AtrousPyramid(nn.Module):
    """Residual atrous convolution pyramid: x plus three parallel pyramids of dilated 3x3 convs."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        for i in (1, 2, 3):
            for j, dilation in enumerate(DILATIONS, 1):
                setattr(self, f"conv{i}_{j}", nn.Sequential(
                    nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
                    nn.LeakyReLU(LEAK)))
            setattr(self, f"conv{i}", nn.Conv2d(3 * channels, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i in (1, 2, 3):
            levels = torch.cat([getattr(self, f"conv{i}_{j}")(x) for j in (1, 2, 3)], dim=1)
            out = out + getattr(self, f"conv{i}")(levels)
        return out


def branch() -> nn.Sequential:
    return nn.Sequential(ConvAct(3, 16, 7), ConvAct(16, 64, 3), ResidualBlock(), AtrousPyramid(), ResidualBlock(),
                         AtrousPyramid(), ResidualBlock())


class RPSNN(nn.Module):
    """fused = Gen(cat[Siamese_1(a), Siamese_2(b)]) for RGB (B, 3, H, W) in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.Siamese_1 = branch()
        self.Siamese_2 = branch()
        self.Gen_Module = nn.Sequential(ConvAct(128, 64, 3), *(ResidualBlock() for _ in range(4)),
                                        ConvAct(64, 64, 1), ConvAct(64, 3, 7), ConvAct(3, 3, 3))
        self.source: str | None = None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.Gen_Module(torch.cat([self.Siamese_1(a), self.Siamese_2(b)], dim=1))


__all__ = ["RPSNN", "ConvAct", "ResidualBlock", "AtrousPyramid", "branch"]
