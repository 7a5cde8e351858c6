"""RWKV-7-shaped DPLR activations for the kernel and model tests."""

from __future__ import annotations

import torch

from deltainv.kernels.dplr import RWKV7_LOWER_BOUND
from deltainv.kernels.gdn import l2norm


def rwkv7_inputs(seed, B=2, T=100, H=2, K=32, V=16, gate=None):
    """``(r, w, k, v, a, b)`` in ``chunk_rwkv7`` order: a = -kk, b = kk * lr, w in [lower bound, 0)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(B, T, H, K, generator=g)
    k = 0.5 * torch.randn(B, T, H, K, generator=g)
    v = torch.randn(B, T, H, V, generator=g)
    kk = l2norm(torch.randn(B, T, H, K, generator=g))
    lr = torch.rand(B, T, H, K, generator=g)
    w = RWKV7_LOWER_BOUND * torch.sigmoid(2 * torch.randn(B, T, H, K, generator=g)) if gate is None else gate
    return r, w, k, v, -kk, kk * lr
