"""Triton launcher for the fused GDN intra-chunk kernels (kkt -> inverse -> W, U in registers)."""

from __future__ import annotations

from typing import Any

import torch

from ..index import varlen_chunk_indices
from ..precision import check_precision
from ..registry import DEFAULT_METHOD, DEFAULT_PRECISION, get_method
from ..tril.invert import check_chunk_size
from ..tril.triton import _stage_precisions
from .pytorch import DEFAULT_WU_PRECISION, _check_gdn_inputs


def _kernel(method: str, BT: int):
    from ._generated import KERNELS

    try:
        return KERNELS[method, BT]
    except KeyError:
        have = sorted({m for m, _ in KERNELS})
        raise ValueError(f"method {method!r} has no fused Triton GDN kernel (have: {', '.join(have)})") from None


def _block(n: int) -> int:
    return max(16, min(64, 1 << (n - 1).bit_length()))


def chunk_gated_delta_rule_fwd_intra(
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int = 64,
    chunk_indices: torch.Tensor | None = None,
    *,
    gate_log2: bool = False,
    method: str | None = None,
    precision: str | None = None,
    wu_precision: str | None = None,
    store_a: bool = True,
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None,
    **options: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Fused ``(w, u, A)``; same contract as :func:`deltainv.kernels.gdn.pytorch.chunk_gated_delta_rule_fwd_intra`.

    ``store_a=False`` skips writing ``A = (I + A)^-1`` (returned as ``None``): the inverse then
    never leaves registers. With ``chunk_indices`` given there is no device-to-host sync.
    ``out = (w, u, A)`` receives the results if given (contiguous, the shapes above).
    """
    if beta is None:
        raise ValueError("beta is required")
    H, HV = _check_gdn_inputs(k, v, beta, g)
    B, T, _, K = k.shape
    V = v.shape[-1]
    BT = check_chunk_size(chunk_size)
    method = DEFAULT_METHOD if method is None else method
    spec = get_method(method)
    precision = spec.check_precision(DEFAULT_PRECISION if precision is None else precision)
    stages = _stage_precisions(spec.name, precision, options)
    wu = check_precision(DEFAULT_WU_PRECISION if wu_precision is None else wu_precision)
    kernel = _kernel(spec.name, BT)
    k, v, beta = k.contiguous(), v.contiguous(), beta.contiguous()
    g = g.contiguous() if g is not None else None
    if cu_seqlens is not None:
        chunk_indices = varlen_chunk_indices(cu_seqlens, chunk_indices, T, B, BT)
        NT = chunk_indices.shape[0]
    else:
        NT = -(-T // BT)
    shapes = ((B, T, HV, K), (B, T, HV, V), (B, T, HV, BT))
    if out is None:
        w = torch.empty(shapes[0], dtype=k.dtype, device=k.device)
        u = torch.empty(shapes[1], dtype=v.dtype, device=v.device)
        A = torch.empty(shapes[2], dtype=k.dtype, device=k.device) if store_a else None
    else:
        w, u, A = out
        for t, shape in zip((w, u, A) if store_a else (w, u), shapes):
            if tuple(t.shape) != shape or not t.is_contiguous():
                raise ValueError(f"out tensors must be contiguous with shapes {shapes[:3 if store_a else 2]}")
        A = A if store_a else None
    if NT and B * HV:
        kernel[(NT, B * HV)](
            k, v, g, beta, w, u, A, cu_seqlens, chunk_indices, T,
            H=H, HV=HV, K=K, V=V, BK=_block(K), BV=_block(V), IS_VARLEN=cu_seqlens is not None,
            USE_G=g is not None, GATE_LOG2=gate_log2, STORE_A=store_a,
            KKT_PREC="fp32" if k.dtype == torch.float32 else "native", WU_PREC=wu, **stages,
        )
    return w, u, A
