"""Fused GDN intra-chunk Triton kernel: ``K K^T -> (I + A)^-1 -> W, U`` with the inverse kept in registers.

Each program takes NC (chunk, key head) items, one chunk per warp, and serves every value head that
shares the key head (grouped heads, as Qwen3-Next's 16 key / 32 value heads): the keys are read once
per item from HBM, ``K K^T`` is formed per value head (``KK_PER_HEAD``; or once, kept live), and for
each value head the gated, beta-scaled ``A`` is built from it, inverted by the
shared :func:`~deltainv.kernels.tril.tiled.invert_tiles`, optionally stored, and multiplied into
``W = T (beta exp(G) K)`` and ``U = T (beta V)``. Contract: that of
:func:`deltainv.kernels.gdn.pytorch.chunk_gated_delta_rule_fwd_intra`.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from ..index import launch_chunks
from ..registry import Recipe, resolve
from ..triton_tiles import col_mask, dot, exp_base, lanes, prep, put, row_vector, tri, zeros
from ..tril.invert import check_chunk_size
from ..tril.tiled import invert_tiles
from ..tril.triton import TRITON_METHODS, autotune_configs, chunk_items, prune_configs, row_mask
from ..chunking import check_inputs, default_wu_precision




@triton.jit
def _vec(ptr, row0, n_rows, stride: tl.constexpr, col, I: tl.constexpr, S: tl.constexpr):
    """A per-token scalar (beta, gate) of rows ``I*S ..`` of each chunk: ``[NC, S]`` fp32, 0 past the end."""
    o = tl.arange(0, S)
    rows = I * S + o
    p = (ptr + row0 * stride + col)[:, None]  # chunk pointer + lane offsets + immediate, as lanes
    return tl.load(p + I * S * stride + (o * stride)[None, :],
                   mask=rows[None, :] < n_rows[:, None], other=0.0).to(tl.float32)


@triton.jit
def _gated(kk, b_i, g_i, g_j, n_rows, I: tl.constexpr, J: tl.constexpr, S: tl.constexpr,
           USE_G: tl.constexpr, GATE_LOG2: tl.constexpr):
    """Tile ``(I, J)`` of ``strictLower(diag(beta) K K^T * exp(G_i - G_j))``, 0 on rows past the end.

    The exponent is masked before ``exp``: above the diagonal and against padded rows ``G_i - G_j``
    can be large and positive, and ``0 * inf`` would poison the tile.
    """
    o = tl.arange(0, S)
    m = ((I * S + o)[None, :] < n_rows[:, None])[:, :, None]
    if I == J:
        m = m & (o[:, None] > o[None, :])[None, :, :]
    a = kk * b_i[:, :, None]
    if USE_G:
        d = tl.where(m, g_i[:, :, None] - g_j[:, None, :], 0.0)
        if GATE_LOG2:
            a = a * tl.exp2(d)
        else:
            a = a * tl.exp(d)
    return tl.where(m, a, 0.0)


@triton.jit
def _apply(X, src, src_base, src_stride: tl.constexpr, dst, dst_base, dst_stride: tl.constexpr, scale, n_rows,
           NC: tl.constexpr, S: tl.constexpr, NB: tl.constexpr, D: tl.constexpr, BD: tl.constexpr,
           WU_PREC: tl.constexpr):
    """``dst = X (scale * src)`` over ``D`` columns in ``BD``-wide slices; ``X`` tiles already prepared,
    ``scale`` a tuple of NB ``[NC, S, 1]`` row scales."""
    sp = (src + src_base)[:, None, None]
    dp = (dst + dst_base)[:, None, None]
    sl = lanes(src_stride, S, BD)
    dl = lanes(dst_stride, S, BD)
    for c in tl.static_range(0, D, BD):
        s = ()
        for j in tl.static_range(NB):
            x = tl.load(sp + (j * S * src_stride + c) + sl, mask=row_mask(n_rows, j, S) & col_mask(c, BD, D),
                        other=0.0).to(tl.float32)
            s = s + (prep(x * scale[j], WU_PREC),)
        for i in tl.static_range(NB):
            acc = tl.zeros((NC, S, BD), dtype=tl.float32)
            for j in tl.static_range(i + 1):
                acc = dot(X[tri(i, j)], s[j], acc, WU_PREC)
            tl.store(dp + (i * S * dst_stride + c) + dl,
                     acc.to(dst.dtype.element_ty, fp_downcast_rounding="rtne"),
                     mask=row_mask(n_rows, i, S) & col_mask(c, BD, D))


@triton.jit
def _kkt(k, k_base, n_rows, H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, S: tl.constexpr,
         NB: tl.constexpr, NC: tl.constexpr, KKT_PREC: tl.constexpr):
    """Lower tiles of ``K K^T`` (``tri`` order, ``[NC, S, S]`` fp32), accumulated over K in BK-wide slices.

    The slices are a runtime loop, not an unrolled one: unrolled, ptxas issued every slice's loads and
    operand shuffles ahead of the products and held them beside the 10 accumulators (the peak of the
    kernel's register pressure, and its spill).
    """
    kk = ()
    for i in tl.static_range(NB):
        for j in tl.static_range(i + 1):
            kk = kk + (zeros(NC, S),)
    kp = (k + k_base)[:, None, None]
    lane = lanes(H * K, S, BK)
    for c in range(0, K, BK):
        rows = ()
        for i in tl.static_range(NB):
            x = tl.load(kp + (i * S * H * K + c) + lane, mask=row_mask(n_rows, i, S) & col_mask(c, BK, K),
                        other=0.0)
            rows = rows + (x,)
        for i in tl.static_range(NB):
            for j in tl.static_range(i + 1):
                if KKT_PREC == "native":  # 16-bit keys: exact products, fp32 accumulation
                    t = tl.dot(rows[i], tl.permute(rows[j], (0, 2, 1)), kk[tri(i, j)])
                else:
                    t = tl.dot(rows[i].to(tl.float32), tl.permute(rows[j].to(tl.float32), (0, 2, 1)),
                               kk[tri(i, j)], input_precision="ieee")
                kk = put(kk, tri(i, j), t)
    return kk


@triton.autotune(configs=autotune_configs(), key=["H", "HV", "K", "V", "BT", "IS_VARLEN", "USE_G", "GATE_LOG2",
                                                "STORE_A", "KKT_PREC", "METHOD", "PREC", "BASE_PREC",
                                                "REFINE_PREC", "WU_PREC"],
                 prune_configs_by={"early_config_prune": prune_configs})
@triton.jit(do_not_specialize=["T", "n_items"])
def gdn_intra_kernel(k, v, g, beta, w, u, Ai, cu_seqlens, chunk_indices, T, n_items,
                     H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr,
                     BV: tl.constexpr, BT: tl.constexpr, IS_VARLEN: tl.constexpr, USE_G: tl.constexpr,
                     GATE_LOG2: tl.constexpr, STORE_A: tl.constexpr, KKT_PREC: tl.constexpr,
                     METHOD: tl.constexpr, PREC: tl.constexpr, BASE_PREC: tl.constexpr,
                     REFINE_PREC: tl.constexpr, WU_PREC: tl.constexpr, KK_PER_HEAD: tl.constexpr,
                     NC: tl.constexpr):
    """``(w, u, Ai)`` for NC (chunk, key head) items and every value head of their group."""
    S: tl.constexpr = 16
    NB: tl.constexpr = BT // S
    G: tl.constexpr = HV // H
    row0, n_rows, kh = chunk_items(cu_seqlens, chunk_indices, T, n_items, H, BT, NC, IS_VARLEN)
    k_base = tl.multiple_of((row0 * H + kh) * K, 16)
    if not KK_PER_HEAD:  # computed once, live across the group's value heads
        kk = _kkt(k, k_base, n_rows, H, K, KK_SLICE, S, NB, NC, KKT_PREC)
    for gi in range(G):
        if KK_PER_HEAD:  # recomputed per value head (keys re-read from L2): fewer live registers
            kk = _kkt(k, k_base, n_rows, H, K, KK_SLICE, S, NB, NC, KKT_PREC)
        hv = kh * G + gi
        b = ()
        gv = ()
        for i in tl.static_range(NB):
            b = b + (_vec(beta, row0, n_rows, HV, hv, i, S),)
            if USE_G:
                gv = gv + (_vec(g, row0, n_rows, HV, hv, i, S),)
            else:
                gv = gv + (tl.zeros((NC, S), dtype=tl.float32),)
        L = ()
        for i in tl.static_range(NB):
            for j in tl.static_range(i + 1):
                L = L + (_gated(kk[tri(i, j)], b[i], gv[i], gv[j], n_rows, i, j, S, USE_G, GATE_LOG2),)
        X = invert_tiles(L, NC, S, NB, METHOD, PREC, BASE_PREC, REFINE_PREC)
        if STORE_A:
            ap = (Ai + tl.multiple_of((row0 * HV + hv) * BT, 16))[:, None, None]
            al = lanes(HV * BT, S, S)
            for i in tl.static_range(NB):
                for j in tl.static_range(NB):
                    if j <= i:
                        x = X[tri(i, j)]
                    else:
                        x = zeros(NC, S)
                    tl.store(ap + (i * S * HV * BT + j * S) + al,
                             x.to(Ai.dtype.element_ty, fp_downcast_rounding="rtne"), mask=row_mask(n_rows, i, S))
        # W and U. The barrier keeps ptxas from hoisting their loads (keys, values, the re-read beta and
        # gate) into the inversion, whose registers are full; without it one warp spilled 48 bytes.
        tl.debug_barrier()
        XP = ()
        bs = ()
        bg = ()
        for i in tl.static_range(NB):
            for j in tl.static_range(i + 1):
                XP = XP + (prep(X[tri(i, j)], WU_PREC),)
            bi = row_vector(beta, row0, n_rows, HV, hv, i, S)
            bs = bs + (bi,)
            if USE_G:
                bg = bg + (bi * exp_base(row_vector(g, row0, n_rows, HV, hv, i, S), GATE_LOG2),)
            else:
                bg = bg + (bi,)
        _apply(XP, k, k_base, H * K, w, tl.multiple_of((row0 * HV + hv) * K, 16), HV * K, bg, n_rows,
               NC, S, NB, K, BK, WU_PREC)
        _apply(XP, v, tl.multiple_of((row0 * HV + hv) * V, 16), HV * V, u, tl.multiple_of((row0 * HV + hv) * V, 16),
               HV * V, bs, n_rows, NC, S, NB, V, BV, WU_PREC)


#: Recompute ``K K^T`` for each value head of a group instead of keeping it live across them: at BT=64,
#: d 128, bf16 W/U (bench/compile_time) the 10 live K K^T tiles push 1,240 bytes per thread to local
#: memory (2 chunks / 2 warps); recomputing them (keys re-read, L2-resident) costs 154 more
#: warp-instructions per chunk and value head (10,140 against 9,986) and spills 440 (both measured before
#: the lane-offset addressing and the runtime K K^T loop; with them it spills nothing).
KK_PER_HEAD = True

#: Width of the K slices ``K K^T`` is accumulated over: 16 needs half the operand registers of 32 per
#: slice (BT=64, d 128, bf16 W/U: 0 spill bytes at 16, 16-40 at 32; bench/compile_time). A constexpr:
#: the kernel reads it as a global.
KK_SLICE = tl.constexpr(16)

#: Largest chunk size of the fused kernel: at 128 its 36 register tiles per chunk compile too slowly
#: and spill (bench/compile_time); no engine uses 128 for GDN.
MAX_CHUNK = 64


def _block(n: int) -> int:
    """Column slice of K / V per step: 32 wide keeps the slices' registers (NB tiles of [NC, 16, 32]
    per lane) from pushing the live K K^T and inverse tiles into local memory."""
    return max(16, min(32, 1 << (n - 1).bit_length()))


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
    recipe: Recipe | None = None,
    wu_precision: str | None = None,
    store_a: bool = True,
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None,
    **options: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Fused ``(w, u, A)``; same contract as :func:`deltainv.kernels.gdn.pytorch.chunk_gated_delta_rule_fwd_intra`.

    ``recipe`` (or ``method``/``precision``/``options``, resolved here) chooses the inversion.
    ``store_a=False`` skips writing ``A = (I + A)^-1`` (returned as ``None``): the inverse then
    never leaves registers. With ``chunk_indices`` given there is no device-to-host sync.
    ``out = (w, u, A)`` receives the results if given (contiguous, the shapes above).
    """
    if beta is None:
        raise ValueError("beta is required")
    recipe = recipe if recipe is not None else resolve(method, precision, **options)
    if recipe.name not in TRITON_METHODS:
        raise ValueError(f"method {recipe.name!r} has no fused Triton GDN kernel (have: {', '.join(TRITON_METHODS)})")
    H, HV = check_inputs(k, v, beta, g)
    B, T, _, K = k.shape
    V = v.shape[-1]
    BT = check_chunk_size(chunk_size)
    if BT > MAX_CHUNK:
        raise ValueError(f"the fused GDN kernel supports chunk sizes up to {MAX_CHUNK} (the engines use 64); "
                         f"got {BT}: use backend='torch' for it")
    wu = resolve("substitution", default_wu_precision(k.dtype, wu_precision)).precision
    k, v, beta = k.contiguous(), v.contiguous(), beta.contiguous()
    g = g.contiguous() if g is not None else None
    chunk_indices, n_chunks = launch_chunks(cu_seqlens, chunk_indices, T, B, BT)
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
    n_items = n_chunks * H
    if n_items and HV:
        gdn_intra_kernel[lambda meta: (triton.cdiv(n_items, meta["NC"]),)](
            k, v, g, beta, w, u, A, cu_seqlens, chunk_indices, T, n_items,
            H=H, HV=HV, K=K, V=V, BK=_block(K), BV=_block(V), BT=BT, IS_VARLEN=cu_seqlens is not None,
            USE_G=g is not None, GATE_LOG2=gate_log2, STORE_A=store_a,
            KKT_PREC="fp32" if k.dtype == torch.float32 else "native", METHOD=recipe.name,
            PREC=recipe.precision, BASE_PREC=recipe.base_precision, REFINE_PREC=recipe.refine_precision, WU_PREC=wu,
            KK_PER_HEAD=KK_PER_HEAD and HV > H,
        )
    return w, u, A
