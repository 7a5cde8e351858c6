"""Kimi Delta Attention's gate and write strength from the layer's raw projections.

Kimi Linear (and vLLM's fused-gate KDA entry points) pass the forget gate before its activation:
``raw_g`` ``[..., H, K]`` (the low-rank ``f_b(f_a(x))`` projection), a per-head ``A_log`` ``[H]`` and
an optional per-channel bias ``dt_bias`` ``[H * K]``. The per-token, per-channel log-decay is::

    g = -exp(A_log_h) * softplus(raw_g + dt_bias)            (softplus(x) = x above ``threshold``)
    g = lower_bound * sigmoid(exp(A_log_h) * (raw_g + dt_bias))  with a ``lower_bound`` (Kimi K3's
                                                                  "safe gate", lower_bound < 0)

in natural-log units, fp32, not cumulated (what :func:`deltainv.kernels.kda.chunk_kda` takes); the
write strength is ``beta = sigmoid(raw_beta)``. Same formulas and threshold as vLLM 0.32's
``fused_kda_gate_chunk_cumsum`` / ``fused_recurrent_kda_packed_decode`` and transformers'
``KimiLinearForgetGate``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kda_gate(
    raw_g: torch.Tensor,
    A_log: torch.Tensor,
    dt_bias: torch.Tensor | None = None,
    lower_bound: float | None = None,
    threshold: float = 20.0,
) -> torch.Tensor:
    """``g [..., H, K]`` fp32 from ``raw_g [..., H, K]``, ``A_log [H]``, ``dt_bias [H * K]`` (see the module)."""
    if raw_g.dim() < 2:
        raise ValueError(f"kda_gate: raw_g must be [..., H, K], got shape {tuple(raw_g.shape)}")
    H, K = raw_g.shape[-2:]
    if A_log.numel() != H:
        raise ValueError(f"kda_gate: A_log has {A_log.numel()} entries for {H} heads")
    x = raw_g.float()
    if dt_bias is not None:
        if dt_bias.numel() != H * K:
            raise ValueError(f"kda_gate: dt_bias has {dt_bias.numel()} entries, expected H * K = {H * K}")
        x = x + dt_bias.float().view(H, K)
    a = A_log.float().exp().view(H, 1)
    if lower_bound is not None:
        if not lower_bound < 0:
            raise ValueError(f"kda_gate: lower_bound must be negative, got {lower_bound}")
        return lower_bound * torch.sigmoid(a * x)
    # F.softplus with threshold returns x itself above it, as the engines' kernels do.
    return -a * F.softplus(x, beta=1.0, threshold=threshold)


def kda_beta(raw_beta: torch.Tensor) -> torch.Tensor:
    """``beta = sigmoid(raw_beta)`` in fp32, any shape."""
    return torch.sigmoid(raw_beta.float())


__all__ = ["kda_beta", "kda_gate"]
