"""``solve_tril`` on the GPU (``backend="triton"``): the engines' ``[B, T, H, BT]`` layout, NC chunk-heads
per program, one per warp, inverted by the shared :func:`~deltainv.kernels.tril.tiled.invert_tiles`.

A program's NC work items are consecutive (chunk, head) pairs: the heads of one chunk sit side by
side in memory (row ``t`` of ``A`` holds ``[H, BT]``), so a program reads and writes whole rows of
``H * BT`` elements when NC >= H. Items may come from different sequences (varlen); items past the
end and graph-capture padding rows (negative sequence id) are masked. Every tile of every real row is
loaded up front and every output element is written exactly once (zeros above the diagonal), so
the output needs no zero-fill.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from ..index import launch_chunks
from ..registry import Recipe, resolve
from ..triton_tiles import interpreting, tri, zeros
from .layout import check_engine_layout
from .tiled import invert_tiles

#: Methods with a Triton kernel.
TRITON_METHODS = ("substitution", "blocked", "mxr", "mxr_refine")

#: ``(NC, num_warps)`` autotune configs per method kind and chunk size, from the SASS counts of
#: ``python -m deltainv.bench.compile_time`` (bench/results/cpu-x86-64/compile_time.md).
#:
#: ``substitution``: one or two warps per program. Triton lays a ``[NC, 16, 16]`` element-wise tensor
#: out with its warps along the rows (256 elements cover 32 lanes eight times before a warp reaches
#: the chunk dimension), so with several warps every row step of the substitution crosses warps
#: through shared memory and a barrier (8,045 warp-instructions per chunk at BT = 64 with 4 chunks on
#: 4 warps, 479 barriers). One warp per program keeps each chunk in one warp, as the design asks, with
#: the same per-warp MMAs: 4,305 instructions at BT = 64 but 32 spilled bytes; two chunks on two warps
#: cost 5,297 without spills. At BT = 16 / 32 two chunks share one warp; at BT = 128 one chunk takes
#: two warps (one warp spills 11 KB).
#: ``doubling`` (``blocked``, ``mxr``, ``mxr_refine``): nearly all work is in the batched products,
#: which Triton spreads one chunk per warp (``warpsPerCTA = [NC, 1, 1]``); NC chunks on NC warps.
#: At BT = 128 (32x32 tiles) two warps per chunk.
CONFIGS: dict[str, dict[int, tuple[tuple[int, int], ...]]] = {
    "substitution": {16: ((2, 1), (1, 1)), 32: ((2, 1), (1, 1)), 64: ((2, 2), (1, 1)), 128: ((1, 2),)},
    "doubling": {16: ((4, 4), (8, 8)), 32: ((4, 4), (8, 8)), 64: ((4, 4), (4, 2)), 128: ((2, 4), (4, 8))},
}


def method_configs(method: str, bt: int) -> tuple[tuple[int, int], ...]:
    """The ``(NC, num_warps)`` configs offered to the autotuner for ``method`` at chunk size ``bt``."""
    return CONFIGS["substitution" if method == "substitution" else "doubling"][bt]


def tile_edge(method: str, bt: int) -> int:
    """Register tile edge: 16, except 32x32 tiles for the doubling methods at BT = 128 (half as many
    unrolled products, which is what compile time and register allocation grow with)."""
    return 32 if bt == 128 and method != "substitution" else 16


def autotune_configs() -> list[triton.Config]:
    """Every config of every method and chunk size; :func:`prune_configs` keeps the launch's."""
    seen = dict.fromkeys(c for kind in CONFIGS.values() for bt in sorted(kind) for c in kind[bt])
    return [triton.Config({"NC": nc}, num_warps=w, num_stages=1) for nc, w in seen]


def prune_configs(configs, named_args, **kwargs):
    want = method_configs(kwargs["METHOD"], kwargs["BT"])
    keep = sorted((c for c in configs if (c.kwargs["NC"], c.num_warps) in want),
                  key=lambda c: want.index((c.kwargs["NC"], c.num_warps)))
    return keep[:1] if interpreting() else keep


@triton.jit
def chunk_items(cu_seqlens, chunk_indices, T, n_items, H: tl.constexpr, BT: tl.constexpr, NC: tl.constexpr,
                IS_VARLEN: tl.constexpr):
    """This program's NC (chunk, head) items: ``(row0, n_rows, head)`` as ``[NC]`` vectors.

    ``row0`` (int64) is the chunk's first token (flat over ``B * T``), ``n_rows`` (int32) how many of its BT rows exist
    (0 for masked items, fewer than BT for a sequence's last chunk).
    """
    item = tl.program_id(0).to(tl.int64) * NC + tl.arange(0, NC)
    live = item < n_items
    chunk = item // H
    head = item % H
    if IS_VARLEN:
        seq = tl.load(chunk_indices + chunk * 2, mask=live, other=-1).to(tl.int64)
        pos = tl.load(chunk_indices + chunk * 2 + 1, mask=live, other=0).to(tl.int64)
        live = live & (seq >= 0)  # graph-capture padding rows
        seq = tl.maximum(seq, 0)
        bos = tl.load(cu_seqlens + seq, mask=live, other=0).to(tl.int64)
        eos = tl.load(cu_seqlens + seq + 1, mask=live, other=0).to(tl.int64)
    else:
        n_chunks = tl.cdiv(T, BT)
        bos = (chunk // n_chunks) * T
        pos = chunk % n_chunks
        eos = bos + T
    row0 = bos + pos * BT
    n_rows = tl.where(live, tl.minimum(eos - row0, BT), 0).to(tl.int32)  # int32 row compares: fewer registers
    return row0, n_rows, head


@triton.jit
def lane_offsets(row_stride: tl.constexpr, S: tl.constexpr):
    """``[1, S, S]`` int32 offsets of an ``S x S`` tile's elements from its first element.

    Every tile of a chunk is addressed as this one set plus a compile-time constant (``tile_at``), so
    the constant folds into the instructions' immediate offsets: one pointer per lane and tile row of
    elements instead of one per tile (folding the tile's row into this set keeps a register per tile
    row, which spilled at BT = 64).
    """
    o = tl.arange(0, S)
    return o[None, :, None] * row_stride + o[None, None, :]


@triton.constexpr_function
def tile_at(row_stride, I, J, S):
    """Offset of tile ``(I, J)``'s first element from the chunk's first element."""
    return int(I) * int(S) * int(row_stride) + int(J) * int(S)


@triton.jit
def row_mask(n_rows, I: tl.constexpr, S: tl.constexpr):
    o = tl.arange(0, S)
    return (I * S + o)[None, :, None] < n_rows[:, None, None]


@triton.jit
def solve_tril_frame(A, Ai, cu_seqlens, chunk_indices, T, n_items, H: tl.constexpr, BT: tl.constexpr,
                     S: tl.constexpr, IS_VARLEN: tl.constexpr, METHOD: tl.constexpr, PREC: tl.constexpr,
                     BASE_PREC: tl.constexpr, REFINE_PREC: tl.constexpr, NC: tl.constexpr):
    """Load NC chunks' strictly lower tiles, invert them, store every tile of every real row once."""
    NB: tl.constexpr = BT // S
    row0, n_rows, head = chunk_items(cu_seqlens, chunk_indices, T, n_items, H, BT, NC, IS_VARLEN)
    base = (row0 * H + head) * BT
    a = (A + base)[:, None, None]  # [NC, 1, 1] chunk pointers
    ai = (Ai + base)[:, None, None]
    off = lane_offsets(H * BT, S)
    o = tl.arange(0, S)
    L = ()
    for i in tl.static_range(NB):  # every load issued before any arithmetic
        for j in tl.static_range(i + 1):
            x = tl.load(a + tile_at(H * BT, i, j, S) + off, mask=row_mask(n_rows, i, S), other=0.0)
            x = x.to(tl.float32)
            if i == j:
                x = tl.where((o[:, None] > o[None, :])[None, :, :], x, 0.0)
            L = L + (x,)
    X = invert_tiles(L, NC, S, NB, METHOD, PREC, BASE_PREC, REFINE_PREC)
    for i in tl.static_range(NB):
        for j in tl.static_range(NB):
            ptrs = ai + tile_at(H * BT, i, j, S) + off
            if j <= i:
                x = X[tri(i, j)]
            else:
                x = zeros(NC, S)
            tl.store(ptrs, x.to(Ai.dtype.element_ty, fp_downcast_rounding="rtne"), mask=row_mask(n_rows, i, S))


@triton.autotune(configs=autotune_configs(), key=["H", "BT", "S", "IS_VARLEN", "METHOD", "PREC", "BASE_PREC",
                                                "REFINE_PREC"], prune_configs_by={"early_config_prune": prune_configs})
# No alignment specialization of A/Ai: with 16-byte alignment Triton vectorizes the bf16 stores 8 wide
# and makes that store layout (8 columns per lane) the layout of the whole inverse, where the row
# substitution costs twice the instructions (bench/compile_time); the accesses stay coalesced without it.
@triton.jit(do_not_specialize=["T", "n_items"], do_not_specialize_on_alignment=["A", "Ai"])
def solve_tril_kernel(A, Ai, cu_seqlens, chunk_indices, T, n_items, H: tl.constexpr, BT: tl.constexpr,
                      S: tl.constexpr, IS_VARLEN: tl.constexpr, METHOD: tl.constexpr, PREC: tl.constexpr,
                      BASE_PREC: tl.constexpr, REFINE_PREC: tl.constexpr, NC: tl.constexpr):
    """``Ai = (I + A)^-1`` for every chunk of ``A`` ``[B, T, H, BT]``; NC (chunk, head) items per program."""
    solve_tril_frame(A, Ai, cu_seqlens, chunk_indices, T, n_items, H, BT, S, IS_VARLEN, METHOD, PREC, BASE_PREC,
                     REFINE_PREC, NC)


def solve_tril(
    A: torch.Tensor,
    cu_seqlens: torch.Tensor | None = None,
    chunk_indices: torch.Tensor | None = None,
    output_dtype: torch.dtype | None = torch.float32,
    *,
    method: str | Recipe | None = None,
    precision: str | None = None,
    recipe: Recipe | None = None,
    check_finite: bool = False,
    out: torch.Tensor | None = None,
    **options: Any,
) -> torch.Tensor:
    """``(I + A)^-1`` per chunk of ``A`` ``[B, T, H, BT]`` (fp32, bf16 or fp16) for ``recipe`` (or
    ``method``/``precision``/``options``, resolved here).

    Contract of :func:`deltainv.kernels.solve_tril`. With ``chunk_indices`` given (as vLLM passes
    them) there is no device-to-host synchronisation; ``cu_seqlens`` values are then trusted, as the
    engines' own kernels trust them. Without it the chunk table is built on the host and
    ``cu_seqlens`` is validated on the way. ``out`` (``[B, T, H, BT]``, contiguous) receives the result.
    """
    recipe = recipe if recipe is not None else resolve(method, precision, **options)
    if recipe.name not in TRITON_METHODS:
        raise ValueError(f"method {recipe.name!r} has no Triton kernel (Triton methods: {', '.join(TRITON_METHODS)})")
    B, T, H, BT = check_engine_layout(A)
    if check_finite and not bool(torch.isfinite(A).all()):
        raise ValueError(f"A holds {int((~torch.isfinite(A)).sum())} non-finite value(s); "
                         "pass check_finite=False to let them propagate")
    A = A.contiguous()
    if out is None:
        out = torch.empty(B, T, H, BT, dtype=A.dtype if output_dtype is None else output_dtype, device=A.device)
    elif out.shape != A.shape or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous tensor of shape {list(A.shape)}")
    chunk_indices, n_chunks = launch_chunks(cu_seqlens, chunk_indices, T, B, BT)
    n_items = n_chunks * H
    if n_items:
        solve_tril_kernel[lambda meta: (triton.cdiv(n_items, meta["NC"]),)](
            A, out, cu_seqlens, chunk_indices, T, n_items, H=H, BT=BT, S=tile_edge(recipe.name, BT),
            IS_VARLEN=cu_seqlens is not None, METHOD=recipe.name, PREC=recipe.precision,
            BASE_PREC=recipe.base_precision, REFINE_PREC=recipe.refine_precision,
        )
    return out


def invert(L: torch.Tensor, precision: str, *, method: str, **options: Any) -> torch.Tensor:
    """Registry entry: ``[..., C, C]`` strictly lower fp32 -> ``(I + L)^-1`` fp32, via the engine layout.

    A batch of N chunk matrices is the engine layout ``[1, N*C, 1, C]``: consecutive C-row chunks.
    """
    C = L.shape[-1]
    X = solve_tril(L.reshape(1, -1, 1, C), recipe=resolve(method, precision, **options))
    return X.reshape(L.shape)


def substitution(L, precision="fp32"):
    return invert(L, precision, method="substitution")


def blocked(L, precision="fp32"):
    return invert(L, precision, method="blocked")


def mxr(L, precision="fp32", base_precision=None):
    return invert(L, precision, method="mxr", base_precision=base_precision)


def mxr_refine(L, precision="fp32", refine_precision=None, base_precision=None):
    return invert(L, precision, method="mxr_refine", refine_precision=refine_precision, base_precision=base_precision)
