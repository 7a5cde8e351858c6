"""Fused DPLR (RWKV-7) intra-chunk Triton kernel: ``A_qk, A_qb, A_ak, A_ab -> (I - A_ab)^-1 -> W, U``.

One kernel does what fla 0.6.0 splits over ``chunk_dplr_fwd_intra`` and ``prepare_wy_repr_fwd``
(three kernels, ``A_ab``/``A_ak``/``ag`` through memory): same inputs and outputs, contract of
:func:`deltainv.kernels.dplr.pytorch.chunk_dplr_fwd_intra`. The batched design of
:mod:`deltainv.kernels.gdn.triton`: each program takes NC (chunk, head) items, one chunk per warp,
every tile ``[NC, 16, 16]``; products are batched ``tl.dot`` in ``A_PREC`` / ``WU_PREC`` (operands
split once, :func:`~deltainv.kernels.triton_tiles.prep`); the inverse is the shared
:func:`~deltainv.kernels.tril.tiled.invert_tiles` on ``L = -A_ab`` and never leaves registers
(stored only with ``STORE_A``).

**Per-channel decays.** ``A_ij = sum_c l_ic r_jc exp(Gl_ic - Gi_jc)`` (``Gl`` = ``Ge`` for ``A_ab``/
``A_ak``, ``Gi`` for ``A_qk``/``A_qb``) is built from tensor-core products of gated operands,
``(l_i exp(Gl_i - R)) . (r_j exp(R - Gi_j))``, with a reference ``R`` (per channel) chosen so that
**both exponents are <= 0** wherever they are used: no factor can overflow, and one that underflows
stands for a term below ``1e-38`` anyway. The decay is never factorised over a whole chunk:

- off-diagonal tile (I, J), J < I: ``R = Gi`` at the last row of row block J (every row of block I
  comes later, every row of block J no later);
- diagonal tile (I, I): binary levels s = 8, 4, 2, 1. At level s, rows in odd s-blocks pair with the
  s-block just before them, with ``R = Gi`` at that block's last row; the four levels together cover
  each strictly lower entry exactly once. The diagonal of ``A_qk``/``A_qb`` (``exp(0)``) is an
  element-wise row product.

The exponents are masked before ``exp`` (like :func:`deltainv.kernels.gdn.triton._gated`), and gate
rows are read with their row index clamped to the chunk's last real row (the edge padding of
:mod:`deltainv.kernels.chunking`), so rows past a partial chunk's end are zeros, never non-finite.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import triton
import triton.language as tl

from ..chunking import default_wu_precision
from ..index import launch_chunks
from ..precision import check_precision
from ..registry import Recipe, resolve
from ..triton_tiles import dot, exp_base, prep, put, tri, zeros
from ..tril.invert import check_chunk_size
from ..tril.tiled import invert_tiles
from ..tril.triton import TRITON_METHODS, autotune_configs, chunk_items, prune_configs, row_mask
from .pytorch import check_dplr_inputs

#: Default operand precision of the four ``A`` products: they feed the inverse, so fp32-accurate.
DEFAULT_A_PRECISION = "tf32x3"

#: Largest exponent (natural-log units) a diagonal tile's factorised decay may reach before the kernel
#: takes the exact column-by-column path: e^30 per factor keeps every product, even the masked ones
#: above the diagonal (e^60), far from fp32's range. RWKV-7 (gates >= -0.6065) reaches about 5.5.
FACTOR_LIMIT = 30.0

def factor_limit(gate_log2: bool) -> float:
    """:data:`FACTOR_LIMIT` in the gate's units."""
    return FACTOR_LIMIT / math.log(2) if gate_log2 else FACTOR_LIMIT


#: Largest chunk size (fla's DPLR uses 16..64; at 128 the register tiles spill, as for GDN).
MAX_CHUNK = 64




@triton.jit
def _load(ptr, base, rows, n_rows, col0, STRIDE: tl.constexpr, BD: tl.constexpr, D: tl.constexpr):
    """Rows ``rows`` (``[NC, S]`` in-chunk indices) and columns ``col0 ..`` of each chunk: ``[NC, S, BD]``
    fp32, 0 on rows past the end."""
    c = col0 + tl.arange(0, BD)
    offs = base[:, None, None] + rows[:, :, None].to(tl.int64) * STRIDE + c[None, None, :]
    m = (rows < n_rows[:, None])[:, :, None] & (c < D)[None, None, :]
    return tl.load(ptr + offs, mask=m, other=0.0).to(tl.float32)


@triton.jit
def _clamp(rows, n_rows):
    """Row indices clamped to each chunk's last real row (gate reads: the edge padding)."""
    return tl.maximum(tl.minimum(rows, n_rows[:, None] - 1), 0)


@triton.jit
def _side(x, G, R, keep, LEFT: tl.constexpr, LOG2: tl.constexpr):
    """``x exp(G - R)`` (left) or ``x exp(R - G)`` (right) where ``keep``, else 0; exponent masked first."""
    if LEFT:
        d = G - R
    else:
        d = R - G
    d = tl.where(keep, d, 0.0)
    return tl.where(keep, x * exp_base(d, LOG2), 0.0)


@triton.jit
def _row(ptr, base, row, n_rows, col0, STRIDE: tl.constexpr, BD: tl.constexpr, D: tl.constexpr):
    """One row per chunk (``row``: ``[NC, 1]``, clamped by the caller) as ``[NC, 1, BD]`` fp32 (a reference point)."""
    c = col0 + tl.arange(0, BD)
    offs = base[:, None, None] + row[:, :, None].to(tl.int64) * STRIDE + c[None, None, :]
    return tl.load(ptr + offs, mask=(n_rows > 0)[:, None, None] & (c < D)[None, None, :], other=0.0).to(tl.float32)


@triton.jit
def _load_t(ptr, base, rows, n_rows, col0, STRIDE: tl.constexpr, BD: tl.constexpr, D: tl.constexpr):
    """Like :func:`_load`, transposed: ``[NC, BD, S]`` (right operands, no layout permute)."""
    c = col0 + tl.arange(0, BD)
    offs = base[:, None, None] + rows[:, None, :].to(tl.int64) * STRIDE + c[None, :, None]
    m = (rows < n_rows[:, None])[:, None, :] & (c < D)[None, :, None]
    return tl.load(ptr + offs, mask=m, other=0.0).to(tl.float32)


@triton.jit
def _right(k, b, gi, base, n_rows, rows, R, c, H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr,
           LOG2: tl.constexpr, A_PREC: tl.constexpr):
    """Right operands ``(k, b) exp(R - Gi)``, transposed ``[NC, BK, S]`` and split, for rows ``rows``."""
    keep = (rows < n_rows[:, None])[:, None, :]
    g = _load_t(gi, base, _clamp(rows, n_rows), n_rows, c, H * K, BK, K)
    e = tl.where(keep, exp_base(tl.where(keep, tl.permute(R, (0, 2, 1)) - g, 0.0), LOG2), 0.0)
    kt = prep(_load_t(k, base, rows, n_rows, c, H * K, BK, K) * e, A_PREC)
    bt = prep(_load_t(b, base, rows, n_rows, c, H * K, BK, K) * e, A_PREC)
    return kt, bt


@triton.jit
def _left(q, a, gi, ge, base, n_rows, rows, R, c, H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr,
          LOG2: tl.constexpr, A_PREC: tl.constexpr):
    """Left operands ``q exp(Gi - R)``, ``a exp(Ge - R)`` (``[NC, S, BK]``, split) for rows ``rows``."""
    keep = (rows < n_rows[:, None])[:, :, None]
    g_rows = _clamp(rows, n_rows)
    lq = prep(_side(_load(q, base, rows, n_rows, c, H * K, BK, K), _load(gi, base, g_rows, n_rows, c, H * K, BK, K),
                    R, keep, True, LOG2), A_PREC)
    la = prep(_side(_load(a, base, rows, n_rows, c, H * K, BK, K), _load(ge, base, g_rows, n_rows, c, H * K, BK, K),
                    R, keep, True, LOG2), A_PREC)
    return lq, la


@triton.jit
def _pair(q, k, a, b, gi, ge, base, n_rows, I: tl.constexpr, J: tl.constexpr, NC: tl.constexpr, S: tl.constexpr,
          H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, LOG2: tl.constexpr, A_PREC: tl.constexpr):
    """Off-diagonal tile (I, J), J < I, of ``(A_qk, A_qb, A_ak, A_ab)`` against ``R = Gi`` at the last row
    of block J (every exponent <= 0)."""
    live = tl.broadcast_to(tl.arange(0, S)[None, :], (NC, S))
    ref = _clamp(tl.zeros((NC, 1), dtype=tl.int32) + (J * S + S - 1), n_rows)
    qk = zeros(NC, S)
    qb = zeros(NC, S)
    ak = zeros(NC, S)
    ab = zeros(NC, S)
    for c in tl.static_range(0, K, BK):
        R = _row(gi, base, ref, n_rows, c, H * K, BK, K)
        lq, la = _left(q, a, gi, ge, base, n_rows, I * S + live, R, c, H, K, BK, LOG2, A_PREC)
        kt, bt = _right(k, b, gi, base, n_rows, J * S + live, R, c, H, K, BK, LOG2, A_PREC)
        qk = dot(lq, kt, qk, A_PREC)
        qb = dot(lq, bt, qb, A_PREC)
        ak = dot(la, kt, ak, A_PREC)
        ab = dot(la, bt, ab, A_PREC)
    return qk, qb, ak, ab


@triton.jit
def _diag(q, k, a, b, gi, ge, base, n_rows, I: tl.constexpr, NC: tl.constexpr, S: tl.constexpr, H: tl.constexpr,
          K: tl.constexpr, BK: tl.constexpr, LOG2: tl.constexpr, A_PREC: tl.constexpr, LIMIT: tl.constexpr):
    """Diagonal tile I of ``(A_qk, A_qb, A_ak, A_ab)``: one tensor-core product per matrix against the
    reference ``C = Gi`` at the tile's row 7 when every exponent of that factorisation is at most
    ``LIMIT`` (over the program's chunks; RWKV-7's gates give at most ~5.5), else exactly, column by
    column in a runtime loop (compact code for a path only extreme gates take)."""
    o = tl.arange(0, S)
    rows = I * S + tl.broadcast_to(o[None, :], (NC, S))
    keep = (rows < n_rows[:, None])[:, :, None]
    g_rows = _clamp(rows, n_rows)
    c_row = _clamp(tl.zeros((NC, 1), dtype=tl.int32) + (I * S + S // 2 - 1), n_rows)
    # Ge >= Gi row by row, so Ge - C bounds every left exponent and C - Gi every right one.
    worst = 0.0
    for c in tl.static_range(0, K, BK):
        C = _row(gi, base, c_row, n_rows, c, H * K, BK, K)
        hi = tl.max(tl.where(keep, _load(ge, base, g_rows, n_rows, c, H * K, BK, K) - C, 0.0))
        lo = tl.max(tl.where(keep, C - _load(gi, base, g_rows, n_rows, c, H * K, BK, K), 0.0))
        worst = tl.maximum(worst, tl.maximum(hi, lo))
    qk = zeros(NC, S)
    qb = zeros(NC, S)
    ak = zeros(NC, S)
    ab = zeros(NC, S)
    if worst <= LIMIT:
        for c in tl.static_range(0, K, BK):
            C = _row(gi, base, c_row, n_rows, c, H * K, BK, K)
            lq, la = _left(q, a, gi, ge, base, n_rows, rows, C, c, H, K, BK, LOG2, A_PREC)
            kt, bt = _right(k, b, gi, base, n_rows, rows, C, c, H, K, BK, LOG2, A_PREC)
            qk = dot(lq, kt, qk, A_PREC)
            qb = dot(lq, bt, qb, A_PREC)
            ak = dot(la, kt, ak, A_PREC)
            ab = dot(la, bt, ab, A_PREC)
        lower = (o[:, None] >= o[None, :])[None, :, :]
        strict = (o[:, None] > o[None, :])[None, :, :]
        qk = tl.where(lower, qk, 0.0)
        qb = tl.where(lower, qb, 0.0)
        ak = tl.where(strict, ak, 0.0)
        ab = tl.where(strict, ab, 0.0)
    else:
        for c in tl.static_range(0, K, BK):
            Gi = _load(gi, base, g_rows, n_rows, c, H * K, BK, K)
            Ge = _load(ge, base, g_rows, n_rows, c, H * K, BK, K)
            ql = _load(q, base, rows, n_rows, c, H * K, BK, K)
            al = _load(a, base, rows, n_rows, c, H * K, BK, K)
            for j in range(S):
                rj = tl.zeros((NC, 1), dtype=tl.int32) + (I * S + j)
                kj = _load(k, base, rj, n_rows, c, H * K, BK, K)                  # row j: [NC, 1, BK]
                bj = _load(b, base, rj, n_rows, c, H * K, BK, K)
                gj = _load(gi, base, _clamp(rj, n_rows), n_rows, c, H * K, BK, K)
                inc = keep & (o >= j)[None, :, None]
                stc = keep & (o > j)[None, :, None]
                di = exp_base(tl.where(inc, Gi - gj, 0.0), LOG2)
                de = exp_base(tl.where(stc, Ge - gj, 0.0), LOG2)
                col = (o == j)[None, None, :]
                qk += tl.where(col, tl.sum(tl.where(inc, ql * kj * di, 0.0), 2)[:, :, None], 0.0)
                qb += tl.where(col, tl.sum(tl.where(inc, ql * bj * di, 0.0), 2)[:, :, None], 0.0)
                ak += tl.where(col, tl.sum(tl.where(stc, al * kj * de, 0.0), 2)[:, :, None], 0.0)
                ab += tl.where(col, tl.sum(tl.where(stc, al * bj * de, 0.0), 2)[:, :, None], 0.0)
    return qk, qb, ak, ab


@triton.jit
def _tile(q, k, a, b, gi, ge, base, n_rows, I: tl.constexpr, J: tl.constexpr, NC: tl.constexpr,
          S: tl.constexpr, H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, LOG2: tl.constexpr,
          A_PREC: tl.constexpr, LIMIT: tl.constexpr):
    """Tile (I, J) of ``(A_qk, A_qb, A_ak, A_ab)`` (unscaled; see the module docstring for the references)."""
    if I != J:
        acc = _pair(q, k, a, b, gi, ge, base, n_rows, I, J, NC, S, H, K, BK, LOG2, A_PREC)
    else:
        acc = _diag(q, k, a, b, gi, ge, base, n_rows, I, NC, S, H, K, BK, LOG2, A_PREC, LIMIT)
    return acc


@triton.jit
def _store_tile(ptr, base, n_rows, x, I: tl.constexpr, J: tl.constexpr, NC: tl.constexpr, S: tl.constexpr,
                H: tl.constexpr, BT: tl.constexpr):
    """Tile (I, J) of a ``[B, T, H, BT]`` matrix output (rows past the end are not written)."""
    o = tl.arange(0, S)
    offs = base[:, None, None] + (I * S + o)[None, :, None] * (H * BT) + (J * S + o)[None, None, :]
    tl.store(ptr + offs, x.to(ptr.dtype.element_ty, fp_downcast_rounding="rtne"), mask=row_mask(n_rows, I, S))


@triton.jit
def _load_tile(ptr, base, n_rows, I: tl.constexpr, J: tl.constexpr, S: tl.constexpr, H: tl.constexpr,
               BT: tl.constexpr):
    o = tl.arange(0, S)
    offs = base[:, None, None] + (I * S + o)[None, :, None] * (H * BT) + (J * S + o)[None, None, :]
    return tl.load(ptr + offs, mask=row_mask(n_rows, I, S), other=0.0).to(tl.float32)


@triton.autotune(configs=autotune_configs(), key=["H", "K", "V", "BT", "IS_VARLEN", "GATE_LOG2", "LIMIT", "STORE_A", "A_PREC",
                                                "METHOD", "PREC", "BASE_PREC", "REFINE_PREC", "WU_PREC"],
                 prune_configs_by={"early_config_prune": prune_configs})
@triton.jit(do_not_specialize=["T", "n_items", "scale"])
def dplr_intra_kernel(q, k, v, a, b, gi, ge, A_ab, A_qk, A_ak, A_qb, qg, kg, ag, bg, w, u, Ai, cu_seqlens,
                      chunk_indices, scale, T, n_items, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                      BK: tl.constexpr, BV: tl.constexpr, BKA: tl.constexpr, BT: tl.constexpr,
                      IS_VARLEN: tl.constexpr,
                      GATE_LOG2: tl.constexpr, LIMIT: tl.constexpr, STORE_A: tl.constexpr, A_PREC: tl.constexpr,
                      METHOD: tl.constexpr,
                      PREC: tl.constexpr, BASE_PREC: tl.constexpr, REFINE_PREC: tl.constexpr,
                      WU_PREC: tl.constexpr, NC: tl.constexpr):
    """Every output of :func:`chunk_dplr_fwd_intra` for NC (chunk, head) items."""
    S: tl.constexpr = 16
    NB: tl.constexpr = BT // S
    row0, n_rows, head = chunk_items(cu_seqlens, chunk_indices, T, n_items, H, BT, NC, IS_VARLEN)
    base = (row0 * H + head) * K
    a_base = (row0 * H + head) * BT
    v_base = (row0 * H + head) * V
    o = tl.arange(0, S)
    # A tiles row block by row block; A_qk, A_qb and A_ak go to memory at once, -A_ab stays for the inverse.
    L = ()
    for i in tl.static_range(NB):
        for j in tl.static_range(i + 1):
            qk, qb, ak, ab = _tile(q, k, a, b, gi, ge, base, n_rows, i, j, NC, S, H, K, BKA, GATE_LOG2, A_PREC,
                                   LIMIT)
            _store_tile(A_qk, a_base, n_rows, qk * scale, i, j, NC, S, H, BT)
            _store_tile(A_qb, a_base, n_rows, qb * scale, i, j, NC, S, H, BT)
            _store_tile(A_ak, a_base, n_rows, ak, i, j, NC, S, H, BT)
            if STORE_A:
                _store_tile(A_ab, a_base, n_rows, ab, i, j, NC, S, H, BT)
            L = L + (-ab,)
        for j in tl.static_range(i + 1, NB):   # every element of every real row is written once
            _store_tile(A_qk, a_base, n_rows, zeros(NC, S), i, j, NC, S, H, BT)
            _store_tile(A_qb, a_base, n_rows, zeros(NC, S), i, j, NC, S, H, BT)
            _store_tile(A_ak, a_base, n_rows, zeros(NC, S), i, j, NC, S, H, BT)
            if STORE_A:
                _store_tile(A_ab, a_base, n_rows, zeros(NC, S), i, j, NC, S, H, BT)
    X = invert_tiles(L, NC, S, NB, METHOD, PREC, BASE_PREC, REFINE_PREC)
    if STORE_A:
        for i in tl.static_range(NB):
            for j in tl.static_range(NB):
                if j <= i:
                    _store_tile(Ai, a_base, n_rows, X[tri(i, j)], i, j, NC, S, H, BT)
                else:
                    _store_tile(Ai, a_base, n_rows, zeros(NC, S), i, j, NC, S, H, BT)
    # Element-wise outputs and W = T ag, K-slice by K-slice, block column by block column (only the
    # current operand and NB accumulators are live beside X; X's tiles are split for the products as used).
    live = tl.broadcast_to(o[None, :], (NC, S))
    last = tl.maximum(n_rows - 1, 0)[:, None] + tl.zeros((NC, S), dtype=tl.int32)
    for c in tl.static_range(0, K, BK):
        g_last = _load(gi, base, last, n_rows, c, H * K, BK, K)
        cc = c + tl.arange(0, BK)
        acc = ()
        for i in tl.static_range(NB):
            acc = acc + (tl.zeros((NC, S, BK), dtype=tl.float32),)
        for j in tl.static_range(NB):
            rows = j * S + live
            valid = (rows < n_rows[:, None])[:, :, None]
            g_i = _load(gi, base, _clamp(rows, n_rows), n_rows, c, H * K, BK, K)
            g_e = _load(ge, base, _clamp(rows, n_rows), n_rows, c, H * K, BK, K)
            x_ag = _load(a, base, rows, n_rows, c, H * K, BK, K) * exp_base(tl.where(valid, g_e, 0.0), GATE_LOG2)
            x_qg = _load(q, base, rows, n_rows, c, H * K, BK, K) * (scale * exp_base(tl.where(valid, g_i, 0.0), GATE_LOG2))
            decay = exp_base(tl.where(valid, g_last - g_i, 0.0), GATE_LOG2)
            x_kg = _load(k, base, rows, n_rows, c, H * K, BK, K) * decay
            x_bg = _load(b, base, rows, n_rows, c, H * K, BK, K) * decay
            offs = base[:, None, None] + rows[:, :, None].to(tl.int64) * (H * K) + cc[None, None, :]
            m = valid & (cc < K)[None, None, :]
            tl.store(ag + offs, x_ag.to(ag.dtype.element_ty, fp_downcast_rounding="rtne"), mask=m)
            tl.store(qg + offs, x_qg.to(qg.dtype.element_ty, fp_downcast_rounding="rtne"), mask=m)
            tl.store(kg + offs, x_kg.to(kg.dtype.element_ty, fp_downcast_rounding="rtne"), mask=m)
            tl.store(bg + offs, x_bg.to(bg.dtype.element_ty, fp_downcast_rounding="rtne"), mask=m)
            sj = prep(x_ag, WU_PREC)
            for i in tl.static_range(j, NB):
                acc = put(acc, i, dot(prep(X[tri(i, j)], WU_PREC), sj, acc[i], WU_PREC))
        for i in tl.static_range(NB):
            rows = i * S + live
            offs = base[:, None, None] + rows[:, :, None].to(tl.int64) * (H * K) + cc[None, None, :]
            m = (rows < n_rows[:, None])[:, :, None] & (cc < K)[None, None, :]
            tl.store(w + offs, acc[i].to(w.dtype.element_ty, fp_downcast_rounding="rtne"), mask=m)
    # T A_ak (A_ak read back from this program's own stores; X dies here), then U = (T A_ak) v.
    tl.debug_barrier()
    TA = ()
    for i in tl.static_range(NB):
        for j in tl.static_range(i + 1):
            t = zeros(NC, S)
            for kk in tl.static_range(j, i + 1):
                t = dot(prep(X[tri(i, kk)], WU_PREC), prep(_load_tile(A_ak, a_base, n_rows, kk, j, S, H, BT), WU_PREC),
                        t, WU_PREC)
            TA = TA + (t,)
    for c in tl.static_range(0, V, BV):
        cc = c + tl.arange(0, BV)
        acc = ()
        for i in tl.static_range(NB):
            acc = acc + (tl.zeros((NC, S, BV), dtype=tl.float32),)
        for j in tl.static_range(NB):
            sj = prep(_load(v, v_base, j * S + live, n_rows, c, H * V, BV, V), WU_PREC)
            for i in tl.static_range(j, NB):
                acc = put(acc, i, dot(prep(TA[tri(i, j)], WU_PREC), sj, acc[i], WU_PREC))
        for i in tl.static_range(NB):
            rows = i * S + live
            offs = v_base[:, None, None] + rows[:, :, None].to(tl.int64) * (H * V) + cc[None, None, :]
            m = (rows < n_rows[:, None])[:, :, None] & (cc < V)[None, None, :]
            tl.store(u + offs, acc[i].to(u.dtype.element_ty, fp_downcast_rounding="rtne"), mask=m)


#: K slice of the four A products: 16 wide keeps their eight split operands (tf32x3: hi and lo of
#: q, a, k, b) beside the live -A_ab tiles without spilling.
A_SLICE = 16


def _block(n: int) -> int:
    """Column slice of K / V per step (as the fused GDN kernel: 32 wide at most, to keep registers)."""
    return max(16, min(32, 1 << (n - 1).bit_length()))


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
    recipe: Recipe | None = None,
    wu_precision: str | None = None,
    a_precision: str | None = None,
    out_dtype: torch.dtype | None = None,
    store_a: bool = True,
    out: tuple[torch.Tensor | None, ...] | None = None,
    **options: Any,
) -> tuple[torch.Tensor | None, ...]:
    """Fused ``(A_ab, A_qk, A_ak, A_qb, qg, kg, ag, bg, w, u, A_ab_inv)``; the contract of
    :func:`deltainv.kernels.dplr.pytorch.chunk_dplr_fwd_intra`.

    ``recipe`` (or ``method``/``precision``/``options``, resolved here) chooses the inversion;
    ``a_precision`` the operand rounding of the four ``A`` products (default ``tf32x3``).
    ``store_a=False`` writes neither ``A_ab`` nor ``A_ab_inv`` (returned as None; nothing after the
    intra step reads them): the inverse never leaves registers. With ``chunk_indices`` given there
    is no device-to-host sync. ``out`` (the 11 outputs in order, contiguous, the contract's shapes and
    dtypes; ``A_ab``/``A_ab_inv`` may be None with ``store_a=False``) receives the results.
    """
    recipe = recipe if recipe is not None else resolve(method, precision, **options)
    if recipe.name not in TRITON_METHODS:
        raise ValueError(f"method {recipe.name!r} has no fused Triton DPLR kernel (have: {', '.join(TRITON_METHODS)})")
    check_dplr_inputs(q, k, v, a, b, gi)
    if ge.shape != gi.shape:
        raise ValueError(f"ge must have gi's shape {list(gi.shape)}; got {list(ge.shape)}")
    B, T, H, K = k.shape
    V = v.shape[-1]
    BT = check_chunk_size(chunk_size)
    if BT > MAX_CHUNK:
        raise ValueError(f"the fused DPLR kernel supports chunk sizes up to {MAX_CHUNK} (fla uses 16..64); "
                         f"got {BT}: use backend='torch' for it")
    out_dtype = q.dtype if out_dtype is None else out_dtype
    wu = check_precision(default_wu_precision(out_dtype, wu_precision))
    a_prec = check_precision(DEFAULT_A_PRECISION if a_precision is None else a_precision)
    scale = K**-0.5 if scale is None else float(scale)
    q, k, v, a, b = (x.contiguous() for x in (q, k, v, a, b))
    gi, ge = gi.float().contiguous(), ge.float().contiguous()
    chunk_indices, n_chunks = launch_chunks(cu_seqlens, chunk_indices, T, B, BT)
    dev = k.device
    mat, vec = (B, T, H, BT), (B, T, H, K)
    specs = ((mat, torch.float32), (mat, out_dtype), (mat, torch.float32), (mat, out_dtype), (vec, out_dtype),
             (vec, out_dtype), (vec, out_dtype), (vec, out_dtype), (vec, out_dtype), ((B, T, H, V), v.dtype),
             (mat, torch.float32))
    optional = (0, 10)                      # A_ab and A_ab_inv: only with store_a
    if out is None:
        out = tuple(None if (n in optional and not store_a) else torch.empty(shape, dtype=dt, device=dev)
                    for n, (shape, dt) in enumerate(specs))
    else:
        if len(out) != len(specs):
            raise ValueError(f"out must hold the {len(specs)} outputs (A_ab, A_qk, A_ak, A_qb, qg, kg, ag, bg, w, u, A_ab_inv)")
        for n, (t, (shape, dt)) in enumerate(zip(out, specs)):
            if n in optional and not store_a:
                continue
            if t is None or tuple(t.shape) != shape or t.dtype != dt or not t.is_contiguous():
                raise ValueError(f"out[{n}] must be a contiguous {dt} tensor of shape {list(shape)}")
        out = tuple(None if (n in optional and not store_a) else t for n, t in enumerate(out))
    A_ab, A_qk, A_ak, A_qb, qg, kg, ag, bg, w, u, Ai = out
    n_items = n_chunks * H
    if n_items:
        dplr_intra_kernel[lambda meta: (triton.cdiv(n_items, meta["NC"]),)](
            q, k, v, a, b, gi, ge, A_ab, A_qk, A_ak, A_qb, qg, kg, ag, bg, w, u, Ai, cu_seqlens, chunk_indices,
            scale, T, n_items, H=H, K=K, V=V, BK=_block(K), BV=_block(V), BKA=A_SLICE, BT=BT,
            IS_VARLEN=cu_seqlens is not None, GATE_LOG2=gate_log2, LIMIT=factor_limit(gate_log2), STORE_A=store_a,
            A_PREC=a_prec, METHOD=recipe.name, PREC=recipe.precision, BASE_PREC=recipe.base_precision,
            REFINE_PREC=recipe.refine_precision, WU_PREC=wu,
        )
    return A_ab, A_qk, A_ak, A_qb, qg, kg, ag, bg, w, u, Ai


__all__ = ["DEFAULT_A_PRECISION", "MAX_CHUNK", "chunk_dplr_fwd_intra", "dplr_intra_kernel"]
