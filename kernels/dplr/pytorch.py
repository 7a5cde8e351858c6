"""The DPLR delta rule (RWKV-7's time mixing) chunked in plain PyTorch, with any registry inversion.

Contract of fla 0.6.0's ``chunk_dplr_delta_rule`` (and ``chunk_rwkv7``, which calls it with
``q = r``, ``gk = w``, ``scale = 1``): ``q, k, a, b, gk``: ``[B, T, H, K]``; ``v``: ``[B, T, H, V]``;
packed varlen batches have B = 1 and ``cu_seqlens``; states are ``[N, H, K, V]``. ``gk`` is the
per-token, per-channel *log* decay in natural-log units (fla's convention; RWKV-7 feeds
``w = -0.6065 sigmoid(.)``, so ``-0.6065 <= gk < 0``). The recurrence, ``K x V`` state::

    S_t = diag(exp(gk_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T,     o_t = scale S_t^T q_t

(RWKV-7: ``a = -kk``, ``b = kk * lr``). Per chunk of BT tokens, with ``Gi`` the inclusive and
``Ge = Gi - gk`` the exclusive in-chunk cumulative gate (``[BT, K]``) and ``S`` the entering state::

    A_ab = strictLower( sum_c a_ic b_jc exp(Ge_ic - Gi_jc) )     A_ak: the same with k for b
    A_qk = lower( sum_c q_ic k_jc exp(Gi_ic - Gi_jc) )           A_qb: the same with b for k
    T    = (I - A_ab)^-1 = (I + A)^-1, A = -A_ab                  # deltainv.kernels.invert
    W    = T (a * exp(Ge)),   U = (T A_ak) V                      # u_i = a_i^T S_{i-1} = U_i + W_i S
    u    = U + W S
    O    = scale [ (q * exp(Gi)) S + A_qk V + A_qb u ]
    S   <- diag(exp(Gi_last)) S + (k * exp(Gi_last - Gi))^T V + (b * exp(Gi_last - Gi))^T u

:func:`chunk_dplr_fwd_intra` is that intra-chunk step alone (``A_*``, the gated operands, ``T``, ``W``,
``U``) with fla 0.6.0's ``chunk_dplr_fwd_intra`` + ``prepare_wy_repr_fwd`` contract; the fused
Triton kernel (:mod:`deltainv.kernels.dplr.triton`) computes the same tuple, and
:func:`chunk_dplr_delta_rule` runs it when the backend is Triton.

fla writes the inverse as ``(I - A_ab)^-1``; the registry's convention is ``(I + A)^-1``, hence the
sign. All exponents above are <= 0 where they are used (masked before ``exp``), so no factorisation
can overflow. Element-wise work is fp32; ``wu_precision`` rounds the operands of the three W/U
products as in :mod:`deltainv.kernels.gdn.pytorch`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import backend as backends
from ..chunking import (
    FULL_WU_PRECISION,
    default_wu_precision,
    gate_exp,
    gather,
    heads_first,
    scatter,
    valid_heads_first,
)
from ..index import ChunkTable, chunk_table
from ..precision import check_precision, matmul
from ..registry import Recipe, resolve
from ..tril.invert import invert

#: fla's RWKV-7 gate lower bound, ``-exp(-0.5)``: ``w = -0.6065 * sigmoid(.)``.
RWKV7_LOWER_BOUND = -0.6065306597126334

#: Elements of one ``[chunks, heads, BT, BT, K]`` decay slab (bounds the memory of the pairwise decays).
_SLAB = 1 << 24


def check_dplr_inputs(q, k, v, a, b, gk) -> None:
    """Shapes of the DPLR inputs; raises ``ValueError`` naming the argument."""
    if k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"k must be [B, T, H, K] and v [B, T, H, V]; got {list(k.shape)} and {list(v.shape)}")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v {list(v.shape)} must be [B, T, H, V] with k's B, T, H {list(k.shape[:3])}")
    for name, x in (("q", q), ("a", a), ("b", b), ("gk", gk)):
        if x.shape != k.shape:
            raise ValueError(f"{name} must have k's shape [B, T, H, K] = {list(k.shape)}; got {list(x.shape)}")


def _pairwise(left_pairs, right_pairs, G_row, G_col, strict: bool, log2: bool = False):
    """``M_ij = sum_c left_ic right_jc exp(G_row_ic - G_col_jc)`` on the lower triangle, for several
    ``(left, right)`` pairs sharing one decay tensor. All ``[NT, H, BT, K]`` -> list of ``[NT, H, BT, BT]``."""
    NT, H, BT, K = G_row.shape
    mask = torch.ones(BT, BT, dtype=torch.bool, device=G_row.device).tril(-1 if strict else 0)[..., None]
    outs = [torch.zeros(NT, H, BT, BT, dtype=torch.float32, device=G_row.device) for _ in left_pairs]
    step = max(1, _SLAB // max(1, H * BT * BT * K))
    zero = torch.zeros((), dtype=G_row.dtype, device=G_row.device)
    for s in range(0, NT, step):
        e = slice(s, s + step)
        diff = G_row[e][..., :, None, :] - G_col[e][..., None, :, :]          # [n, H, BT, BT, K]
        # Mask before exp: above the diagonal the exponent is positive and can overflow.
        decay = torch.where(mask, gate_exp(torch.where(mask, diff, zero), log2), zero)
        for out, left, right in zip(outs, left_pairs, right_pairs):
            out[e] = torch.einsum("nhic,nhjc,nhijc->nhij", left[e], right[e], decay)
    return outs


def _intra_chunks(qc, kc, vc, ac, bc, Gi, Ge, scale: float, log2: bool, invert_fn, wu_precision: str):
    """The intra-chunk step in chunk space (all ``[NT, H, BT, D]`` fp32; ``Gi``/``Ge`` edge-padded).

    Returns fp32 ``(A_ab, A_qk, A_ak, A_qb, qg, kg, ag, bg, w, u, T)``, ``A_*`` ``[NT, H, BT, BT]``,
    with ``scale`` folded into ``A_qk``, ``A_qb`` and ``qg`` as fla does.
    """
    A_ab, A_ak = _pairwise((ac, ac), (bc, kc), Ge, Gi, strict=True, log2=log2)
    A_qk, A_qb = _pairwise((qc, qc), (kc, bc), Gi, Gi, strict=False, log2=log2)
    Ai = invert_fn(-A_ab)
    ag = ac * gate_exp(Ge, log2)
    w = matmul(Ai, ag, wu_precision)
    u = matmul(matmul(Ai, A_ak, wu_precision), vc, wu_precision)
    decay_last = gate_exp(Gi[..., -1:, :] - Gi, log2)          # padded rows carry the last real G
    qg = scale * qc * gate_exp(Gi, log2)
    return A_ab, scale * A_qk, A_ak, scale * A_qb, qg, kc * decay_last, ag, bc * decay_last, w, u, Ai


def _inverse_fn(recipe: Recipe | None, inverse):
    if inverse is not None:
        return inverse
    return lambda A: invert(A, recipe, backend="torch", check_finite=False)


def chunk_dplr_fwd_intra(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gi: torch.Tensor,
    ge: torch.Tensor,
    scale: float | None = None,
    chunk_size: int = 64,
    cu_seqlens: torch.Tensor | None = None,
    chunk_indices: torch.Tensor | None = None,
    *,
    gate_log2: bool = True,
    method: str | Recipe | None = None,
    precision: str | None = None,
    wu_precision: str | None = None,
    out_dtype: torch.dtype | None = None,
    **options,
) -> tuple[torch.Tensor, ...]:
    """The DPLR intra-chunk step: fla 0.6.0's ``chunk_dplr_fwd_intra`` then ``prepare_wy_repr_fwd``, in one call.

    Args:
        q, k, a, b: ``[B, T, H, K]``. v: ``[B, T, H, V]``.
        gi, ge: ``[B, T, H, K]`` the inclusive / exclusive in-chunk cumulative gates (fla's
            ``chunk_rwkv6_fwd_cumsum``), in log2 units (``gate_log2=True``, fla) or natural log.
        scale: query scale folded into ``A_qk``, ``A_qb``, ``qg`` (default ``K ** -0.5``).
        method, precision, options: the inversion (a :class:`~deltainv.kernels.registry.Recipe` is used as is).
        wu_precision: operand rounding of ``W = T ag``, ``T A_ak`` and ``U = (T A_ak) v`` (default by the
            dtype ``W`` is stored in, :func:`deltainv.kernels.chunking.default_wu_precision`: ``bf16`` for
            bf16, ``tf32`` for fp16, ``tf32x3`` for fp32).
        out_dtype: dtype of ``A_qk, A_qb, qg, kg, ag, bg, w`` (default ``q.dtype``, as fla).

    Returns:
        ``(A_ab, A_qk, A_ak, A_qb, qg, kg, ag, bg, w, u, A_ab_inv)``, fla's two tuples back to back, in
        the engine layout: ``A_ab``, ``A_ak``, ``A_ab_inv`` ``[B, T, H, BT]`` fp32 (``A_ab_inv =
        (I - A_ab)^-1``); ``A_qk, A_qb`` ``[B, T, H, BT]``, ``qg = scale q exp(gi)``, ``kg = k exp(gi_last - gi)``,
        ``ag = a exp(ge)``, ``bg = b exp(gi_last - gi)``, ``w = A_ab_inv ag`` (``[B, T, H, K]``) in
        ``out_dtype``; ``u = (A_ab_inv A_ak) v`` ``[B, T, H, V]`` in ``v.dtype``. Rows past the end of the
        input are not written (the layout has none); within a partial chunk, columns past the end are 0.
    """
    check_dplr_inputs(q, k, v, a, b, gi)
    if ge.shape != gi.shape:
        raise ValueError(f"ge must have gi's shape {list(gi.shape)}; got {list(ge.shape)}")
    recipe = resolve(method, precision, **options)
    out_dtype = q.dtype if out_dtype is None else out_dtype
    wu_precision = check_precision(default_wu_precision(out_dtype, wu_precision))
    B, T, H, K = k.shape
    scale = K**-0.5 if scale is None else scale
    table = chunk_table(B, T, chunk_size, cu_seqlens, chunk_indices, k.device)
    qc, kc, vc, ac, bc = (heads_first(gather(x, table)) for x in (q, k, v, a, b))
    Gi = heads_first(gather(gi, table, pad="edge"))
    # Padding rows take Gi's edge value for Ge too (a zero gate there, as a cumsum over the zero-padded
    # gate gives): Ge's own last value would exceed the padded columns' Gi and exp() could overflow.
    Ge = torch.where(valid_heads_first(table)[..., None], heads_first(gather(ge, table, pad="edge")), Gi)
    outs = _intra_chunks(qc, kc, vc, ac, bc, Gi, Ge, scale, gate_log2, _inverse_fn(recipe, None), wu_precision)
    dtypes = (torch.float32, out_dtype, torch.float32, out_dtype, out_dtype, out_dtype, out_dtype, out_dtype,
              out_dtype, v.dtype, torch.float32)
    return tuple(scatter(x.movedim(1, 2), table, B, T, dt) for x, dt in zip(outs, dtypes))


def _recurrence(w, u, vc, qg, A_qk, A_qb, kd, bd, state_decay, table: ChunkTable, initial_state, scale: float):
    """The state from chunk to chunk, every sequence at once (see the module docstring for the formula)."""
    N, H, K, Vd = table.num_seqs, vc.shape[1], w.shape[-1], vc.shape[-1]
    dev = vc.device
    if initial_state is None:
        S = torch.zeros(N, H, K, Vd, dtype=torch.float32, device=dev)
    else:
        if initial_state.shape != (N, H, K, Vd):
            raise ValueError(f"initial_state must be [N, H, K, V] = {[N, H, K, Vd]}; got {list(initial_state.shape)}")
        S = initial_state.float().clone()
    by_pos = torch.full((N, max(table.max_chunks, 1)), -1, dtype=torch.int64, device=dev)
    by_pos[table.seq, table.chunk] = torch.arange(table.seq.numel(), device=dev)
    o = torch.zeros_like(vc)
    for c in range(table.max_chunks):
        ids = by_pos[:, c]
        has = ids >= 0
        idx, seqs = ids[has], has.nonzero()[:, 0]
        Sc = S[seqs]
        un = u[idx] + w[idx] @ Sc
        o[idx] = scale * (qg[idx] @ Sc + A_qk[idx] @ vc[idx] + A_qb[idx] @ un)
        S[seqs] = state_decay[idx] * Sc + kd[idx].mT @ vc[idx] + bd[idx].mT @ un
    return o, S


def chunk_dplr_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gk: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    cu_seqlens_cpu: torch.Tensor | None = None,
    safe_gate: bool = False,
    chunk_size: int | None = 64,
    *,
    lower_bound: float | None = None,
    method: str | Recipe | None = None,
    precision: str | None = None,
    wu_precision: str | None = None,
    inverse: Callable[[torch.Tensor], torch.Tensor] | None = None,
    backend: str = "auto",
    **options,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The whole chunked DPLR forward (prefill), fla's ``chunk_dplr_delta_rule`` contract.

    Args:
        q, k, a, b: ``[B, T, H, K]``. v: ``[B, T, H, V]``. gk: ``[B, T, H, K]`` per-token,
            per-channel log-decay (natural log, not cumulated).
        scale: query scale, default ``K ** -0.5`` (``chunk_rwkv7`` passes 1).
        initial_state: ``[N, H, K, V]`` (N = B, or the number of sequences with ``cu_seqlens``).
        output_final_state: also return the state after each sequence, ``[N, H, K, V]`` fp32.
        cu_seqlens_cpu: accepted for fla compatibility (unused: the chunk table is built on the host).
        chunk_size: 16, 32, 64 or 128 (None: 64).
        safe_gate, lower_bound: accepted for fla compatibility; this path needs neither (its decays
            are never factorised over a chunk). A ``lower_bound`` must be negative, as in fla.
        method, precision, options: the inversion (a registry name and its options, or a
            :class:`~deltainv.kernels.registry.Recipe` from :func:`~deltainv.kernels.registry.resolve`).
        wu_precision: operand rounding of the W/U products (default ``tf32x3``: W and U stay
            fp32 here).
        inverse: a study hook replacing the registry, ``A [..., BT, BT] -> (I + A)^-1`` (e.g.
            :func:`deltainv.kernels.dplr.fla_recipe.fla_fp16_inverse`); excludes ``method``; PyTorch only.
        backend: who runs the intra-chunk step (:func:`deltainv.kernels.backend.choose`): ``auto``
            (the fused Triton kernel on CUDA where it can run, else PyTorch), ``torch`` or ``triton``.
            The chunk-to-chunk recurrence is PyTorch either way.

    Returns:
        ``(o, final_state)``: ``o`` ``[B, T, H, V]`` in ``v.dtype``; ``final_state`` or None.
    """
    del safe_gate, cu_seqlens_cpu
    chunk_size = 64 if chunk_size is None else chunk_size
    check_dplr_inputs(q, k, v, a, b, gk)
    if lower_bound is not None and lower_bound >= 0:
        raise ValueError(f"lower_bound must be negative (gk is a log-decay < 0); got {lower_bound}")
    if inverse is not None and (method is not None or precision is not None or options):
        raise ValueError("pass either inverse= or method/precision/options, not both")
    recipe = resolve(method, precision, **options) if inverse is None else None   # validated once, up front
    if inverse is not None:
        if backends.check_choice(backend) == "triton":
            raise ValueError("inverse= is a PyTorch study hook; it cannot run with backend='triton'")
        backend = "torch"
    # W and U never leave this function: they stay fp32, so the default operands are fp32-level.
    wu_precision = check_precision(wu_precision or FULL_WU_PRECISION)
    use_triton = recipe is not None and backends.choose(recipe, k.device, backend) == "triton"
    B, T, H, K = k.shape
    scale = K**-0.5 if scale is None else scale
    table = chunk_table(B, T, chunk_size, cu_seqlens, None, k.device)
    # Cumulated in chunk space, so rows past a partial chunk's end carry its last real G.
    gc = gather(gk, table)
    Gi = torch.cumsum(gc, dim=1)                                    # [NT, BT, H, K]
    if use_triton:
        from .triton import chunk_dplr_fwd_intra as fused

        gi = scatter(Gi, table, B, T, torch.float32)
        ge = scatter(Gi - gc, table, B, T, torch.float32)
        outs = fused(q, k, v, a, b, gi, ge, scale, chunk_size, cu_seqlens, gate_log2=False, recipe=recipe,
                     wu_precision=wu_precision, out_dtype=torch.float32, store_a=False)
        _, A_qk, _, A_qb, qg, kd, _, bd, w, u, _ = (None if x is None else heads_first(gather(x, table))
                                                      for x in outs)
        vc = heads_first(gather(v, table))
    else:
        qc, kc, vc, ac, bc = (heads_first(gather(x, table)) for x in (q, k, v, a, b))
        Gi_h = heads_first(Gi)
        _, A_qk, _, A_qb, qg, kd, _, bd, w, u, _ = _intra_chunks(
            qc, kc, vc, ac, bc, Gi_h, Gi_h - heads_first(gc), scale, False, _inverse_fn(recipe, inverse), wu_precision)
    state_decay = torch.exp(heads_first(Gi)[..., -1:, :]).mT      # [NT, H, K, 1]
    o, S = _recurrence(w, u, vc, qg, A_qk, A_qb, kd, bd, state_decay, table, initial_state, 1.0)
    out = scatter(o.movedim(1, 2), table, B, T, v.dtype)
    return out, (S if output_final_state else None)


def chunk_rwkv7(
    r: torch.Tensor,
    w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    cu_seqlens_cpu: torch.Tensor | None = None,
    safe_gate: bool = False,
    chunk_size: int | None = 64,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """fla's ``chunk_rwkv7``: :func:`chunk_dplr_delta_rule` with ``q = r``, ``gk = w``, ``scale = 1``.

    RWKV-7 passes ``a = -kk`` and ``b = kk * lr``. Keyword arguments (``method``, ``precision``,
    ``safe_gate``, ``lower_bound``, ...) go to :func:`chunk_dplr_delta_rule`.
    """
    return chunk_dplr_delta_rule(r, k, v, a, b, w, scale, initial_state, output_final_state, cu_seqlens,
                                 cu_seqlens_cpu, safe_gate, chunk_size, **kwargs)


def recurrent_dplr_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gk: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    *,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token DPLR recurrence in ``dtype``: the float64 oracle, and (fp32) the decode step.

    ``S_t = diag(exp(gk_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T``, ``o_t = scale S_t^T q_t``.
    Same arguments as :func:`chunk_dplr_delta_rule`. Returns ``(o [B, T, H, V], final_state
    [N, H, K, V])``, both in ``dtype``.
    """
    check_dplr_inputs(q, k, v, a, b, gk)
    B, T, H, K = k.shape
    Vd = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    q, k, v, a, b, gk = (x.to(dtype) for x in (q, k, v, a, b, gk))
    decay = torch.exp(gk)
    bounds = cu_seqlens.tolist() if cu_seqlens is not None else None
    seqs = [(n, 0, T) for n in range(B)] if bounds is None else [(0, s, e) for s, e in zip(bounds, bounds[1:])]
    if initial_state is not None and initial_state.shape != (len(seqs), H, K, Vd):
        raise ValueError(f"initial_state must be [N, H, K, V] = {[len(seqs), H, K, Vd]}; "
                         f"got {list(initial_state.shape)}")
    o = torch.zeros(B, T, H, Vd, dtype=dtype, device=v.device)
    if bounds is None:
        # A batch of sequences of equal length (e.g. an engine's decode step, T = 1): all at once.
        S = (torch.zeros(B, H, K, Vd, dtype=dtype, device=v.device) if initial_state is None
             else initial_state.to(dtype).clone())
        for t in range(T):
            aS = torch.einsum("bhk,bhkv->bhv", a[:, t], S)
            S = decay[:, t, :, :, None] * S + b[:, t, :, :, None] * aS[:, :, None, :] \
                + k[:, t, :, :, None] * v[:, t, :, None, :]
            o[:, t] = scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S)
        return o, S
    finals = []
    for n, (bi, s, e) in enumerate(seqs):
        S = (torch.zeros(H, K, Vd, dtype=dtype, device=v.device) if initial_state is None
             else initial_state[n].to(dtype).clone())
        for t in range(s, e):
            aS = torch.einsum("hk,hkv->hv", a[bi, t], S)
            S = decay[bi, t][:, :, None] * S + b[bi, t][:, :, None] * aS[:, None, :] \
                + k[bi, t][:, :, None] * v[bi, t][:, None, :]
            o[bi, t] = scale * torch.einsum("hk,hkv->hv", q[bi, t], S)
        finals.append(S)
    return o, torch.stack(finals)


__all__ = [
    "RWKV7_LOWER_BOUND",
    "check_dplr_inputs",
    "chunk_dplr_delta_rule",
    "chunk_dplr_fwd_intra",
    "chunk_rwkv7",
    "recurrent_dplr_delta_rule",
]
