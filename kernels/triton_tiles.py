"""Triton building blocks shared by every inversion frame: batched square tiles and their products.

A *tile* is ``[NC, S, S]`` fp32: the same ``S x S`` block (S = 16, or 32 at BT = 128) of NC
chunk matrices, one chunk per warp. Products are batched ``tl.dot`` over the leading dimension, so
the compiler spreads the NC chunks over the warps (``warpsPerCTA = [NC, 1, 1]``) instead of
repeating a 2-D 16x16 product in every warp, which is what one-chunk-per-program kernels do.

An *operand* is a tile prepared for the products it feeds (:func:`prep`), once, whatever the
number of products: ``fp32`` keeps the tile (``ieee`` dots), ``tf32`` rounds it (``cvt.rna``),
``tf32x3`` splits it into ``hi = tf32(x)`` and ``lo = tf32(x - hi)``, ``fp16`` / ``bf16`` convert
it. Triton's own ``input_precision="tf32x3"`` redoes that split for both operands on every call:
splitting once and reusing the parts removes most of the selects and shuffles around the MMAs.
:func:`dot` then maps the precision vocabulary (:mod:`deltainv.kernels.precision`) onto tensor-core
products with fp32 accumulation, matching :func:`deltainv.kernels.precision.matmul` term by term
(``(lo hi + hi lo) + hi hi`` for tf32x3).
"""

from __future__ import annotations

import os

import triton
import triton.language as tl


def interpreting() -> bool:
    """Triton's CPU interpreter is on (its autotuner cannot benchmark: use one config)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def round_tf32(x):
    """fp32 -> the nearest tf32 value (10 mantissa bits), ties away from zero, as ``cvt.rna.tf32.f32``.

    Sign-magnitude bits: adding half an ulp of the 13 dropped bits and truncating rounds the
    magnitude half away from zero (the same bit trick as :func:`deltainv.kernels.precision.round_tf32`).
    """
    bits = x.to(tl.uint32, bitcast=True)
    return ((bits + 0x1000) & 0xFFFFE000).to(tl.float32, bitcast=True)


@triton.jit
def prep(x, PREC: tl.constexpr):
    """The operand form of fp32 tile ``x`` for products in ``PREC``: a tuple of one or two parts."""
    if PREC == "tf32x3":
        hi = round_tf32(x)
        return (hi, round_tf32(x - hi))
    elif PREC == "tf32":
        return (round_tf32(x),)
    elif PREC == "fp16":
        return (x.to(tl.float16),)
    elif PREC == "bf16":
        return (x.to(tl.bfloat16),)
    else:
        return (x,)


@triton.jit
def dot(a, b, acc, PREC: tl.constexpr):
    """``acc + a @ b`` for operands from :func:`prep` (fp32 accumulation)."""
    if PREC == "tf32x3":
        # Small terms first, so they are not lost against hi @ hi (as Triton's own 3xTF32 does).
        t = tl.dot(a[1], b[0], input_precision="tf32")
        t = tl.dot(a[0], b[1], t, input_precision="tf32")
        return tl.dot(a[0], b[0], t, input_precision="tf32") + acc
    elif PREC == "tf32":
        return tl.dot(a[0], b[0], acc, input_precision="tf32")
    elif PREC == "fp32":
        return tl.dot(a[0], b[0], acc, input_precision="ieee")
    else:
        return tl.dot(a[0], b[0], acc)


@triton.jit
def mm(a, b, PREC: tl.constexpr):
    """``a @ b`` of two fp32 tiles used once each."""
    return dot(prep(a, PREC), prep(b, PREC), tl.zeros(a.shape, dtype=tl.float32), PREC)


@triton.jit
def eye(NC: tl.constexpr, S: tl.constexpr):
    """``[NC, S, S]`` identity tiles."""
    o = tl.arange(0, S)
    return tl.broadcast_to(tl.where(o[:, None] == o[None, :], 1.0, 0.0)[None, :, :], (NC, S, S))


@triton.jit
def zeros(NC: tl.constexpr, S: tl.constexpr):
    return tl.zeros((NC, S, S), dtype=tl.float32)


@triton.jit
def band(x, S: tl.constexpr, LEVEL: tl.constexpr):
    """The entries of tile ``x`` that one doubling level joins: row block ``2p + 1``, column block
    ``2p`` of the ``LEVEL x LEVEL`` blocks, i.e. the lower-left quarter of each ``2 LEVEL`` diagonal block."""
    o = tl.arange(0, S)
    r = o[:, None]
    c = o[None, :]
    keep = (r // (2 * LEVEL) == c // (2 * LEVEL)) & ((r // LEVEL) % 2 == 1) & ((c // LEVEL) % 2 == 0)
    return tl.where(keep[None, :, :], x, 0.0)


@triton.jit
def block_diagonal(x, S: tl.constexpr, BLOCK: tl.constexpr):
    """Tile ``x`` with everything outside its diagonal ``BLOCK x BLOCK`` blocks set to 0."""
    o = tl.arange(0, S) // BLOCK
    return tl.where((o[:, None] == o[None, :])[None, :, :], x, 0.0)


@triton.constexpr_function
def log2(n):
    """``log2`` of a power of two, at compile time (level counts of the doublings)."""
    return int(n).bit_length() - 1


@triton.constexpr_function
def pow2(n):
    """``2 ** n`` at compile time (a block edge at doubling level ``n``)."""
    return 1 << int(n)


@triton.constexpr_function
def tri(i, j):
    """Position of tile ``(i, j)``, ``j <= i``, in a row-major lower-triangular tuple of tiles."""
    return i * (i + 1) // 2 + j


@triton.jit
def put(tiles, IDX: tl.constexpr, value):
    """``tiles`` with element ``IDX`` replaced by ``value`` (tuples are immutable; this only renames)."""
    out = ()
    for n in tl.static_range(len(tiles)):
        if n == IDX:
            out = out + (value,)
        else:
            out = out + (tiles[n],)
    return out


@triton.jit
def lanes(row_stride: tl.constexpr, S: tl.constexpr, WIDTH: tl.constexpr):
    """``[1, S, WIDTH]`` int32 offsets of a tile's elements from its chunk's first element.

    Every tile of a chunk is addressed as its chunk pointer ``[NC, 1, 1]`` plus this one set plus a
    compile-time constant (row block, column slice), so the constant folds into the load's immediate
    offset: two 64-bit addresses per lane and tensor instead of one per tile row and column slice
    (64-bit per-element offsets, ``base[:, None, None] + rows * stride + cols``, were hoisted out of
    the fused kernels' loops and spilled).
    """
    o = tl.arange(0, S)
    return o[None, :, None] * row_stride + tl.arange(0, WIDTH)[None, None, :]


@triton.jit
def col_mask(col0, WIDTH: tl.constexpr, NCOLS: tl.constexpr):
    """``[1, 1, WIDTH]`` mask of the columns ``col0 ..`` that exist."""
    c = col0 + tl.arange(0, WIDTH)
    return (c < NCOLS)[None, None, :]


@triton.jit
def row_vector(ptr, row0, n_rows, stride: tl.constexpr, col, I: tl.constexpr, S: tl.constexpr):
    """A per-token scalar (beta, a scalar gate) of rows ``I*S ..`` of each chunk as ``[NC, S, 1]`` fp32,
    0 past the end: element ``(row0 + row) * stride + col`` (``row0``: ``[NC]`` first rows, ``col``
    the head). The fused kernels re-read these after the inverse rather than keep them live through it."""
    o = tl.arange(0, S)
    p = (ptr + row0 * stride + col)[:, None, None]  # chunk pointer + lane offsets + immediate, as lanes
    return tl.load(p + I * S * stride + (o * stride)[None, :, None],
                   mask=(I * S + o)[None, :, None] < n_rows[:, None, None], other=0.0).to(tl.float32)


@triton.jit
def exp_base(x, LOG2: tl.constexpr):
    """``2**x`` for base-2 gates (fla's), ``e**x`` for natural-log ones."""
    if LOG2:
        return tl.exp2(x)
    else:
        return tl.exp(x)
