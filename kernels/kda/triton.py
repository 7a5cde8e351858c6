"""Fused KDA intra-chunk Triton kernel: ``Aqk``, ``Akk -> (I + Akk)^-1 -> W, U, kg`` with the inverse in registers.

Kimi Delta Attention's intra step is Gated DeltaNet's with a per-channel gate ``G`` ``[BT, K]``::

    Akk = strictLower( beta_i sum_c k_ic k_jc exp(G_ic - G_jc) ),   T = (I + Akk)^-1
    Aqk = scale * lower( sum_c q_ic k_jc exp(G_ic - G_jc) )
    W = T (beta exp(G) k),   U = T (beta v),   kg = k exp(G_last - G),   qg = q exp(G)

Each program takes NC (chunk, value head) items, one chunk per warp (the batched ``[NC, 16, 16]``
tiles of :mod:`deltainv.kernels.triton_tiles`); value head ``hv`` reads key head ``hv // (HV / H)``.
Unlike GDN, ``K K^T`` cannot be shared by a key head's value heads: the decay is per value head.

**The per-channel exponent.** ``exp(G_i) exp(-G_j)`` over a chunk overflows (``G`` falls by the
whole chunk's gate). Every pair ``(i, j)`` is instead split at a *reference row* ``r`` with
``j <= r <= i``: ``exp(G_i - G_r) * exp(G_r - G_j)``, two factors that are at most 1 for non-positive
gates, whatever their size, so they neither overflow nor lose what the exact value keeps (when a
factor underflows, the exact product is smaller still). The reference cancels exactly, so it only
needs to lie between the two rows:

- off-diagonal 16x16 tiles ``(I, J)``, ``J < I``: ``r`` = the first row of tile ``I`` (as fla does);
- diagonal tiles: the strictly lower triangle is the disjoint union of the blocks that the levels
  ``s = 8, 4, 2, 1`` of a doubling join (row block ``2p + 1`` against column block ``2p`` of the
  ``s``-blocks, :func:`~deltainv.kernels.triton_tiles.band`). At level ``s`` the pair's reference is
  the first row of the row's ``s``-block, the same row for the row and the column side, so one
  factor tensor ``k * exp(+-(G - G_r))`` serves both sides of a masked product. Aqk adds ``i = j``
  (decay 1): ``sum_c q_ic k_ic``, an fp32 row sum (no product, no transposed operand).

Rows past a partial chunk's end read the gate of the chunk's last real row (edge padding, as the
PyTorch reference does) and zero data, so no exponent is ever large and no value is ever non-finite.

Schedule: row tile by row tile, ``Aqk``'s and ``Akk``'s tiles of the row come from one pass over K
(a runtime loop over K slices; the row's decayed q and k share their exponent), ``Aqk``'s row is stored
at once, ``Akk``'s is scaled by beta and kept; then the shared
:func:`~deltainv.kernels.tril.tiled.invert_tiles` and, behind a barrier, W/U (beta re-read). Every tile
is addressed as a chunk pointer plus int32 lane offsets plus constants
(:func:`~deltainv.kernels.triton_tiles.lanes`). Products:
the decayed tiles in ``A_PREC`` (``tf32``, fla's, for 16-bit outputs; ``tf32x3``, the fp32
reference's numbers, for fp32), W/U in ``WU_PREC``. ``Akk`` is written only when asked (``store_a``); every written element is written
exactly once (zeros above the diagonal), so no output needs a zero-fill.
Contract: :func:`deltainv.kernels.kda.pytorch.chunk_kda_fwd_intra`.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from ..chunking import default_wu_precision
from ..index import launch_chunks
from ..precision import check_precision
from ..registry import Recipe, resolve
from ..triton_tiles import band, col_mask, dot, exp_base, lanes, log2, pow2, prep, put, row_vector, tri, zeros
from ..tril.invert import check_chunk_size
from ..tril.tiled import invert_tiles
from ..tril.triton import TRITON_METHODS, autotune_configs, chunk_items, prune_configs, row_mask
from .pytorch import check_intra_inputs

#: Largest chunk size of the fused kernel (fla's and the engines' KDA intra take 32 and 64).
MAX_CHUNK = 64
#: Precisions of the decayed ``Akk`` / ``Aqk`` products.
A_PRECISIONS = ("tf32x3", "tf32", "fp32")
#: Their default by the dtype ``Aqk``/``Akk`` are stored in (``k``'s), the rule of
#: :func:`deltainv.kernels.chunking.default_wu_precision`: the cheapest operands whose rounding is no
#: coarser than that storage. 16-bit outputs get tf32 (fla's products; 2^-11 per operand against
#: bf16's 2^-9; at BT=64, d 128, sm_90 40.4k warp-instructions per chunk against 64.8k for tf32x3,
#: bench/compile_time), fp32 outputs tf32x3 (the fp32 reference's numbers).
A_PRECISION_BY_DTYPE = {torch.bfloat16: "tf32", torch.float16: "tf32"}
FULL_A_PRECISION = "tf32x3"
DEFAULT_A_PRECISION = A_PRECISION_BY_DTYPE[torch.bfloat16]  # what bf16 models run


def default_a_precision(dtype: torch.dtype, a_precision: str | None = None) -> str:
    """``a_precision`` if given (validated), else the default for ``Aqk``/``Akk`` stored in ``dtype``."""
    a = A_PRECISION_BY_DTYPE.get(dtype, FULL_A_PRECISION) if a_precision is None else a_precision
    if a not in A_PRECISIONS:
        raise ValueError(f"a_precision must be one of {', '.join(A_PRECISIONS)}; got {a!r}")
    return a




@triton.jit
def _gate(gp, rows, n_rows, col0, STRIDE: tl.constexpr, WIDTH: tl.constexpr, NCOLS: tl.constexpr):
    """The gate at chunk rows ``rows`` (``[1 or NC, S]``, clamped to the chunk's last real row: edge
    padding) and columns ``col0 ..``: ``[NC, S, WIDTH]`` fp32 (0 for dead items). ``gp``: ``[NC, 1, 1]``
    pointers to the chunks' first gate elements (int32 offsets from them, as :func:`lanes`)."""
    c = col0 + tl.arange(0, WIDTH)
    r = tl.minimum(rows, tl.maximum(n_rows - 1, 0)[:, None])
    return tl.load(gp + (r[:, :, None] * STRIDE + c[None, None, :]),
                   mask=(n_rows > 0)[:, None, None] & (c < NCOLS)[None, None, :], other=0.0)




@triton.jit
def _t(x):
    return tl.permute(x, (0, 2, 1))


@triton.jit
def _t_parts(x):
    """:func:`_t` of each part of an operand from :func:`~deltainv.kernels.triton_tiles.prep`."""
    out = ()
    for n in tl.static_range(len(x)):
        out = out + (_t(x[n]),)
    return out


@triton.jit
def _row_tiles(qp, kp, gp, n_rows, I: tl.constexpr, NC: tl.constexpr, S: tl.constexpr, K: tl.constexpr,
               BK: tl.constexpr, QK_STRIDE: tl.constexpr, G_STRIDE: tl.constexpr, GATE_LOG2: tl.constexpr,
               A_PREC: tl.constexpr):
    """Tiles ``(I, J)``, ``J <= I``, of ``P = lower(q k^T decay)`` (``i >= j``) and ``Q = strictLower(k k^T
    decay)``, ``decay_ij = exp(G_i - G_j)`` per channel; 0 on rows past the end. Accumulated over K in
    BK-wide slices; the row tile's decayed q and k serve both (one exponent, one load, per element).
    ``qp``, ``kp``, ``gp``: ``[NC, 1, 1]`` chunk pointers.

    Row by row, only ``2 (I + 1)`` accumulators are live, and ``P``'s row is stored before the next
    one starts; the earlier row tiles' k and gate are re-read (from cache) instead of kept. The slices
    are a runtime loop (as the fused GDN kernel's K K^T): unrolled, ptxas could issue every slice's
    loads and exponents ahead of the products, beside the accumulators and the kept ``Akk`` rows.
    """
    o = tl.arange(0, S)
    lane = lanes(QK_STRIDE, S, BK)
    P = ()
    Q = ()
    for j in tl.static_range(I + 1):
        P = P + (zeros(NC, S),)
        Q = Q + (zeros(NC, S),)
    d = tl.zeros((NC, S), dtype=tl.float32)  # Aqk's diagonal (decay 1): fp32 row sums, added after the loop
    for c in range(0, K, BK):
        cm = col_mask(c, BK, K)
        m = row_mask(n_rows, I, S) & cm
        qi = tl.load(qp + (I * S * QK_STRIDE + c) + lane, mask=m, other=0.0).to(tl.float32)
        ki = tl.load(kp + (I * S * QK_STRIDE + c) + lane, mask=m, other=0.0).to(tl.float32)
        gi = _gate(gp, (I * S + o)[None, :], n_rows, c, G_STRIDE, BK, K)
        if I > 0:  # off-diagonal tiles: reference = the first row of row tile I
            gr = _gate(gp, tl.full((1, 1), I * S, tl.int32), n_rows, c, G_STRIDE, BK, K)
            e = exp_base(gi - gr, GATE_LOG2)
            ql = prep(qi * e, A_PREC)
            kl = prep(ki * e, A_PREC)
            for j in tl.static_range(I):
                kj = tl.load(kp + (j * S * QK_STRIDE + c) + lane, mask=row_mask(n_rows, j, S) & cm,
                             other=0.0).to(tl.float32)
                gj = _gate(gp, (j * S + o)[None, :], n_rows, c, G_STRIDE, BK, K)
                r = prep(_t(kj * exp_base(gr - gj, GATE_LOG2)), A_PREC)
                P = put(P, j, dot(ql, r, P[j], A_PREC))
                Q = put(Q, j, dot(kl, r, Q[j], A_PREC))
        # diagonal tile: level s joins row s-block 2p+1 with column s-block 2p at the row block's first row
        d += tl.sum(qi * ki, axis=2)  # its i = j entries (decay 1)
        dp = P[I]
        dq = Q[I]
        for n in tl.static_range(log2(S)):  # s = pow2(n) (inline: a name bound here would become a tensor)
            ref = (o // (2 * pow2(n))) * (2 * pow2(n)) + pow2(n)
            gr = _gate(gp, (I * S + ref)[None, :], n_rows, c, G_STRIDE, BK, K)
            lower = ((o // pow2(n)) % 2 == 1)[None, :, None]  # row side: G_i <= G_r; column side: G_r <= G_j
            e = exp_base(tl.where(lower, gi - gr, gr - gi), GATE_LOG2)
            ke = prep(ki * e, A_PREC)
            r = _t_parts(ke)  # rounded once, transposed: the same operand as prep(_t(ki * e))
            dp += band(dot(prep(qi * e, A_PREC), r, zeros(NC, S), A_PREC), S, pow2(n))
            dq += band(dot(ke, r, zeros(NC, S), A_PREC), S, pow2(n))
        P = put(P, I, dp)
        Q = put(Q, I, dq)
    # one move of the row sums into the tile layout per row tile, not per slice
    P = put(P, I, P[I] + tl.where((o[:, None] == o[None, :])[None, :, :], d[:, :, None], 0.0))
    return P, Q


@triton.jit
def _store_tiles(X, ap, n_rows, ROW_STRIDE: tl.constexpr, NC: tl.constexpr, S: tl.constexpr, NB: tl.constexpr):
    """Every ``[S, S]`` tile of the chunks' real rows (``ap``: ``[NC, 1, 1]`` chunk pointers), ``X`` on
    and below the diagonal, zeros above."""
    lane = lanes(ROW_STRIDE, S, S)
    for i in tl.static_range(NB):
        for j in tl.static_range(NB):
            if j <= i:
                x = X[tri(i, j)]
            else:
                x = zeros(NC, S)
            tl.store(ap + (i * S * ROW_STRIDE + j * S) + lane, x.to(ap.dtype.element_ty, fp_downcast_rounding="rtne"),
                     mask=row_mask(n_rows, i, S))


@triton.jit
def _store_row(P, ap, scale, n_rows, I: tl.constexpr, ROW_STRIDE: tl.constexpr, NC: tl.constexpr, S: tl.constexpr,
               NB: tl.constexpr):
    """``Aqk``'s row tile ``I``: ``scale * P`` on and below the diagonal, zeros above, written once, now."""
    lane = lanes(ROW_STRIDE, S, S)
    for j in tl.static_range(NB):
        if j <= I:
            x = P[j] * scale
        else:
            x = zeros(NC, S)
        tl.store(ap + (I * S * ROW_STRIDE + j * S) + lane, x.to(ap.dtype.element_ty, fp_downcast_rounding="rtne"),
                 mask=row_mask(n_rows, I, S))


@triton.autotune(configs=autotune_configs(), key=["H", "HV", "K", "V", "BT", "IS_VARLEN", "GATE_LOG2", "HAS_V",
                                                "STORE_A", "STORE_QG", "A_PREC", "METHOD", "PREC", "BASE_PREC",
                                                "REFINE_PREC", "WU_PREC"],
                 prune_configs_by={"early_config_prune": prune_configs})
@triton.jit(do_not_specialize=["T", "n_items"])
def kda_intra_kernel(q, k, v, g, beta, w, u, qg, kg, Aqk, Akk, scale, cu_seqlens, chunk_indices, T, n_items,
                     H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BKA: tl.constexpr,
                     BK: tl.constexpr, BV: tl.constexpr, BT: tl.constexpr, IS_VARLEN: tl.constexpr,
                     GATE_LOG2: tl.constexpr, HAS_V: tl.constexpr, STORE_A: tl.constexpr, STORE_QG: tl.constexpr,
                     A_PREC: tl.constexpr, METHOD: tl.constexpr, PREC: tl.constexpr, BASE_PREC: tl.constexpr,
                     REFINE_PREC: tl.constexpr, WU_PREC: tl.constexpr, NC: tl.constexpr):
    """``Aqk``, and with ``v`` ``(w, u, kg[, qg])``, and ``Akk`` if asked, for NC (chunk, value head) items."""
    S: tl.constexpr = 16
    NB: tl.constexpr = BT // S
    row0, n_rows, hv = chunk_items(cu_seqlens, chunk_indices, T, n_items, HV, BT, NC, IS_VARLEN)
    kh = hv // (HV // H)
    # Tiles are addressed as chunk pointer + int32 lane offsets + compile-time constants (lanes).
    qk_base = tl.multiple_of((row0 * H + kh) * K, 16)
    qp = (q + qk_base)[:, None, None]
    kp = (k + qk_base)[:, None, None]
    gp = (g + tl.multiple_of((row0 * HV + hv) * K, 16))[:, None, None]
    a_base = tl.multiple_of((row0 * HV + hv) * BT, 16)
    o = tl.arange(0, S)
    L = ()
    for i in tl.static_range(NB):
        P, Q = _row_tiles(qp, kp, gp, n_rows, i, NC, S, K, BKA, H * K, HV * K, GATE_LOG2, A_PREC)
        _store_row(P, (Aqk + a_base)[:, None, None], scale, n_rows, i, HV * BT, NC, S, NB)
        bi = row_vector(beta, row0, n_rows, HV, hv, i, S)
        for j in tl.static_range(i + 1):
            L = L + (Q[j] * bi,)
    X = invert_tiles(L, NC, S, NB, METHOD, PREC, BASE_PREC, REFINE_PREC)
    if STORE_A:
        _store_tiles(X, (Akk + a_base)[:, None, None], n_rows, HV * BT, NC, S, NB)
    if HAS_V:
        # The barrier keeps ptxas from hoisting W/U's loads (keys, gates, values, the re-read beta) into
        # the inversion, whose registers are full (as the fused GDN kernel).
        tl.debug_barrier()
        XP = ()
        b = ()
        for i in tl.static_range(NB):
            for j in tl.static_range(i + 1):
                XP = XP + (prep(X[tri(i, j)], WU_PREC),)
            b = b + (row_vector(beta, row0, n_rows, HV, hv, i, S),)  # re-read, not kept through the inverse
        wk_base = tl.multiple_of((row0 * HV + hv) * K, 16)
        wp = (w + wk_base)[:, None, None]
        kgp = (kg + wk_base)[:, None, None]
        kl = lanes(H * K, S, BK)
        wl = lanes(HV * K, S, BK)
        # W = T (beta exp(G) k), kg = k exp(G_last - G), qg = q exp(G): one pass over K
        for c in tl.static_range(0, K, BK):
            cm = col_mask(c, BK, K)
            glast = _gate(gp, tl.full((1, 1), BT, tl.int32), n_rows, c, HV * K, BK, K)
            s = ()
            for j in tl.static_range(NB):
                m = row_mask(n_rows, j, S) & cm
                kj = tl.load(kp + (j * S * H * K + c) + kl, mask=m, other=0.0).to(tl.float32)
                gj = _gate(gp, (j * S + o)[None, :], n_rows, c, HV * K, BK, K)
                s = s + (prep(kj * b[j] * exp_base(gj, GATE_LOG2), WU_PREC),)
                tl.store(kgp + (j * S * HV * K + c) + wl,
                         (kj * exp_base(glast - gj, GATE_LOG2)).to(kg.dtype.element_ty, fp_downcast_rounding="rtne"),
                         mask=m)
                if STORE_QG:
                    qj = tl.load(qp + (j * S * H * K + c) + kl, mask=m, other=0.0).to(tl.float32)
                    tl.store((qg + wk_base)[:, None, None] + (j * S * HV * K + c) + wl,
                             (qj * exp_base(gj, GATE_LOG2)).to(qg.dtype.element_ty, fp_downcast_rounding="rtne"),
                             mask=m)
            for i in tl.static_range(NB):
                acc = tl.zeros((NC, S, BK), dtype=tl.float32)
                for j in tl.static_range(i + 1):
                    acc = dot(XP[tri(i, j)], s[j], acc, WU_PREC)
                tl.store(wp + (i * S * HV * K + c) + wl, acc.to(w.dtype.element_ty, fp_downcast_rounding="rtne"),
                         mask=row_mask(n_rows, i, S) & cm)
        # U = T (beta v)
        v_base = tl.multiple_of((row0 * HV + hv) * V, 16)
        vp = (v + v_base)[:, None, None]
        up = (u + v_base)[:, None, None]
        vl = lanes(HV * V, S, BV)
        for c in tl.static_range(0, V, BV):
            cm = col_mask(c, BV, V)
            s = ()
            for j in tl.static_range(NB):
                x = tl.load(vp + (j * S * HV * V + c) + vl, mask=row_mask(n_rows, j, S) & cm, other=0.0).to(tl.float32)
                s = s + (prep(x * b[j], WU_PREC),)
            for i in tl.static_range(NB):
                acc = tl.zeros((NC, S, BV), dtype=tl.float32)
                for j in tl.static_range(i + 1):
                    acc = dot(XP[tri(i, j)], s[j], acc, WU_PREC)
                tl.store(up + (i * S * HV * V + c) + vl, acc.to(u.dtype.element_ty, fp_downcast_rounding="rtne"),
                         mask=row_mask(n_rows, i, S) & cm)


def _block(n: int) -> int:
    """Column slice of K / V per step (32 wide, as the fused GDN kernel: keeps the slices' registers
    from pushing the live tiles into local memory)."""
    return max(16, min(32, 1 << (n - 1).bit_length()))


def _a_block(n: int) -> int:
    """Column slice of the decayed ``Akk``/``Aqk`` products: 32 wide. At BT=64, d 128, sm_90, 2 chunks per
    program, in the runtime slice loop (measured before the fp32 diagonal): 41.3k warp-instructions per
    chunk and 1.5 KB of spills; 16 wide: 42.4k and 0.2 KB. Unrolled (64-bit offsets): 41.3k and 4.0 KB."""
    return max(16, min(32, 1 << (n - 1).bit_length()))


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
    method: str | Recipe | None = None,
    precision: str | None = None,
    recipe: Recipe | None = None,
    wu_precision: str | None = None,
    a_precision: str | None = None,
    store_a: bool = True,
    out: dict[str, torch.Tensor] | None = None,
    **options: Any,
) -> tuple[torch.Tensor | None, ...]:
    """Fused ``(w, u, qg, kg, Aqk, Akk)``; the contract of :func:`deltainv.kernels.kda.pytorch.chunk_kda_fwd_intra`.

    ``recipe`` (or ``method``/``precision``/``options``, resolved here) chooses the inversion;
    ``a_precision`` the decayed ``Akk``/``Aqk`` products (``tf32``, fla's, for 16-bit
    inputs; ``tf32x3`` for fp32; or ``fp32``: :func:`default_a_precision`); ``wu_precision`` the W/U products (default: by the dtype W is stored in, as the
    reference, :func:`deltainv.kernels.chunking.default_wu_precision`). ``store_a=False`` never writes ``Akk`` (returned as
    None). With ``v=None`` only ``(Aqk, Akk)`` are computed (vLLM's contract); ``w, u, qg, kg`` are None.
    ``out`` may hold preallocated contiguous outputs by name (``w, u, qg, kg, Aqk, Akk``).
    With ``chunk_indices`` given there is no device-to-host sync.
    """
    recipe = recipe if recipe is not None else resolve(method, precision, **options)
    if recipe.name not in TRITON_METHODS:
        raise ValueError(f"method {recipe.name!r} has no fused Triton KDA kernel (have: {', '.join(TRITON_METHODS)})")
    H, HV = check_intra_inputs(q, k, v, gk, beta)
    B, T, _, K = k.shape
    BT = check_chunk_size(chunk_size)
    if BT > MAX_CHUNK:
        raise ValueError(f"the fused KDA kernel supports chunk sizes up to {MAX_CHUNK} (the engines use 64); "
                         f"got {BT}: use backend='torch' for it")
    a_prec = default_a_precision(k.dtype, a_precision)
    wu = check_precision(default_wu_precision(k.dtype, wu_precision))
    scale = K**-0.5 if scale is None else float(scale)
    q, k, gk, beta = q.contiguous(), k.contiguous(), gk.contiguous(), beta.contiguous()
    V = 0
    if v is not None:
        v = v.contiguous()
        V = v.shape[-1]
    chunk_indices, n_chunks = launch_chunks(cu_seqlens, chunk_indices, T, B, BT)
    shapes = {"w": ((B, T, HV, K), k.dtype), "u": ((B, T, HV, V), v.dtype if v is not None else None),
              "qg": ((B, T, HV, K), k.dtype), "kg": ((B, T, HV, K), k.dtype),
              "Aqk": ((B, T, HV, BT), k.dtype), "Akk": ((B, T, HV, BT), k.dtype)}
    wanted = ["Aqk"] + (["Akk"] if store_a else []) + (["w", "u", "kg"] + (["qg"] if with_qg else []) if v is not None
                                                       else [])
    out = dict(out or {})
    res: dict[str, torch.Tensor | None] = dict.fromkeys(shapes)
    for name in wanted:
        shape, dtype = shapes[name]
        t = out.get(name)
        if t is None:
            t = torch.empty(shape, dtype=dtype, device=k.device)
        elif tuple(t.shape) != shape or not t.is_contiguous():
            raise ValueError(f"out[{name!r}] must be contiguous with shape {list(shape)}; got {list(t.shape)}")
        res[name] = t
    n_items = n_chunks * HV
    if n_items:
        kda_intra_kernel[lambda meta: (triton.cdiv(n_items, meta["NC"]),)](
            q, k, v, gk, beta, res["w"], res["u"], res["qg"], res["kg"], res["Aqk"], res["Akk"], scale,
            cu_seqlens, chunk_indices, T, n_items,
            H=H, HV=HV, K=K, V=V, BKA=_a_block(K), BK=_block(K), BV=_block(V) if V else 16, BT=BT,
            IS_VARLEN=cu_seqlens is not None,
            GATE_LOG2=gate_log2, HAS_V=v is not None, STORE_A=store_a, STORE_QG=with_qg and v is not None,
            A_PREC=a_prec, METHOD=recipe.name, PREC=recipe.precision, BASE_PREC=recipe.base_precision,
            REFINE_PREC=recipe.refine_precision, WU_PREC=wu,
        )
    return res["w"], res["u"], res["qg"], res["kg"], res["Aqk"], res["Akk"]


__all__ = ["A_PRECISIONS", "A_PRECISION_BY_DTYPE", "DEFAULT_A_PRECISION", "MAX_CHUNK", "chunk_kda_fwd_intra",
           "default_a_precision", "kda_intra_kernel"]
