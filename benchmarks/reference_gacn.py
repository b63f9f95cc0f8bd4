"""A plain eager float32 translation of the paper's GACN computation, for speed ratios (not shipped).

Written directly from the paper's description, the way the authors' code computes it: NCHW tensors,
the spatial frequency as an 11x11 depthwise convolution of the squared differences, the boundary
Gaussian and guided filter as plain convolutions, every frame pair through the full network, and the
decision calibration of Eq. 18 for stacks (every frame compared with frame 1). It reads the same
state dict as focusfuse (``focusfuse.methods.gacn.weights.read_weights``), so both paths compute the same thing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _block(x: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    x = F.conv2d(x, state[f"{prefix}.conv.weight"], state[f"{prefix}.conv.bias"], padding=1)
    x = F.relu(x)
    return F.batch_norm(x, state[f"{prefix}.bn.running_mean"], state[f"{prefix}.bn.running_var"],
                        state[f"{prefix}.bn.weight"], state[f"{prefix}.bn.bias"], False, 0.0, 1e-5)


def _cse(x: torch.Tensor, state: dict, k: int) -> torch.Tensor:
    s = x.mean(dim=(2, 3))
    s = F.relu(s @ state[f"features.cse.{k}.squeeze.weight"].t())
    s = torch.sigmoid(s @ state[f"features.cse.{k}.excite.weight"].t())
    return x * s[:, :, None, None]


def _sse(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(F.conv2d(x, weight, padding=3))


def features(gray: torch.Tensor, state: dict) -> torch.Tensor:
    outs = []
    x = gray
    for k in range(4):
        outs.append(_cse(_block(x, state, f"features.blocks.{k}"), state, k))
        x = torch.cat(outs, dim=1)
    return x


def spatial_frequency(f: torch.Tensor) -> torch.Tensor:
    c = f.shape[1]
    left = torch.tensor([[0, 0, 0], [1, -1, 0], [0, 0, 0]], dtype=f.dtype, device=f.device).expand(c, 1, 3, 3)
    up = torch.tensor([[0, 1, 0], [0, -1, 0], [0, 0, 0]], dtype=f.dtype, device=f.device).expand(c, 1, 3, 3)
    g = F.conv2d(f, left, padding=1, groups=c) ** 2 + F.conv2d(f, up, padding=1, groups=c) ** 2
    return F.conv2d(g, torch.ones(c, 1, 11, 11, dtype=f.dtype, device=f.device), padding=5, groups=c)


def decision(sf_a: torch.Tensor, sf_b: torch.Tensor, state: dict) -> torch.Tensor:
    x = _sse(torch.sigmoid(1000 * (sf_a - sf_b)), state["decision.sse_in.conv.weight"])
    for k in range(4):
        x = _sse(_block(x, state, f"decision.blocks.{k}"), state[f"decision.sse.{k}.conv.weight"])
    return torch.sigmoid(1000 * x)


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    k = 2 * r + 1
    ones = torch.ones(1, 1, k, k, dtype=x.dtype, device=x.device)
    return F.conv2d(x, ones, padding=r) / F.conv2d(torch.ones_like(x), ones, padding=r)


def refine(p0: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    g = torch.tensor([math.exp(-((i - 4) ** 2) / (2 * 64.0)) for i in range(9)], dtype=p0.dtype, device=p0.device)
    g = (g[:, None] * g[None, :]) / (g.sum() ** 2)
    blur = F.conv2d(p0, g[None, None], padding=4)
    m = (blur > 0.8).float() * blur + (blur < 0.1).float() * (1 - blur)
    w = 1 - torch.abs(2 * (blur * m + (1 - m) * 0.5) - 1)
    guide = p0 * a + (1 - p0) * b
    mi, mp = _box(guide, 3), _box(p0, 3)
    cov, var = _box(guide * p0, 3) - mi * mp, _box(guide * guide, 3) - mi * mi
    ca = cov / (var + 0.1)
    cb = mp - ca * mi
    return (_box(ca, 3) * guide + _box(cb, 3)) * w + p0 * (1 - w)


def gray(x: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) in [0,1] -> (B,1,H,W)."""
    if x.shape[1] == 1:
        return x
    return 0.2125 * x[:, :1] + 0.7154 * x[:, 1:2] + 0.0721 * x[:, 2:3]


@torch.no_grad()
def fuse_pair(a: torch.Tensor, b: torch.Tensor, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(1,C,H,W) frames -> (fused, final decision map)."""
    ga, gb = gray(a), gray(b)
    fa, fb = features(ga, state), features(gb, state)
    p = refine(decision(spatial_frequency(fa), spatial_frequency(fb), state), ga, gb)
    return p * a + (1 - p) * b, p


@torch.no_grad()
def fuse_stack_eq18(frames: list[torch.Tensor], state: dict) -> torch.Tensor:
    """The paper's decision calibration: frame 1's features once, every frame against it, hard choice."""
    g1 = gray(frames[0])
    sf1 = spatial_frequency(features(g1, state))
    best = fused = p2 = None
    for j, frame in enumerate(frames[1:], start=1):
        gj = gray(frame)
        p = refine(decision(sf1, spatial_frequency(features(gj, state)), state), g1, gj)
        if j == 1:
            p2, best, fused = p, p, frames[0]
            score = 1 - p
        else:
            score = p2 / (p + 1e-4) * (1 - p)
        wins = score > best
        fused = torch.where(wins, frame, fused)
        best = torch.where(wins, score, best)
    return fused
