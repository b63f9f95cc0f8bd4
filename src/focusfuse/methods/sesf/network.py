"""SESFuseNet: a densely connected encoder with channel squeeze-excitation, and the decoder used in training.

Conv blocks are 3x3 conv (bias) -> ReLU -> BatchNorm, stride 1. Encoder: 1->16, 16->16, 32->16, 48->16, a
channel SE (reduction 8, no biases) after each; the four outputs concatenate (old first) to 64 channels.
Decoder: 64->64->32->16->1 conv blocks (the last one's BatchNorm output is the reconstruction). Module names
follow the published checkpoint's keys (``features``, ``se_f``, ``conv_encode_1``, ``conv_decode_4``, ...).
"""

from __future__ import annotations

import torch
from torch import nn

from . import GRAY_MEAN, GRAY_STD


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(),
                         nn.BatchNorm2d(out_channels))


class ChannelSE(nn.Module):
    """x * sigmoid(W2 relu(W1 mean(x))) per channel, reduction 8, no biases."""

    def __init__(self, channels: int = 16, reduction: int = 8) -> None:
        super().__init__()
        hidden = channels // reduction
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(),
                                nn.Linear(hidden, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x.mean(dim=(2, 3)))[:, :, None, None]

    def weights(self, mean: torch.Tensor) -> torch.Tensor:
        """The channel weights (B, C) from the channels' means over the image (B, C)."""
        return self.fc(mean)


class SESFNet(nn.Module):
    """The encoder (``encode``: 64 feature channels) and the decoder (``forward``: reconstruction)."""

    def __init__(self) -> None:
        super().__init__()
        self.features, self.se_f = conv_block(1, 16), ChannelSE()
        self.conv_encode_1, self.se_1 = conv_block(16, 16), ChannelSE()
        self.conv_encode_2, self.se_2 = conv_block(32, 16), ChannelSE()
        self.conv_encode_3, self.se_3 = conv_block(48, 16), ChannelSE()
        self.conv_decode_1 = conv_block(64, 64)
        self.conv_decode_2 = conv_block(64, 32)
        self.conv_decode_3 = conv_block(32, 16)
        self.conv_decode_4 = conv_block(16, 1)
        self.source: str | None = None  # the weights file it was loaded from

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encoder_blocks(self) -> list[tuple[nn.Sequential, ChannelSE]]:
        """The encoder's four (conv block, channel SE) pairs, in order."""
        return [(self.features, self.se_f), (self.conv_encode_1, self.se_1), (self.conv_encode_2, self.se_2),
                (self.conv_encode_3, self.se_3)]

    def encode(self, x: torch.Tensor, channel_weights: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Deep features (B, 64, H, W) of normalised gray images (B, 1, H, W). ``channel_weights``: the SE
        blocks' weights (B, 16) each, when computed over a larger image than ``x`` (a tile of it)."""
        return self.encoder_prefix(x, 4, channel_weights)

    def encoder_prefix(self, x: torch.Tensor, blocks: int, channel_weights: list[torch.Tensor] | None = None
                       ) -> torch.Tensor:
        """The features after the first ``blocks`` encoder blocks (concatenated, old first); block k uses
        ``channel_weights[k]`` when given, else its SE over ``x``."""
        features = x
        for k, (conv, se) in enumerate(self.encoder_blocks()[:blocks]):
            y = conv(features)
            y = se(y) if channel_weights is None else y * channel_weights[k][:, :, None, None]
            features = y if k == 0 else torch.cat([features, y], dim=1)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.encode(x)
        for block in (self.conv_decode_1, self.conv_decode_2, self.conv_decode_3, self.conv_decode_4):
            y = block(y)
        return y


def normalize(gray: torch.Tensor) -> torch.Tensor:
    """Gray in [0, 1] -> the network's input scale."""
    return (gray - GRAY_MEAN) / GRAY_STD


__all__ = ["SESFNet", "ChannelSE", "conv_block", "normalize"]
