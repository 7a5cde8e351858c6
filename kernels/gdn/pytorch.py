"""Gated DeltaNet (GDN) chunked forward in plain PyTorch, with any registry inversion method.

Layout (fla / vLLM / SGLang): ``q, k``: ``[B, T, H, K]``; ``v``: ``[B, T, HV, V]``; ``g, beta``:
``[B, T, HV]``, HV a multiple of H (value head ``h`` reads key head ``h // (HV // H)``). Packed
varlen batches have B = 1 and ``cu_seqlens``. ``g`` is a per-token log-decay in natural-log units,
or base-2 units with ``gate_log2=True`` (fla 0.6.0 scales its chunk cumsum by 1/ln 2 and uses
``exp2``; vLLM and SGLang use ``exp``).

Per chunk of BT tokens, with ``G`` the in-chunk cumulative gate and ``S`` the ``K x V`` state that
enters the chunk::

    A   = strictLower(diag(beta) K K^T * exp(G_i - G_j))
    T   = (I + A)^-1                                   # deltainv.kernels.invert(method, precision)
    W   = T (beta * exp(G) * K),   U = T (beta * V)     # "recompute_w_u"
    V'  = U - W S
    O   = scale * [ (Q * exp(G)) S + (Q K^T * exp(G_i - G_j), i >= j) V' ]
    S  <- exp(G_last) S + (K * exp(G_last - G))^T V'

Element-wise work is fp32. ``wu_precision`` (the project's precision vocabulary) rounds the
operands of the ``W``/``U`` products: the engines store ``T`` in bf16 and multiply bf16 operands,
which is ``wu_precision="bf16"``. The default follows the dtype ``W``/``U`` are stored in
(:func:`deltainv.kernels.chunking.default_wu_precision`): the intra drop-in returns them in the
inputs' dtype, so bf16 inputs get bf16 operands (the storage rounds as coarsely anyway) and fp32
inputs tf32x3; the whole forward keeps them in fp32 and defaults to tf32x3 (README "Numerics").
"""

from __future__ import annotations

import torch

from ..chunking import (
    FULL_WU_PRECISION,
    default_wu_precision,
    check_inputs,
    chunk_recurrence,
    gate_exp,
    gather,
    heads_first,
    l2norm,
    pairwise_decay,
    scatter,
    valid_heads_first,
)
from ..index import ChunkTable, chunk_table
from ..precision import check_precision, matmul
from ..registry import Recipe, resolve
from ..tril.invert import invert


def chunk_local_cumsum(
    g: torch.Tensor,
    chunk_size: int,
    cu_seqlens: torch.Tensor | None = None,
    chunk_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """In-chunk cumulative sum of a per-token gate: ``[B, T, HV] -> [B, T, HV]`` fp32."""
    B, T = g.shape[:2]
    table = chunk_table(B, T, chunk_size, cu_seqlens, chunk_indices, g.device)
    return scatter(torch.cumsum(gather(g, table), dim=1), table, B, T, torch.float32)


def _chunk_inputs(k, v, beta, table: ChunkTable, H: int, HV: int):
    """Gather k (grouped heads expanded), v and beta into chunks, heads first: ``[NT, HV, BT, ...]`` fp32."""
    return heads_first(gather(k, table), HV // H), heads_first(gather(v, table)), heads_first(gather(beta, table))


def _kkt(kc: torch.Tensor, bc: torch.Tensor, Gc: torch.Tensor, table: ChunkTable, gate_log2: bool) -> torch.Tensor:
    """``strictLower(diag(beta) K K^T * exp(G_i - G_j))`` per chunk, ``[NT, HV, BT, BT]``, padding rows zero.

    ``Gc`` must be edge-padded (see :mod:`deltainv.kernels.chunking`); the rows past a partial
    chunk's end are also zeroed explicitly, so whatever the gate, nothing born there reaches the
    inverse (where a NaN would spread into real rows through the block products).
    """
    A = bc[..., :, None] * (kc @ kc.mT) * pairwise_decay(Gc, gate_log2, strict=True)
    return torch.where(valid_heads_first(table)[..., None], A, torch.zeros((), dtype=A.dtype, device=A.device))


def _intra(kc, vc, bc, Gc, table: ChunkTable, gate_log2: bool, recipe: Recipe, wu_precision: str):
    """Per-chunk inverse, W and U from chunked inputs (``Gc``: in-chunk cumulative gate ``[NT, HV, BT]``)."""
    Ai = invert(_kkt(kc, bc, Gc, table, gate_log2), recipe, backend="torch", check_finite=False)
    w = matmul(Ai, kc * (bc * gate_exp(Gc, gate_log2))[..., None], wu_precision)
    u = matmul(Ai, vc * bc[..., None], wu_precision)
    return Ai, w, u


def chunk_scaled_dot_kkt(
    k: torch.Tensor,
    beta: torch.Tensor,
    g_cumsum: torch.Tensor | None = None,
    chunk_size: int = 64,
    cu_seqlens: torch.Tensor | None = None,
    chunk_indices: torch.Tensor | None = None,
    *,
    gate_log2: bool = False,
    heads: int | None = None,
) -> torch.Tensor:
    """``A = strictLower(diag(beta) K K^T * exp(G_i - G_j))`` per chunk, engine layout ``[B, T, HV, BT]`` fp32.

    ``g_cumsum`` is the in-chunk cumulative gate (:func:`chunk_local_cumsum`); HV is ``beta``'s head count.
    """
    B, T, H, _ = k.shape
    HV = beta.shape[2] if heads is None else heads
    table = chunk_table(B, T, chunk_size, cu_seqlens, chunk_indices, k.device)
    kc = heads_first(gather(k, table), HV // H)
    bc = heads_first(gather(beta, table))
    Gc = heads_first(gather(g_cumsum, table, pad="edge")) if g_cumsum is not None else torch.zeros_like(bc)
    return scatter(_kkt(kc, bc, Gc, table, gate_log2).movedim(1, 2), table, B, T, torch.float32)


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
    method: str | Recipe | None = None,
    precision: str | None = None,
    wu_precision: str | None = None,
    **options,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """kkt -> inverse -> W/U for every chunk: the engines' ``chunk_gated_delta_rule_fwd_intra`` contract.

    Args:
        k: ``[B, T, H, K]``. v: ``[B, T, HV, V]``. beta: ``[B, T, HV]``.
        g: ``[B, T, HV]`` in-chunk *cumulative* gate (already ``chunk_local_cumsum``-ed), or None.
        gate_log2: ``g`` is in base-2 units (fla 0.6.0) rather than natural log (vLLM, SGLang).
        method, precision, options: the inversion, as in :func:`deltainv.kernels.invert` (a
            :class:`~deltainv.kernels.registry.Recipe` as ``method`` is used as is).
        wu_precision: operand rounding of the W/U products (default by ``k.dtype``: ``bf16`` for bf16,
            ``tf32`` for fp16, ``tf32x3`` for fp32; ``bf16`` is fla's).

    Returns:
        ``(w, u, A)``: ``w`` ``[B, T, HV, K]`` in ``k.dtype``, ``u`` ``[B, T, HV, V]`` in ``v.dtype``,
        ``A = (I + A)^-1`` ``[B, T, HV, BT]`` in ``k.dtype``.
    """
    recipe = resolve(method, precision, **options)
    wu_precision = check_precision(default_wu_precision(k.dtype, wu_precision))
    if beta is None:
        raise ValueError("beta is required")
    H, HV = check_inputs(k, v, beta, g)
    B, T = k.shape[:2]
    table = chunk_table(B, T, chunk_size, cu_seqlens, chunk_indices, k.device)
    kc, vc, bc = _chunk_inputs(k, v, beta, table, H, HV)
    # g is already cumulated: pad with each chunk's last real value, never 0 (exp(0 - G_j) overflows).
    Gc = heads_first(gather(g, table, pad="edge")) if g is not None else torch.zeros_like(bc)
    Ai, w, u = _intra(kc, vc, bc, Gc, table, gate_log2, recipe, wu_precision)
    return (
        scatter(w.movedim(1, 2), table, B, T, k.dtype),
        scatter(u.movedim(1, 2), table, B, T, v.dtype),
        scatter(Ai.movedim(1, 2), table, B, T, k.dtype),
    )


def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int = 64,
    *,
    use_qk_l2norm: bool = False,
    gate_log2: bool = False,
    method: str | Recipe | None = None,
    precision: str | None = None,
    wu_precision: str | None = None,
    **options,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The whole chunked GDN forward (prefill).

    Args:
        q, k: ``[B, T, H, K]``. v: ``[B, T, HV, V]``. g (per-token log-decay, not cumulated),
            beta: ``[B, T, HV]``.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, HV, K, V]`` (N = B, or the number of sequences with ``cu_seqlens``).
        output_final_state: also return the state after each sequence, ``[N, HV, K, V]`` fp32.
        chunk_size: 16, 32, 64 or 128.
        method, precision, options: the inversion (see :func:`deltainv.kernels.invert`; a
            :class:`~deltainv.kernels.registry.Recipe` as ``method`` is used as is).
        wu_precision: operand rounding of the W/U products (default ``tf32x3``: W and U stay fp32 here).

    Returns:
        ``(o, final_state)``: ``o`` ``[B, T, HV, V]`` in ``v.dtype``; ``final_state`` or None.
    """
    recipe = resolve(method, precision, **options)
    # W and U never leave this function: they stay fp32, so the default operands are fp32-level.
    wu_precision = check_precision(wu_precision or FULL_WU_PRECISION)
    H, HV = check_inputs(k, v, beta, g, q=q)
    B, T, _, K = k.shape
    scale = K**-0.5 if scale is None else scale
    if use_qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    table = chunk_table(B, T, chunk_size, cu_seqlens, None, k.device)
    kc, vc, bc = _chunk_inputs(k, v, beta, table, H, HV)
    # Cumulated in chunk space, so rows past a partial chunk's end carry its last real G.
    Gc = torch.cumsum(heads_first(gather(g, table)), dim=-1) if g is not None else torch.zeros_like(bc)
    _, w, u = _intra(kc, vc, bc, Gc, table, gate_log2, recipe, wu_precision)
    qc = heads_first(gather(q, table), HV // H)              # [NT, HV, BT, K]
    qk = (qc @ kc.mT) * pairwise_decay(Gc, gate_log2, strict=False)  # [NT, HV, BT, BT]
    q_decay = qc * gate_exp(Gc, gate_log2)[..., None]
    G_last = Gc[..., -1:]                                    # padded rows carry the last real G
    k_decay = kc * gate_exp(G_last - Gc, gate_log2)[..., None]
    state_decay = gate_exp(G_last[..., 0], gate_log2)[..., None, None]

    o, S = chunk_recurrence(w, u, q_decay, qk, k_decay, state_decay, table, initial_state, scale)
    out = scatter(o.movedim(1, 2), table, B, T, v.dtype)
    return out, (S if output_final_state else None)


def naive_recurrent_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    *,
    gate_log2: bool = False,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token GDN recurrence, the oracle (float64 by default). Same arguments as above.

    ``S_t = exp(g_t) S_{t-1} + k_t (beta_t (v_t - S^T k_t))^T`` with the decayed ``S``, ``o_t = scale S_t^T q_t``.
    Returns ``(o [B, T, HV, V], final_state [N, HV, K, V])`` in ``dtype``.
    """
    H, HV = check_inputs(k, v, beta, g)
    B, T, _, K = k.shape
    scale = K**-0.5 if scale is None else scale
    rep = HV // H
    q, k, v, beta = (x.to(dtype) for x in (q, k, v, beta))
    q, k = q.repeat_interleave(rep, 2), k.repeat_interleave(rep, 2)
    g = torch.zeros_like(beta) if g is None else g.to(dtype)
    decay = torch.exp2(g) if gate_log2 else torch.exp(g)
    bounds = cu_seqlens.tolist() if cu_seqlens is not None else None
    seqs = [(b, 0, T) for b in range(B)] if bounds is None else [(0, s, e) for s, e in zip(bounds, bounds[1:])]
    o = torch.zeros(B, T, HV, v.shape[-1], dtype=dtype)
    finals = []
    for n, (b, s, e) in enumerate(seqs):
        S = (torch.zeros(HV, K, v.shape[-1], dtype=dtype) if initial_state is None
             else initial_state[n].to(dtype).clone())
        for t in range(s, e):
            S = S * decay[b, t][:, None, None]
            err = v[b, t] - torch.einsum("hk,hkv->hv", k[b, t], S)
            S = S + k[b, t][:, :, None] * (beta[b, t][:, None] * err)[:, None, :]
            o[b, t] = scale * torch.einsum("hk,hkv->hv", q[b, t], S)
        finals.append(S)
    return o, torch.stack(finals)


__all__ = [
    "chunk_gated_delta_rule",
    "chunk_gated_delta_rule_fwd_intra",
    "chunk_local_cumsum",
    "chunk_scaled_dot_kkt",
    "l2norm",
    "naive_recurrent_gated_delta_rule",
]
