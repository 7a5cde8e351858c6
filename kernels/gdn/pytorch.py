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
which is ``wu_precision="bf16"``; deltainv keeps ``T`` in fp32 and defaults to ``tf32x3``, because
that rounding dominates the output error (README "Numerics").
"""

from __future__ import annotations

import torch

from ..index import ChunkTable, chunk_table
from ..precision import check_precision, matmul
from ..tril.invert import invert

#: Default precision of the W/U products (see the module docstring).
DEFAULT_WU_PRECISION = "tf32x3"


def _check_gdn_inputs(k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, g: torch.Tensor | None) -> tuple[int, int]:
    if k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"k must be [B, T, H, K] and v [B, T, HV, V]; got {list(k.shape)} and {list(v.shape)}")
    B, T, H, _ = k.shape
    HV = v.shape[2]
    if v.shape[:2] != (B, T) or HV % H:
        raise ValueError(f"v {list(v.shape)} does not match k {list(k.shape)} (HV must be a multiple of H)")
    if beta.shape != (B, T, HV):
        raise ValueError(f"beta must be [B, T, HV] = {[B, T, HV]}; got {list(beta.shape)}")
    if g is not None and g.shape != (B, T, HV):
        raise ValueError(f"g must be [B, T, HV] = {[B, T, HV]}; got {list(g.shape)}")
    return H, HV


def _gather(x: torch.Tensor, table: ChunkTable) -> torch.Tensor:
    """``[B, T, ...] -> [NT, BT, ...]`` in fp32, zero on rows past a chunk's end."""
    flat = x.reshape(-1, *x.shape[2:]).float()
    out = flat[table.rows]
    mask = table.valid.reshape(*table.valid.shape, *([1] * (out.dim() - 2)))
    return torch.where(mask, out, torch.zeros((), dtype=out.dtype, device=out.device))


def _scatter(y: torch.Tensor, table: ChunkTable, B: int, T: int, dtype: torch.dtype) -> torch.Tensor:
    """``[NT, BT, ...] -> [B, T, ...]`` (rows past a chunk's end are dropped)."""
    out = torch.zeros(B * T, *y.shape[2:], dtype=dtype, device=y.device)
    out[table.rows[table.valid]] = y[table.valid].to(dtype)
    return out.reshape(B, T, *y.shape[2:])


def _heads_first(x: torch.Tensor, repeat: int = 1) -> torch.Tensor:
    """``[NT, BT, H, D] -> [NT, H * repeat, BT, D]`` (grouped heads expanded) or ``[NT, BT, H] -> [NT, H, BT]``."""
    x = x.movedim(2, 1)
    return x.repeat_interleave(repeat, dim=1) if repeat > 1 else x


def _exp(x: torch.Tensor, log2: bool) -> torch.Tensor:
    return torch.exp2(x) if log2 else torch.exp(x)


def _decay(G: torch.Tensor, log2: bool, strict: bool) -> torch.Tensor:
    """``exp(G_i - G_j)`` on the lower triangle (strict or with the diagonal), 0 elsewhere: ``[..., BT, BT]``."""
    BT = G.shape[-1]
    mask = torch.ones(BT, BT, dtype=torch.bool, device=G.device).tril(-1 if strict else 0)
    diff = G[..., :, None] - G[..., None, :]
    # Mask before exp: above the diagonal G_i - G_j >= 0 can overflow.
    return torch.where(mask, _exp(torch.where(mask, diff, torch.zeros((), dtype=diff.dtype, device=diff.device)), log2),
                       torch.zeros((), dtype=diff.dtype, device=diff.device))


def chunk_local_cumsum(
    g: torch.Tensor,
    chunk_size: int,
    cu_seqlens: torch.Tensor | None = None,
    chunk_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """In-chunk cumulative sum of a per-token gate: ``[B, T, HV] -> [B, T, HV]`` fp32."""
    B, T = g.shape[:2]
    table = chunk_table(B, T, chunk_size, cu_seqlens, chunk_indices, g.device)
    return _scatter(torch.cumsum(_gather(g, table), dim=1), table, B, T, torch.float32)


def _chunk_inputs(k, v, beta, table: ChunkTable, H: int, HV: int):
    """Gather k (grouped heads expanded), v and beta into chunks, heads first: ``[NT, HV, BT, ...]`` fp32."""
    return (_heads_first(_gather(k, table), HV // H), _heads_first(_gather(v, table)),
            _heads_first(_gather(beta, table)))


def _intra(kc, vc, bc, Gc, gate_log2: bool, method, precision, wu_precision, **options):
    """Per-chunk inverse, W and U from chunked inputs (``Gc``: in-chunk cumulative gate ``[NT, HV, BT]``)."""
    wu_precision = check_precision(DEFAULT_WU_PRECISION if wu_precision is None else wu_precision)
    A = bc[..., :, None] * (kc @ kc.mT) * _decay(Gc, gate_log2, strict=True)
    Ai = invert(A, method, precision, check_finite=False, **options)
    w = matmul(Ai, kc * (bc * _exp(Gc, gate_log2))[..., None], wu_precision)
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
    kc = _heads_first(_gather(k, table), HV // H)
    bc = _heads_first(_gather(beta, table))
    Gc = _heads_first(_gather(g_cumsum, table)) if g_cumsum is not None else torch.zeros_like(bc)
    A = bc[..., :, None] * (kc @ kc.mT) * _decay(Gc, gate_log2, strict=True)
    return _scatter(A.movedim(1, 2), table, B, T, torch.float32)


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
    **options,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """kkt -> inverse -> W/U for every chunk: the engines' ``chunk_gated_delta_rule_fwd_intra`` contract.

    Args:
        k: ``[B, T, H, K]``. v: ``[B, T, HV, V]``. beta: ``[B, T, HV]``.
        g: ``[B, T, HV]`` in-chunk *cumulative* gate (already ``chunk_local_cumsum``-ed), or None.
        gate_log2: ``g`` is in base-2 units (fla 0.6.0) rather than natural log (vLLM, SGLang).
        wu_precision: operand rounding of the W/U products (default ``tf32x3``; ``bf16`` is fla's).

    Returns:
        ``(w, u, A)``: ``w`` ``[B, T, HV, K]`` in ``k.dtype``, ``u`` ``[B, T, HV, V]`` in ``v.dtype``,
        ``A = (I + A)^-1`` ``[B, T, HV, BT]`` in ``k.dtype``.
    """
    if beta is None:
        raise ValueError("beta is required")
    H, HV = _check_gdn_inputs(k, v, beta, g)
    B, T = k.shape[:2]
    table = chunk_table(B, T, chunk_size, cu_seqlens, chunk_indices, k.device)
    kc, vc, bc = _chunk_inputs(k, v, beta, table, H, HV)
    Gc = _heads_first(_gather(g, table)) if g is not None else torch.zeros_like(bc)
    Ai, w, u = _intra(kc, vc, bc, Gc, gate_log2, method, precision, wu_precision, **options)
    return (
        _scatter(w.movedim(1, 2), table, B, T, k.dtype),
        _scatter(u.movedim(1, 2), table, B, T, v.dtype),
        _scatter(Ai.movedim(1, 2), table, B, T, k.dtype),
    )


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / sqrt(sum(x^2) + eps)`` over the last dim, in fp32 (fla's and transformers' l2norm)."""
    x = x.float()
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def _chunk_recurrence(w, u, q_decay, qk, k_decay, state_decay, table: ChunkTable, initial_state, scale: float):
    """The state passed from chunk to chunk, every sequence at once; shared by GDN and KDA.

    Per chunk: ``v' = U - W S``, ``O = scale (Q_decay S + QK v')``, ``S <- state_decay * S + K_decay^T v'``.
    ``w``/``q_decay``/``k_decay``: ``[NT, HV, BT, K]``, ``u``: ``[NT, HV, BT, V]``, ``qk``: ``[NT, HV, BT, BT]``,
    ``state_decay`` broadcasts against ``[NT, HV, K, V]`` (a scalar per head for GDN, per key channel for
    KDA). Returns ``O`` ``[NT, HV, BT, V]`` and the final state ``[N, HV, K, V]``, both fp32.
    """
    N, HV, K, Vd = table.num_seqs, u.shape[1], w.shape[-1], u.shape[-1]
    dev = u.device
    if initial_state is None:
        S = torch.zeros(N, HV, K, Vd, dtype=torch.float32, device=dev)
    else:
        if initial_state.shape != (N, HV, K, Vd):
            raise ValueError(f"initial_state must be [N, HV, K, V] = {[N, HV, K, Vd]}; got {list(initial_state.shape)}")
        S = initial_state.float().clone()
    by_pos = torch.full((N, max(table.max_chunks, 1)), -1, dtype=torch.int64, device=dev)
    by_pos[table.seq, table.chunk] = torch.arange(table.seq.numel(), device=dev)
    o = torch.zeros(u.shape[0], HV, u.shape[2], Vd, dtype=torch.float32, device=dev)
    for c in range(table.max_chunks):
        ids = by_pos[:, c]
        has = ids >= 0
        idx, seqs = ids[has], has.nonzero()[:, 0]
        Sc = S[seqs]
        v_new = u[idx] - w[idx] @ Sc
        o[idx] = scale * (q_decay[idx] @ Sc + qk[idx] @ v_new)
        S[seqs] = state_decay[idx] * Sc + k_decay[idx].mT @ v_new
    return o, S


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
    method: str | None = None,
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
        method, precision, options: the inversion (see :func:`deltainv.kernels.invert`).
        wu_precision: operand rounding of the W/U products (default ``tf32x3``).

    Returns:
        ``(o, final_state)``: ``o`` ``[B, T, HV, V]`` in ``v.dtype``; ``final_state`` or None.
    """
    H, HV = _check_gdn_inputs(k, v, beta, g)
    if q.shape != k.shape:
        raise ValueError(f"q must have k's shape {list(k.shape)}; got {list(q.shape)}")
    B, T, _, K = k.shape
    scale = K**-0.5 if scale is None else scale
    if use_qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    table = chunk_table(B, T, chunk_size, cu_seqlens, None, k.device)
    kc, vc, bc = _chunk_inputs(k, v, beta, table, H, HV)
    # Cumulated in chunk space, so rows past a partial chunk's end carry its last real G.
    Gc = torch.cumsum(_heads_first(_gather(g, table)), dim=-1) if g is not None else torch.zeros_like(bc)
    _, w, u = _intra(kc, vc, bc, Gc, gate_log2, method, precision, wu_precision, **options)
    qc = _heads_first(_gather(q, table), HV // H)             # [NT, HV, BT, K]
    qk = (qc @ kc.mT) * _decay(Gc, gate_log2, strict=False)   # [NT, HV, BT, BT]
    q_decay = qc * _exp(Gc, gate_log2)[..., None]
    G_last = Gc[..., -1:]                                     # padded rows carry the last real G
    k_decay = kc * _exp(G_last - Gc, gate_log2)[..., None]
    state_decay = _exp(G_last[..., 0], gate_log2)[..., None, None]

    o, S = _chunk_recurrence(w, u, q_decay, qk, k_decay, state_decay, table, initial_state, scale)
    out = _scatter(o.movedim(1, 2), table, B, T, v.dtype)
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
    H, HV = _check_gdn_inputs(k, v, beta, g)
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
