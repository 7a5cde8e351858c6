"""Kimi Delta Attention (KDA) chunked forward in plain PyTorch, with any registry inversion method.

KDA is Gated DeltaNet with a per-channel gate: ``g`` is ``[B, T, HV, K]`` instead of ``[B, T, HV]``.
Layout otherwise as :mod:`deltainv.kernels.gdn.pytorch` (``q, k``: ``[B, T, H, K]``; ``v``:
``[B, T, HV, V]``; ``beta``: ``[B, T, HV]``; HV a multiple of H; packed varlen batches with B = 1
and ``cu_seqlens``). ``g`` is a per-token, per-channel log-decay in natural-log units, or base 2
with ``gate_log2=True``.

Per chunk of BT tokens, with ``G`` the in-chunk cumulative gate ``[BT, K]`` and ``S`` the ``K x V``
state entering the chunk::

    A    = strictLower( beta_i sum_c k_ic k_jc exp(G_ic - G_jc) )
    T    = (I + A)^-1                                      # deltainv.kernels.invert(method, precision)
    W    = T (beta * exp(G) * K),   U = T (beta * V)
    V'   = U - W S
    Aqk  = lower( sum_c q_ic k_jc exp(G_ic - G_jc) )       # i >= j
    O    = scale * [ (Q * exp(G)) S + Aqk V' ]
    S   <- diag(exp(G_last)) S + (K * exp(G_last - G))^T V'

The pairwise per-channel decays are built from a ``[BT, BT, K]`` exponent, masked before ``exp``
(never the overflow-prone ``exp(G_i) exp(-G_j)`` factorisation), a few chunks at a time. Everything
is computed in fp32; ``wu_precision`` rounds the operands of the W/U products exactly as in
:mod:`deltainv.kernels.gdn.pytorch`.
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
    scatter,
)
from ..index import chunk_table
from ..precision import check_precision, matmul
from ..registry import Recipe, resolve
from ..tril.invert import invert

#: Elements of one ``[chunks, heads, BT, BT, K]`` decay slab (bounds the memory of the pairwise decays).
_SLAB = 1 << 24


def _check_kda_inputs(q, k, v, g, beta) -> tuple[int, int]:
    if k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"k must be [B, T, H, K] and v [B, T, HV, V]; got {list(k.shape)} and {list(v.shape)}")
    B, T, H, K = k.shape
    HV = v.shape[2]
    if q.shape != k.shape:
        raise ValueError(f"q must have k's shape {list(k.shape)}; got {list(q.shape)}")
    if v.shape[:2] != (B, T):
        raise ValueError(f"v {list(v.shape)} does not match k {list(k.shape)} in batch and length")
    if HV % H:
        raise ValueError(f"KDA: the {HV} value heads (v.shape[2]) are not a multiple of the {H} key heads "
                         f"(k.shape[2])")
    if beta.shape != (B, T, HV):
        raise ValueError(f"beta must be [B, T, HV] = {[B, T, HV]}; got {list(beta.shape)}")
    if g.dim() != 4:
        raise ValueError(f"KDA: g must have rank 4, [B, T, HV, K] = {[B, T, HV, K]} (one gate per channel; "
                         f"a rank-{g.dim()} gate {list(g.shape)} is Gated DeltaNet's per-head gate)")
    if g.shape != (B, T, HV, K):
        raise ValueError(f"g must be [B, T, HV, K] = {[B, T, HV, K]} (one gate per channel); got {list(g.shape)}")
    return H, HV


def _pairwise(left: torch.Tensor, right: torch.Tensor, G: torch.Tensor, log2: bool, strict: bool) -> torch.Tensor:
    """``M_ij = sum_c left_ic right_jc exp(G_ic - G_jc)`` on the lower triangle, 0 elsewhere.

    ``left, right, G``: ``[NT, HV, BT, K]`` -> ``[NT, HV, BT, BT]``.
    """
    NT, HV, BT, K = G.shape
    mask = torch.ones(BT, BT, dtype=torch.bool, device=G.device).tril(-1 if strict else 0)
    out = torch.zeros(NT, HV, BT, BT, dtype=torch.float32, device=G.device)
    step = max(1, _SLAB // max(1, HV * BT * BT * K))
    zero = torch.zeros((), dtype=G.dtype, device=G.device)
    for s in range(0, NT, step):
        e = slice(s, s + step)
        diff = G[e][..., :, None, :] - G[e][..., None, :, :]            # [n, HV, BT, BT, K]
        # Mask before exp: above the diagonal G_i - G_j >= 0 can overflow.
        decay = torch.where(mask[..., None], gate_exp(torch.where(mask[..., None], diff, zero), log2), zero)
        out[e] = torch.einsum("nhic,nhjc,nhijc->nhij", left[e], right[e], decay)
    return out


def check_intra_inputs(q, k, v, gk, beta) -> tuple[int, int]:
    """Shapes of the engines' KDA intra inputs: ``q, k`` ``[B, T, H, K]``, ``v`` ``[B, T, HV, V]`` (or None),
    ``gk`` ``[B, T, HV, K]``, ``beta`` ``[B, T, HV]``; returns ``(H, HV)``. Errors name the bad argument."""
    for name, x, rank in (("q", q, 4), ("k", k, 4), ("gk", gk, 4), ("beta", beta, 3)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"chunk_kda_fwd_intra: {name} must be a tensor; got {type(x).__name__}")
        if x.dim() != rank:
            raise ValueError(f"chunk_kda_fwd_intra: {name} must have rank {rank}; got shape {list(x.shape)}"
                             + (" (KDA's gate is per channel: [B, T, HV, K])" if name == "gk" else ""))
    B, T, H, K = k.shape
    HV = gk.shape[2]
    if q.shape != k.shape:
        raise ValueError(f"chunk_kda_fwd_intra: q must have k's shape {list(k.shape)}; got {list(q.shape)}")
    if HV % H:
        raise ValueError(f"chunk_kda_fwd_intra: the {HV} value heads (gk.shape[2]) are not a multiple of the "
                         f"{H} key heads (k.shape[2])")
    if gk.shape != (B, T, HV, K):
        raise ValueError(f"chunk_kda_fwd_intra: gk must be [B, T, HV, K] = {[B, T, HV, K]}; got {list(gk.shape)}")
    if beta.shape != (B, T, HV):
        raise ValueError(f"chunk_kda_fwd_intra: beta must be [B, T, HV] = {[B, T, HV]}; got {list(beta.shape)}")
    if v is not None and (v.dim() != 4 or v.shape[:3] != (B, T, HV)):
        raise ValueError(f"chunk_kda_fwd_intra: v must be [B, T, HV, V] with HV = {HV}; got {list(v.shape)}")
    return H, HV


def chunk_kda_fwd_intra(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor | None,
    gk: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int = 64,
    chunk_indices: torch.Tensor | None = None,
    *,
    gate_log2: bool = True,
    with_qg: bool = False,
    method: str | None = None,
    precision: str | None = None,
    wu_precision: str | None = None,
    **options,
) -> tuple[torch.Tensor | None, ...]:
    """KDA's intra step for every chunk: Akk, its inverse, Aqk, and (with ``v``) W, U, kg.

    Args:
        q, k: ``[B, T, H, K]``. v: ``[B, T, HV, V]`` or None (then ``w, u, qg, kg`` are None).
        gk: ``[B, T, HV, K]`` in-chunk *cumulative* per-channel gate (base 2 with ``gate_log2``,
            fla's and vLLM's convention; natural log otherwise). beta: ``[B, T, HV]``.
        scale: query scale folded into Aqk (default ``K ** -0.5``).
        cu_seqlens, chunk_indices: packed varlen batches (B = 1), as the engines pass them.
        with_qg: also return ``qg = q * exp(G)`` (fla's ``disable_recompute=True``).

    Returns:
        ``(w, u, qg, kg, Aqk, Akk)`` (fla 0.6.0's order), in the engines' dtypes:
        ``w = Akk (beta exp(G) k)`` ``[B, T, HV, K]`` and ``kg = k exp(G_last - G)`` in ``k.dtype`` (G_last:
        the chunk's last real token), ``u = Akk (beta v)`` in ``v.dtype``, ``Aqk = scale lower(sum_c q k
        exp(G_i - G_j))`` and ``Akk = (I + strictLower(beta_i sum_c k_i k_j exp(G_i - G_j)))^-1``,
        both ``[B, T, HV, BT]`` in ``k.dtype``.
    """
    H, HV = check_intra_inputs(q, k, v, gk, beta)
    B, T, _, K = k.shape
    scale = K**-0.5 if scale is None else scale
    table = chunk_table(B, T, chunk_size, cu_seqlens, chunk_indices, k.device)
    rep = HV // H
    kc = heads_first(gather(k, table), rep)                 # [NT, HV, BT, K]
    qc = heads_first(gather(q, table), rep)
    bc = heads_first(gather(beta, table))                   # [NT, HV, BT]
    # The already-summed gate padded with each chunk's last real value, never 0: with 0 a padded row
    # would compute exp(0 - G_j), inf once G_j < -88.7 (ln) or -128 (log2), and 0 * inf = NaN.
    Gc = heads_first(gather(gk, table, pad="edge"))         # [NT, HV, BT, K]
    A = bc[..., :, None] * _pairwise(kc, kc, Gc, gate_log2, strict=True)
    Ai = invert(A, method, precision, check_finite=False, **options)
    Aqk = scale * _pairwise(qc, kc, Gc, gate_log2, strict=False)

    def out(x, dtype):
        return scatter(x.movedim(1, 2), table, B, T, dtype)

    w = u = qg = kg = None
    if v is not None:
        vc = heads_first(gather(v, table))
        wu_precision = check_precision(default_wu_precision(k.dtype, wu_precision))
        w = out(matmul(Ai, kc * bc[..., None] * gate_exp(Gc, gate_log2), wu_precision), k.dtype)
        u = out(matmul(Ai, vc * bc[..., None], wu_precision), v.dtype)
        last = (table.valid.sum(1) - 1).clamp_min(0)          # [NT]: the last real row of each chunk
        G_last = Gc[torch.arange(Gc.shape[0], device=Gc.device), :, last][:, :, None, :]
        valid = table.valid[:, None, :, None]
        kg = out(torch.where(valid, kc * gate_exp(torch.where(valid, G_last - Gc, 0.0), gate_log2), 0.0), k.dtype)
        if with_qg:
            qg = out(qc * gate_exp(Gc, gate_log2), k.dtype)
    return w, u, qg, kg, out(Aqk, k.dtype), out(Ai, k.dtype)


def chunk_kda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
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
    """The whole chunked KDA forward (prefill).

    Args:
        q, k: ``[B, T, H, K]``. v: ``[B, T, HV, V]``. g: ``[B, T, HV, K]`` per-token, per-channel
            log-decay (not cumulated). beta: ``[B, T, HV]``.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, HV, K, V]`` (N = B, or the number of sequences with ``cu_seqlens``).
        output_final_state: also return the state after each sequence, ``[N, HV, K, V]`` fp32.
        chunk_size: 16, 32, 64 or 128.
        use_qk_l2norm: L2-normalise q and k (eps 1e-6) first.
        method, precision, options: the inversion (see :func:`deltainv.kernels.invert`; a
            :class:`~deltainv.kernels.registry.Recipe` as ``method`` is used as is).
        wu_precision: operand rounding of the W/U products (default ``tf32x3``: W and U stay
            fp32 here; see :mod:`deltainv.kernels.gdn.pytorch`).

    Returns:
        ``(o, final_state)``: ``o`` ``[B, T, HV, V]`` in ``v.dtype``; ``final_state`` or None.
    """
    recipe = resolve(method, precision, **options)
    # W and U never leave this function: they stay fp32, so the default operands are fp32-level.
    wu_precision = check_precision(wu_precision or FULL_WU_PRECISION)
    H, HV = _check_kda_inputs(q, k, v, g, beta)
    B, T, _, K = k.shape
    scale = K**-0.5 if scale is None else scale
    if use_qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    table = chunk_table(B, T, chunk_size, cu_seqlens, None, k.device)
    rep = HV // H
    kc = heads_first(gather(k, table), rep)                   # [NT, HV, BT, K]
    qc = heads_first(gather(q, table), rep)
    vc = heads_first(gather(v, table))                        # [NT, HV, BT, V]
    bc = heads_first(gather(beta, table))                     # [NT, HV, BT]
    # Cumulated in chunk space, so rows past a partial chunk's end carry its last real G (the
    # edge padding of deltainv.kernels.chunking): their decays stay finite, and k, beta are 0 there.
    Gc = torch.cumsum(heads_first(gather(g, table)), dim=2)   # [NT, HV, BT, K]

    A = bc[..., :, None] * _pairwise(kc, kc, Gc, gate_log2, strict=True)
    Ai = invert(A, recipe, backend="torch", check_finite=False)
    w = matmul(Ai, kc * bc[..., None] * gate_exp(Gc, gate_log2), wu_precision)
    u = matmul(Ai, vc * bc[..., None], wu_precision)
    qk = _pairwise(qc, kc, Gc, gate_log2, strict=False)
    q_decay = qc * gate_exp(Gc, gate_log2)
    G_last = Gc[..., -1:, :]                                  # [NT, HV, 1, K]
    k_decay = kc * gate_exp(G_last - Gc, gate_log2)
    state_decay = gate_exp(G_last, gate_log2).mT              # [NT, HV, K, 1]

    o, S = chunk_recurrence(w, u, q_decay, qk, k_decay, state_decay, table, initial_state, scale)
    out = scatter(o.movedim(1, 2), table, B, T, v.dtype)
    return out, (S if output_final_state else None)


def naive_recurrent_kda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    *,
    gate_log2: bool = False,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token KDA recurrence, the oracle (float64 by default). Same arguments as :func:`chunk_kda`.

    ``S_t = diag(exp(g_t)) S_{t-1} + k_t (beta_t (v_t - S^T k_t))^T`` with the decayed ``S``,
    ``o_t = scale S_t^T q_t``. Returns ``(o [B, T, HV, V], final_state [N, HV, K, V])`` in ``dtype``.
    """
    H, HV = _check_kda_inputs(q, k, v, g, beta)
    B, T, _, K = k.shape
    scale = K**-0.5 if scale is None else scale
    rep = HV // H
    q, k, v, beta, g = (x.to(dtype) for x in (q, k, v, beta, g))
    q, k = q.repeat_interleave(rep, 2), k.repeat_interleave(rep, 2)
    decay = torch.exp2(g) if gate_log2 else torch.exp(g)
    bounds = cu_seqlens.tolist() if cu_seqlens is not None else None
    seqs = [(b, 0, T) for b in range(B)] if bounds is None else [(0, s, e) for s, e in zip(bounds, bounds[1:])]
    o = torch.zeros(B, T, HV, v.shape[-1], dtype=dtype)
    finals = []
    for n, (b, s, e) in enumerate(seqs):
        S = (torch.zeros(HV, K, v.shape[-1], dtype=dtype) if initial_state is None
             else initial_state[n].to(dtype).clone())
        for t in range(s, e):
            S = S * decay[b, t][:, :, None]
            err = v[b, t] - torch.einsum("hk,hkv->hv", k[b, t], S)
            S = S + k[b, t][:, :, None] * (beta[b, t][:, None] * err)[:, None, :]
            o[b, t] = scale * torch.einsum("hk,hkv->hv", q[b, t], S)
        finals.append(S)
    return o, torch.stack(finals)


def recurrent_kda_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor,
    scale: float | None = None,
    *,
    use_qk_l2norm: bool = False,
    gate_log2: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decode step of KDA for N sequences at once (one token each), in fp32.

    ``q, k`` ``[N, H, K]``; ``v`` ``[N, HV, V]``; ``g`` ``[N, HV, K]`` (log-decay, not cumulated);
    ``beta`` ``[N, HV]``; ``state`` ``[N, HV, K, V]``. Computes, per sequence and head::

        S <- diag(exp(g)) S;   S <- S + k (beta (v - S^T k))^T;   o = scale S^T q

    (the recurrence of :func:`naive_recurrent_kda`). Returns ``(o [N, HV, V] fp32, new state
    [N, HV, K, V] fp32)``; ``state`` is not modified.
    """
    N, H, K = k.shape
    HV = v.shape[1]
    if HV % H:
        raise ValueError(f"recurrent_kda_step: value heads ({HV}) must be a multiple of key heads ({H})")
    if g.shape != (N, HV, K) or beta.shape != (N, HV) or state.shape != (N, HV, K, v.shape[-1]):
        raise ValueError(f"recurrent_kda_step: shapes q/k {tuple(k.shape)}, v {tuple(v.shape)}, g {tuple(g.shape)}, "
                         f"beta {tuple(beta.shape)}, state {tuple(state.shape)} do not match")
    scale = K**-0.5 if scale is None else scale
    q, k = q.float(), k.float()
    if use_qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    rep = HV // H
    q, k = q.repeat_interleave(rep, 1), k.repeat_interleave(rep, 1)
    S = state.float() * gate_exp(g.float(), gate_log2)[..., None]
    err = v.float() - torch.einsum("nhk,nhkv->nhv", k, S)
    S = S + k[..., None] * (beta.float()[..., None] * err)[..., None, :]
    o = scale * torch.einsum("nhk,nhkv->nhv", q, S)
    return o, S


__all__ = ["check_intra_inputs", "chunk_kda", "chunk_kda_fwd_intra", "naive_recurrent_kda", "recurrent_kda_step"]
