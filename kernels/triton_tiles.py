"""Triton helpers shared by the generated tile kernels: square fp32 tiles, precision-aware products.

The kernels work on square fp32 register tiles: 16x16 (the smallest ``tl.dot`` shape) and, where the
16x16 code would not fit in registers, 32x32. ``mm`` maps the
project's precision vocabulary onto ``tl.dot``: ``fp32`` -> ``ieee``, ``tf32``, ``tf32x3``, and
``fp16`` / ``bf16`` by casting the operands (fp32 accumulation in every case).
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

#: The smallest tile edge. Every chunk size is a multiple of it.
TILE = 16


def interpreting() -> bool:
    """Triton's CPU interpreter is on (its autotuner cannot benchmark: use one config)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


#: Warp counts tried per chunk size. The kernels are straight-line code (no loops to pipeline, so
#: num_stages does nothing) and every config is a full compile of a large kernel: on an H100 the
#: 8 configs tried before cost 59 s (mxr_refine, BT=64, fp32) and 186 s (tf32x3) at first call.
#: A 16x16 ``tl.dot`` on tensor cores (tf32, fp16, bf16) is not shared out between warps: each warp
#: issues all of it (``python -m deltainv.bench.compile_time`` counts the same MMAs per warp at 1 to
#: 8 warps), so the tensor-core paths may be fastest with few warps and more programs per SM, while
#: ieee fp32 products (FMA, shared out) want more warps for their registers. Both ends are offered.
#: At BT = 128 one config (8 warps): fewest spills in every kernel, and half the first-call compile.
WARPS = {16: (1, 2), 32: (1, 2, 4), 64: (2, 4, 8), 128: (8,)}


def autotune_configs(bt: int) -> list[triton.Config]:
    configs = [triton.Config({}, num_warps=w, num_stages=1) for w in WARPS[bt]]
    return configs[:1] if interpreting() else configs


@triton.jit
def mm(a, b, acc, PREC: tl.constexpr):
    """``acc + a @ b`` with the operands rounded per ``PREC`` and fp32 accumulation."""
    if PREC == "fp16":
        return tl.dot(a.to(tl.float16), b.to(tl.float16), acc)
    elif PREC == "bf16":
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    elif PREC == "tf32":
        return tl.dot(a, b, acc, input_precision="tf32")
    elif PREC == "tf32x3":
        return tl.dot(a, b, acc, input_precision="tf32x3")
    elif PREC == "native":
        # 16-bit inputs multiplied as they are (exact products): the engines' kkt.
        return tl.dot(a, b, acc)
    else:
        return tl.dot(a, b, acc, input_precision="ieee")


@triton.jit
def load_tile(base, row0, col0, n_rows, stride, STRICT: tl.constexpr, SIZE: tl.constexpr = 16):
    """A ``SIZE x SIZE`` fp32 tile at (``row0``, ``col0``) of a row-major matrix with ``stride``; rows
    past ``n_rows`` read as 0, and with ``STRICT`` everything on or above the diagonal reads as 0."""
    o = tl.arange(0, SIZE)
    rows = row0 + o
    x = tl.load(base + rows[:, None] * stride + (col0 + o)[None, :], mask=(rows < n_rows)[:, None], other=0.0)
    x = x.to(tl.float32)
    if STRICT:
        x = tl.where(o[:, None] > o[None, :], x, 0.0)
    return x


@triton.jit
def store_tile(base, row0, col0, n_rows, stride, x, SIZE: tl.constexpr = 16):
    """Store a ``SIZE x SIZE`` tile (converted to the destination dtype, round to nearest even); rows
    past ``n_rows`` are skipped."""
    o = tl.arange(0, SIZE)
    rows = row0 + o
    ptrs = base + rows[:, None] * stride + (col0 + o)[None, :]
    tl.store(ptrs, x.to(ptrs.dtype.element_ty, fp_downcast_rounding="rtne"), mask=(rows < n_rows)[:, None])


@triton.jit
def eye_tile(SIZE: tl.constexpr = 16):
    o = tl.arange(0, SIZE)
    return tl.where(o[:, None] == o[None, :], 1.0, 0.0)


@triton.jit
def zero_tile(SIZE: tl.constexpr = 16):
    return tl.zeros([SIZE, SIZE], dtype=tl.float32)


@triton.jit
def diagonal_blocks(x, SIZE: tl.constexpr, BLOCK: tl.constexpr):
    """``x`` (``SIZE x SIZE``) with everything outside its diagonal ``BLOCK x BLOCK`` blocks set to 0."""
    o = tl.arange(0, SIZE) // BLOCK
    return tl.where(o[:, None] == o[None, :], x, 0.0)


@triton.jit
def lower_left_block(x, SIZE: tl.constexpr):
    """``x`` (``SIZE x SIZE``) with everything but its lower-left ``SIZE/2`` square set to 0."""
    o = tl.arange(0, SIZE)
    return tl.where((o[:, None] >= SIZE // 2) & (o[None, :] < SIZE // 2), x, 0.0)


@triton.jit
def load_vec(base, row0, n_rows, stride):
    """16 per-token scalars (beta or gate) as fp32; rows past ``n_rows`` read as 0."""
    rows = row0 + tl.arange(0, 16)
    return tl.load(base + rows * stride, mask=rows < n_rows, other=0.0).to(tl.float32)


@triton.jit
def load_rows(base, row0, col0, n_rows, stride, NCOLS: tl.constexpr, WIDTH: tl.constexpr):
    """A ``[16, WIDTH]`` slab in its stored dtype; rows past ``n_rows`` and columns past ``NCOLS`` read as 0."""
    rows = row0 + tl.arange(0, 16)
    cols = col0 + tl.arange(0, WIDTH)
    mask = (rows < n_rows)[:, None] & (cols < NCOLS)[None, :]
    return tl.load(base + rows[:, None] * stride + cols[None, :], mask=mask, other=0.0)


@triton.jit
def store_rows(base, row0, col0, n_rows, stride, NCOLS: tl.constexpr, WIDTH: tl.constexpr, x):
    rows = row0 + tl.arange(0, 16)
    cols = col0 + tl.arange(0, WIDTH)
    ptrs = base + rows[:, None] * stride + cols[None, :]
    mask = (rows < n_rows)[:, None] & (cols < NCOLS)[None, :]
    tl.store(ptrs, x.to(ptrs.dtype.element_ty, fp_downcast_rounding="rtne"), mask=mask)


@triton.jit
def gate_exp(gv, USE_G: tl.constexpr, GATE_LOG2: tl.constexpr):
    """``exp(g)`` (``exp2`` for base-2 gates), or 1 without gates."""
    if USE_G:
        if GATE_LOG2:
            return tl.exp2(gv)
        else:
            return tl.exp(gv)
    else:
        return gv * 0.0 + 1.0


@triton.jit
def gate_tile(kk, b_i, g_i, g_j, row0, n_rows, DIAG: tl.constexpr, USE_G: tl.constexpr, GATE_LOG2: tl.constexpr):
    """One tile of ``diag(beta) K K^T * exp(G_i - G_j)``: strictly lower on diagonal tiles, 0 on missing rows.

    The exponent is masked before ``exp``: above the diagonal (and against padded rows) ``G_i - G_j``
    may be large and positive, and ``0 * inf`` would poison the tile.
    """
    o = tl.arange(0, 16)
    m = ((row0 + o) < n_rows)[:, None] & (o[None, :] >= 0)
    if DIAG:
        m = m & (o[:, None] > o[None, :])
    a = kk * b_i[:, None]
    if USE_G:
        d = tl.where(m, g_i[:, None] - g_j[None, :], 0.0)
        if GATE_LOG2:
            a = a * tl.exp2(d)
        else:
            a = a * tl.exp(d)
    return tl.where(m, a, 0.0)
