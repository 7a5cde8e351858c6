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
  factor tensor ``k * exp(+-(G - G_r))`` serves both sides of a masked product. Aqk adds ``i = j``.

Rows past a partial chunk's end read the gate of the chunk's last real row (edge padding, as the
PyTorch reference does) and zero data, so no exponent is ever large and no value is ever non-finite.

Products: the decayed ``Akk`` / ``Aqk`` tiles in ``A_PREC`` (``tf32x3``: the fp32 reference's
numbers; ``tf32``: fla's), the inverse by the shared :func:`~deltainv.kernels.tril.tiled.invert_tiles`,
W/U in ``WU_PREC``. ``Akk`` is written only when asked (``store_a``); every written element is
written exactly once (zeros above the diagonal), so no output needs a zero-fill.
Contract: :func:`deltainv.kernels.kda.pytorch.chunk_kda_fwd_intra`.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from ..chunking import DEFAULT_WU_PRECISION
from ..index import varlen_chunk_indices
from ..precision import check_precision
from ..registry import Recipe, resolve
from ..triton_tiles import band, dot, log2, pow2, prep, put, tri, zeros
from ..tril.invert import check_chunk_size
from ..tril.tiled import invert_tiles
from ..tril.triton import TRITON_METHODS, autotune_configs, chunk_items, prune_configs, row_mask
from .pytorch import check_intra_inputs

#: Largest chunk size of the fused kernel (fla's and the engines' KDA intra take 32 and 64).
MAX_CHUNK = 64
#: Precisions of the decayed ``Akk`` / ``Aqk`` products.
A_PRECISIONS = ("tf32x3", "tf32", "fp32")
DEFAULT_A_PRECISION = "tf32x3"


@triton.jit
def _rows(base, row_stride, I: tl.constexpr, S: tl.constexpr, col0, WIDTH: tl.constexpr, NCOLS: tl.constexpr):
    """Offsets ``[NC, S, WIDTH]`` and the column mask of rows ``I*S ..`` and columns ``col0 ..`` of each chunk."""
    o = tl.arange(0, S)
    c = col0 + tl.arange(0, WIDTH)
    offs = base[:, None, None] + (I * S + o)[None, :, None] * row_stride + c[None, None, :]
    return offs, (c < NCOLS)[None, None, :]


@triton.jit
def _gate(g, g_base, g_stride, rows, n_rows, col0, WIDTH: tl.constexpr, NCOLS: tl.constexpr):
    """The gate at chunk rows ``rows`` (``[1 or NC, S]``, clamped to the chunk's last real row: edge
    padding) and columns ``col0 ..``: ``[NC, S, WIDTH]`` fp32 (0 for dead items)."""
    c = col0 + tl.arange(0, WIDTH)
    r = tl.minimum(rows, tl.maximum(n_rows - 1, 0)[:, None])
    offs = g_base[:, None, None] + r[:, :, None] * g_stride + c[None, None, :]
    return tl.load(g + offs, mask=(n_rows > 0)[:, None, None] & (c < NCOLS)[None, None, :], other=0.0)


@triton.jit
def _exp(x, GATE_LOG2: tl.constexpr):
    if GATE_LOG2:
        return tl.exp2(x)
    else:
        return tl.exp(x)


@triton.jit
def _t(x):
    return tl.permute(x, (0, 2, 1))


@triton.jit
def _decayed(a, a_base, b, b_base, ab_stride, g, g_base, g_stride, n_rows, NC: tl.constexpr, S: tl.constexpr,
             NB: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, STRICT: tl.constexpr, SAME: tl.constexpr,
             GATE_LOG2: tl.constexpr, A_PREC: tl.constexpr):
    """Lower tiles (``tri`` order) of ``M_ij = sum_c a_ic b_jc exp(G_ic - G_jc)`` for ``i > j`` (``i >= j``
    unless ``STRICT``), 0 elsewhere and on rows past the end, accumulated over K in BK-wide slices.

    ``SAME``: ``a`` and ``b`` are the same rows (``Akk``), so each decayed operand is formed once.
    """
    o = tl.arange(0, S)
    M = ()
    for i in tl.static_range(NB):
        for j in tl.static_range(i + 1):
            M = M + (zeros(NC, S),)
    for c in tl.static_range(0, K, BK):
        A = ()
        B = ()
        G = ()
        for i in tl.static_range(NB):  # every load of the slice first
            offs, cm = _rows(a_base, ab_stride, i, S, c, BK, K)
            A = A + (tl.load(a + offs, mask=row_mask(n_rows, i, S) & cm, other=0.0).to(tl.float32),)
            if not SAME:
                offs, cm = _rows(b_base, ab_stride, i, S, c, BK, K)
                B = B + (tl.load(b + offs, mask=row_mask(n_rows, i, S) & cm, other=0.0).to(tl.float32),)
            G = G + (_gate(g, g_base, g_stride, (i * S + o)[None, :], n_rows, c, BK, K),)
        if SAME:
            B = A
        # off-diagonal tiles: reference = the first row of row tile I
        for i in tl.static_range(1, NB):
            gr = _gate(g, g_base, g_stride, tl.full((1, 1), i * S, tl.int32), n_rows, c, BK, K)
            left = prep(A[i] * _exp(G[i] - gr, GATE_LOG2), A_PREC)
            for j in tl.static_range(i):
                right = prep(_t(B[j] * _exp(gr - G[j], GATE_LOG2)), A_PREC)
                M = put(M, tri(i, j), dot(left, right, M[tri(i, j)], A_PREC))
        # diagonal tiles: level s joins row s-block 2p+1 with column s-block 2p at the row block's first row
        for i in tl.static_range(NB):
            acc = M[tri(i, i)]
            if not STRICT:
                d = dot(prep(A[i], A_PREC), prep(_t(B[i]), A_PREC), zeros(NC, S), A_PREC)
                acc += tl.where((o[:, None] == o[None, :])[None, :, :], d, 0.0)
            for n in tl.static_range(log2(S)):  # s = pow2(n) (inline: a name bound here would become a tensor)
                ref = (o // (2 * pow2(n))) * (2 * pow2(n)) + pow2(n)
                gr = _gate(g, g_base, g_stride, (i * S + ref)[None, :], n_rows, c, BK, K)
                lower = ((o // pow2(n)) % 2 == 1)[None, :, None]  # row side: G_i <= G_r; column side: G_r <= G_j
                e = _exp(tl.where(lower, G[i] - gr, gr - G[i]), GATE_LOG2)
                left = A[i] * e
                if SAME:
                    right = left
                else:
                    right = B[i] * e
                d = dot(prep(left, A_PREC), prep(_t(right), A_PREC), zeros(NC, S), A_PREC)
                acc += band(d, S, pow2(n))
            M = put(M, tri(i, i), acc)
    return M


@triton.jit
def _store_tiles(X, dst, base, row_stride, n_rows, scale, NC: tl.constexpr, S: tl.constexpr, NB: tl.constexpr,
                 BT: tl.constexpr):
    """Every ``[S, S]`` tile of the chunks' real rows, ``scale * X`` on and below the diagonal, zeros above."""
    for i in tl.static_range(NB):
        for j in tl.static_range(NB):
            offs, cm = _rows(base, row_stride, i, S, j * S, S, BT)
            if j <= i:
                x = X[tri(i, j)] * scale
            else:
                x = zeros(NC, S)
            tl.store(dst + offs, x.to(dst.dtype.element_ty, fp_downcast_rounding="rtne"), mask=row_mask(n_rows, i, S))


@triton.autotune(configs=autotune_configs(), key=["H", "HV", "K", "V", "BT", "IS_VARLEN", "GATE_LOG2", "HAS_V",
                                                "STORE_A", "STORE_QG", "A_PREC", "METHOD", "PREC", "BASE_PREC",
                                                "REFINE_PREC", "WU_PREC"],
                 prune_configs_by={"early_config_prune": prune_configs})
@triton.jit(do_not_specialize=["T", "n_items"])
def kda_intra_kernel(q, k, v, g, beta, w, u, qg, kg, Aqk, Akk, scale, cu_seqlens, chunk_indices, T, n_items,
                     H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BKA: tl.constexpr,
                     BK: tl.constexpr, BV: tl.constexpr, BT: tl.constexpr, IS_VARLEN: tl.constexpr, GATE_LOG2: tl.constexpr,
                     HAS_V: tl.constexpr, STORE_A: tl.constexpr, STORE_QG: tl.constexpr, A_PREC: tl.constexpr,
                     METHOD: tl.constexpr, PREC: tl.constexpr, BASE_PREC: tl.constexpr,
                     REFINE_PREC: tl.constexpr, WU_PREC: tl.constexpr, NC: tl.constexpr):
    """``Aqk``, and with ``v`` ``(w, u, kg[, qg])``, and ``Akk`` if asked, for NC (chunk, value head) items."""
    S: tl.constexpr = 16
    NB: tl.constexpr = BT // S
    row0, n_rows, hv = chunk_items(cu_seqlens, chunk_indices, T, n_items, HV, BT, NC, IS_VARLEN)
    kh = hv // (HV // H)
    qk_base = tl.multiple_of((row0 * H + kh) * K, 16)
    g_base = tl.multiple_of((row0 * HV + hv) * K, 16)
    a_base = tl.multiple_of((row0 * HV + hv) * BT, 16)
    o = tl.arange(0, S)
    # Aqk first, stored at once: its tiles are dead before Akk's are born
    P = _decayed(q, qk_base, k, qk_base, H * K, g, g_base, HV * K, n_rows, NC, S, NB, K, BKA, False, False,
                 GATE_LOG2, A_PREC)
    _store_tiles(P, Aqk, a_base, HV * BT, n_rows, scale, NC, S, NB, BT)
    L = _decayed(k, qk_base, k, qk_base, H * K, g, g_base, HV * K, n_rows, NC, S, NB, K, BKA, True, True,
                 GATE_LOG2, A_PREC)
    b = ()
    for i in tl.static_range(NB):
        rows = i * S + o
        bi = tl.load(beta + (row0[:, None] + rows[None, :]) * HV + hv[:, None], mask=rows[None, :] < n_rows[:, None],
                     other=0.0).to(tl.float32)
        b = b + (bi,)
        for j in tl.static_range(i + 1):
            L = put(L, tri(i, j), L[tri(i, j)] * bi[:, :, None])
    X = invert_tiles(L, NC, S, NB, METHOD, PREC, BASE_PREC, REFINE_PREC)
    if STORE_A:
        _store_tiles(X, Akk, a_base, HV * BT, n_rows, 1.0, NC, S, NB, BT)
    if HAS_V:
        XP = ()
        for i in tl.static_range(NB):
            for j in tl.static_range(i + 1):
                XP = XP + (prep(X[tri(i, j)], WU_PREC),)
        wk_base = tl.multiple_of((row0 * HV + hv) * K, 16)
        # W = T (beta exp(G) k), kg = k exp(G_last - G), qg = q exp(G): one pass over K
        for c in tl.static_range(0, K, BK):
            glast = _gate(g, g_base, HV * K, tl.full((1, 1), BT, tl.int32), n_rows, c, BK, K)
            s = ()
            for j in tl.static_range(NB):
                offs, cm = _rows(qk_base, H * K, j, S, c, BK, K)
                m = row_mask(n_rows, j, S) & cm
                kj = tl.load(k + offs, mask=m, other=0.0).to(tl.float32)
                gj = _gate(g, g_base, HV * K, (j * S + o)[None, :], n_rows, c, BK, K)
                s = s + (prep(kj * b[j][:, :, None] * _exp(gj, GATE_LOG2), WU_PREC),)
                wo, _ = _rows(wk_base, HV * K, j, S, c, BK, K)
                tl.store(kg + wo, (kj * _exp(glast - gj, GATE_LOG2)).to(kg.dtype.element_ty, fp_downcast_rounding="rtne"),
                         mask=m)
                if STORE_QG:
                    qj = tl.load(q + offs, mask=m, other=0.0).to(tl.float32)
                    tl.store(qg + wo, (qj * _exp(gj, GATE_LOG2)).to(qg.dtype.element_ty, fp_downcast_rounding="rtne"),
                             mask=m)
            for i in tl.static_range(NB):
                acc = tl.zeros((NC, S, BK), dtype=tl.float32)
                for j in tl.static_range(i + 1):
                    acc = dot(XP[tri(i, j)], s[j], acc, WU_PREC)
                offs, cm = _rows(wk_base, HV * K, i, S, c, BK, K)
                tl.store(w + offs, acc.to(w.dtype.element_ty, fp_downcast_rounding="rtne"),
                         mask=row_mask(n_rows, i, S) & cm)
        # U = T (beta v)
        v_base = tl.multiple_of((row0 * HV + hv) * V, 16)
        for c in tl.static_range(0, V, BV):
            s = ()
            for j in tl.static_range(NB):
                offs, cm = _rows(v_base, HV * V, j, S, c, BV, V)
                x = tl.load(v + offs, mask=row_mask(n_rows, j, S) & cm, other=0.0).to(tl.float32)
                s = s + (prep(x * b[j][:, :, None], WU_PREC),)
            for i in tl.static_range(NB):
                acc = tl.zeros((NC, S, BV), dtype=tl.float32)
                for j in tl.static_range(i + 1):
                    acc = dot(XP[tri(i, j)], s[j], acc, WU_PREC)
                offs, cm = _rows(v_base, HV * V, i, S, c, BV, V)
                tl.store(u + offs, acc.to(u.dtype.element_ty, fp_downcast_rounding="rtne"),
                         mask=row_mask(n_rows, i, S) & cm)


def _block(n: int) -> int:
    """Column slice of K / V per step (32 wide, as the fused GDN kernel: keeps the slices' registers
    from pushing the live tiles into local memory)."""
    return max(16, min(32, 1 << (n - 1).bit_length()))


def _a_block(n: int) -> int:
    """Column slice of the decayed ``Akk``/``Aqk`` products: 16 wide, since each slice holds q, k and
    the gate of every row tile beside the ten live accumulator tiles."""
    return 16


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
    ``a_precision`` the decayed ``Akk``/``Aqk`` products (``tf32x3`` default, ``tf32`` as fla,
    ``fp32``); ``wu_precision`` the W/U products. ``store_a=False`` never writes ``Akk`` (returned as
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
    a_prec = DEFAULT_A_PRECISION if a_precision is None else a_precision
    if a_prec not in A_PRECISIONS:
        raise ValueError(f"a_precision must be one of {', '.join(A_PRECISIONS)}; got {a_prec!r}")
    wu = check_precision(DEFAULT_WU_PRECISION if wu_precision is None else wu_precision)
    scale = K**-0.5 if scale is None else float(scale)
    q, k, gk, beta = q.contiguous(), k.contiguous(), gk.contiguous(), beta.contiguous()
    V = 0
    if v is not None:
        v = v.contiguous()
        V = v.shape[-1]
    if cu_seqlens is not None:
        chunk_indices = varlen_chunk_indices(cu_seqlens, chunk_indices, T, B, BT)
        n_chunks = chunk_indices.shape[0]
    else:
        if chunk_indices is not None:
            raise ValueError("chunk_indices is only meaningful together with cu_seqlens")
        n_chunks = B * triton.cdiv(T, BT)
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
            H=H, HV=HV, K=K, V=V, BKA=_a_block(K), BK=_block(K), BV=_block(V) if V else 16, BT=BT, IS_VARLEN=cu_seqlens is not None,
            GATE_LOG2=gate_log2, HAS_V=v is not None, STORE_A=store_a, STORE_QG=with_qg and v is not None,
            A_PREC=a_prec, METHOD=recipe.name, PREC=recipe.precision, BASE_PREC=recipe.base_precision,
            REFINE_PREC=recipe.refine_precision, WU_PREC=wu,
        )
    return res["w"], res["u"], res["qg"], res["kg"], res["Aqk"], res["Akk"]


__all__ = ["A_PRECISIONS", "DEFAULT_A_PRECISION", "MAX_CHUNK", "chunk_kda_fwd_intra", "kda_intra_kernel"]
