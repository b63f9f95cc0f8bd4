"""GACN inference on a backend: the model's math (focus measure, initial and final decision maps) with the
backend's kernels, in place where a tensor is ours alone."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...backends.base import Backend
from ...ops.filters import spatial_frequency
from .decision import refine_decision_map
from .model import ACTIVITY_STEEPNESS, GACN, SF_RADIUS, SpatialSE, initial_decision_map

ChannelWeights = Sequence[torch.Tensor] | None


class GacnNetwork:
    """A trained :class:`GACN` (eval mode, on the backend's device) run by ``backend``'s kernels.

    Per frame, :meth:`focus_measure` (features and their spatial frequency, always float32); per compared
    pair, :meth:`initial_map` (the decision path, in the backend's decision precision) and :meth:`refine`
    (the boundary refinement, float32). Only for inference (no gradients).
    """

    def __init__(self, model: GACN, backend: Backend) -> None:
        self.model = model
        self.backend = backend

    @property
    def device(self) -> torch.device:
        return self.backend.device

    def block_output(self, gray: torch.Tensor, k: int, channel_weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """Output of feature block ``k`` before its CSE, given the CSE weights of blocks 0..k-1 (for tiling)."""
        features = self.model.features
        outputs: list[torch.Tensor] = []
        x = gray
        for j in range(k + 1):
            y = self.backend.conv_block(features.blocks[j], x)
            if j == k:
                return y
            outputs.append(y.mul_(channel_weights[j][:, :, None, None]))
            x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
        raise IndexError(k)

    def channel_weights(self, k: int, block_means: torch.Tensor) -> torch.Tensor:
        """CSE weights (B, 16) of feature block ``k`` from its output's means over the whole frame (B, 16)."""
        return self.model.features.cse[k].channel_weights(block_means)

    def features(self, gray: torch.Tensor, channel_weights: ChannelWeights = None) -> torch.Tensor:
        """Deep features (B, 64, H, W) of gray frames (B, 1, H, W) in [0, 1]; each CSE weighs its block by the
        block's own means unless the whole-frame ``channel_weights`` of a tiled frame are given."""
        outputs: list[torch.Tensor] = []
        x = gray
        for k, block in enumerate(self.model.features.blocks):
            y = self.backend.conv_block(block, x)
            w = self.channel_weights(k, y.mean(dim=(2, 3))) if channel_weights is None else channel_weights[k]
            outputs.append(y.mul_(w[:, :, None, None]))
            x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
        return x

    def focus_measure(self, gray: torch.Tensor, channel_weights: ChannelWeights = None) -> torch.Tensor:
        """Spatial frequency of the deep features (B, 64, H, W), float32."""
        backend = self.backend
        return spatial_frequency(self.features(gray, channel_weights).float(), SF_RADIUS,
                                 separable=backend.separable_filter, energy=backend.gradient_energy)

    def _gated(self, sse: SpatialSE, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(self.backend.single_output_conv(sse.conv, x).sigmoid_())

    def decision_logit(self, sf_a: torch.Tensor, sf_b: torch.Tensor) -> torch.Tensor:
        """Decision logit y (B, 1, H, W), float32: > 0 where A is sharper."""
        path = self.model.decision
        with self.backend.decision_precision():
            x = torch.sub(sf_a, sf_b).mul_(ACTIVITY_STEEPNESS).sigmoid_()  # the activity
            x = self._gated(path.sse_in, x)
            for block, sse in zip(path.blocks, path.sse):
                x = self._gated(sse, self.backend.conv_block(block, x))
        return x.float()

    def initial_map(self, sf_a: torch.Tensor, sf_b: torch.Tensor) -> torch.Tensor:
        """Initial decision map p0 = sigmoid(1000 y) (B, 1, H, W): 1 where A is sharper."""
        return initial_decision_map(self.decision_logit(sf_a, sf_b))

    def refine(self, p0: torch.Tensor, gray_a: torch.Tensor, gray_b: torch.Tensor) -> torch.Tensor:
        """Final decision map: p0 with its focus boundary guided-filtered (see :mod:`.decision`)."""
        return refine_decision_map(p0, gray_a, gray_b, separable=self.backend.separable_filter)


__all__ = ["GacnNetwork", "ChannelWeights"]
