"""The one Triton inverse: ``X = (I + L)^-1`` of NC chunk matrices held as a tuple of batched tiles.

Every Triton frame (``solve_tril``, the fused GDN intra kernel) loads its chunks' ``L`` as the lower
tiles of an ``NB x NB`` grid of ``[NC, S, S]`` fp32 tiles (``BT = NB * S``; diagonal tiles strictly
lower, tile ``(i, j)`` at position :func:`~deltainv.kernels.triton_tiles.tri` ``(i, j)``) and calls
:func:`invert_tiles`, which returns ``X``'s lower tiles in the same order. The arithmetic is the
PyTorch reference's (:mod:`deltainv.kernels.tril.pytorch`), product for product:

- ``substitution``: forward substitution inside each 16x16 diagonal tile (fp32, no products), then
  fla's block forward substitution ``X_ij = -(X_ii L_ij) X_jj`` / ``-X_ii sum_k L_ik X_kj`` (``PREC``).
- ``blocked``: doubling from 1x1 blocks, ``D <- D - (D L_s) D`` with ``L_s`` the entries a level
  joins (:func:`~deltainv.kernels.triton_tiles.band`): level 1 costs nothing (``D = I - L_1``),
  each further level inside a tile two masked products, then the same doubling across tiles.
- ``mxr``: the product form ``(I - L)(I + L^2)(I + L^4)(I + L^8)`` on each 16x16 diagonal block
  (``BASE_PREC``), then doubling (``PREC``).
- ``mxr_refine``: ``mxr``, then one Newton-Schulz step ``X + X R``, ``R = I - X - L X`` (``REFINE_PREC``).

Index arithmetic is constexpr (``tl.static_range``), so each (method, BT) compiles to straight-line
code with only the nonzero tile products; the tuple only names tiles.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..triton_tiles import band, block_diagonal, dot, eye, log2, mm, pow2, prep, put, tri, zeros


@triton.jit
def forward_substitution(L, NC: tl.constexpr, S: tl.constexpr):
    """``(I + L)^-1`` of a strictly lower tile, row by row in fp32: ``S_r = -L_r - L_r[:r] S[:r]``.

    With one chunk per warp the row reductions stay inside a warp (no block-wide barrier).
    """
    o = tl.arange(0, S)
    X = -L  # rows 0 and 1 are final already; rows r.. still hold -L, so L itself is dead from here
    for r in tl.static_range(2, S):
        row = tl.sum(tl.where((o == r)[None, :, None], X, 0.0), 1)      # -L_r: [NC, S]
        row = tl.where((o < r)[None, :], row, 0.0)
        row = row + tl.sum(row[:, :, None] * X, 1)
        X = tl.where((o == r)[None, :, None], row[:, None, :], X)
    return X + eye(NC, S)


@triton.jit
def double_in_tile(L, D, FROM: tl.constexpr, S: tl.constexpr, PREC: tl.constexpr):
    """From ``D``, the inverses of the diagonal ``FROM``-blocks of tile ``I + L``, to the whole tile's
    inverse: at each level ``D <- D - (D L_s) D``, which fills exactly the blocks that level joins."""
    for n in tl.static_range(log2(S // FROM)):
        d = prep(D, PREC)
        P = dot(d, prep(band(L, S, FROM * pow2(n)), PREC), tl.zeros(D.shape, dtype=tl.float32), PREC)
        D = D - dot(prep(P, PREC), d, tl.zeros(D.shape, dtype=tl.float32), PREC)
    return D


@triton.jit
def product_form(L, NC: tl.constexpr, S: tl.constexpr, PREC: tl.constexpr):
    """``(I - L)(I + L^2)(I + L^4)(I + L^8)`` on each diagonal 16x16 block of the tile (6 products)."""
    Lb = block_diagonal(L, S, 16)
    X = eye(NC, S) - Lb
    Y = mm(Lb, Lb, PREC)
    for step in tl.static_range(1, 4):
        X = dot(prep(X, PREC), prep(Y, PREC), X, PREC)
        if step < 3:
            y = prep(Y, PREC)
            Y = dot(y, y, tl.zeros(Y.shape, dtype=tl.float32), PREC)
    return X


@triton.jit
def diagonal_inverse(L, NC: tl.constexpr, S: tl.constexpr, METHOD: tl.constexpr, PREC: tl.constexpr,
                     BASE_PREC: tl.constexpr):
    """The inverse of one diagonal tile by a doubling ``METHOD``'s base (``substitution`` inverts its
    diagonal tiles inside :func:`block_substitution`, each just before its row)."""
    if METHOD == "blocked":
        return double_in_tile(L, eye(NC, S) - band(L, S, 1), 2, S, PREC)
    else:
        return double_in_tile(L, product_form(L, NC, S, BASE_PREC), 16, S, PREC)


@triton.jit
def block_substitution(L, NC: tl.constexpr, S: tl.constexpr, NB: tl.constexpr, PREC: tl.constexpr):
    """fla's merges, tile row by tile row: ``X_ij = -(X_ii L_ij) X_jj`` next to the diagonal,
    ``-X_ii sum_k L_ik X_kj`` beyond. Each diagonal tile is inverted just before its row, so each row's
    ``L`` tiles die with it (fewer live registers than fla's diagonal-by-diagonal order).

    (Loop-dependent indices are written inline: Triton turns a name bound inside an unrolled loop
    into a tensor, and tuple indices must stay compile-time constants.)
    """
    X = (forward_substitution(L[0], NC, S),)
    for n in tl.static_range(1, len(L)):
        X = X + (zeros(NC, S),)
    for i in tl.static_range(1, NB):
        X = put(X, tri(i, i), forward_substitution(L[tri(i, i)], NC, S))
        for j in tl.static_range(i):
            if j == i - 1:
                t = mm(X[tri(i, i)], L[tri(i, i - 1)], PREC)
                X = put(X, tri(i, i - 1), -mm(t, X[tri(i - 1, i - 1)], PREC))
            else:
                acc = zeros(NC, S)
                for k in tl.static_range(j, i):
                    acc = dot(prep(L[tri(i, k)], PREC), prep(X[tri(k, j)], PREC), acc, PREC)
                X = put(X, tri(i, j), -mm(X[tri(i, i)], acc, PREC))
    return X


@triton.jit
def merge_pair(L, X, NC: tl.constexpr, S: tl.constexpr, R0: tl.constexpr, N: tl.constexpr, PREC: tl.constexpr):
    """Join the ``N``-tile diagonal blocks at tile rows ``R0`` and ``R0 + N``: ``X21 = -(X22 L21) X11``,
    tile-sparse (``X22``, ``X11`` lower block triangular, ``L21`` full); each operand tile prepared once."""
    x22 = ()
    for i in tl.static_range(N):
        for k in tl.static_range(i + 1):
            x22 = x22 + (prep(X[tri(R0 + N + i, R0 + N + k)], PREC),)
    l21 = ()
    for k in tl.static_range(N):
        for j in tl.static_range(N):
            l21 = l21 + (prep(L[tri(R0 + N + k, R0 + j)], PREC),)
    P = ()
    for i in tl.static_range(N):
        for j in tl.static_range(N):
            acc = zeros(NC, S)
            for k in tl.static_range(i + 1):
                acc = dot(x22[tri(i, k)], l21[k * N + j], acc, PREC)
            P = P + (prep(acc, PREC),)
    x11 = ()
    for j in tl.static_range(N):
        for l in tl.static_range(j + 1):
            x11 = x11 + (prep(X[tri(R0 + j, R0 + l)], PREC),)
    for i in tl.static_range(N):
        for l in tl.static_range(N):
            acc = zeros(NC, S)
            for j in tl.static_range(l, N):
                acc = dot(P[i * N + j], x11[tri(j, l)], acc, PREC)
            X = put(X, tri(R0 + N + i, R0 + l), -acc)
    return X


@triton.jit
def block_doubling(L, X, NC: tl.constexpr, S: tl.constexpr, NB: tl.constexpr, PREC: tl.constexpr):
    """MBH across tiles: level by level, every pair of neighbouring diagonal blocks is joined."""
    for level in tl.static_range(log2(NB)):
        for p in tl.static_range(NB // (2 * pow2(level))):
            X = merge_pair(L, X, NC, S, 2 * p * pow2(level), pow2(level), PREC)
    return X


@triton.jit
def refine(L, X, NC: tl.constexpr, S: tl.constexpr, NB: tl.constexpr, PREC: tl.constexpr):
    """One Newton-Schulz step ``X + X R``, ``R = I - X - L X``, tile-sparse, column by column."""
    Y = X
    for j in tl.static_range(NB):
        R = ()
        for i in tl.static_range(j, NB):
            lx = zeros(NC, S)
            for k in tl.static_range(j, i + 1):
                lx = dot(prep(L[tri(i, k)], PREC), prep(X[tri(k, j)], PREC), lx, PREC)
            if i == j:
                R = R + (eye(NC, S) - X[tri(i, j)] - lx,)
            else:
                R = R + (-X[tri(i, j)] - lx,)
        for i in tl.static_range(j, NB):
            acc = X[tri(i, j)]
            for k in tl.static_range(j, i + 1):
                acc = dot(prep(X[tri(i, k)], PREC), prep(R[k - j], PREC), acc, PREC)
            Y = put(Y, tri(i, j), acc)
    return Y


@triton.jit
def invert_tiles(L, NC: tl.constexpr, S: tl.constexpr, NB: tl.constexpr, METHOD: tl.constexpr,
                 PREC: tl.constexpr, BASE_PREC: tl.constexpr, REFINE_PREC: tl.constexpr):
    """``X = (I + L)^-1`` for NC chunks: ``L`` and the result are tuples of the ``NB (NB + 1) / 2``
    lower ``[NC, S, S]`` fp32 tiles in :func:`~deltainv.kernels.triton_tiles.tri` order."""
    if METHOD == "substitution":
        return block_substitution(L, NC, S, NB, PREC)
    X = ()
    for i in tl.static_range(NB):
        for j in tl.static_range(i + 1):
            if i == j:
                X = X + (diagonal_inverse(L[tri(i, i)], NC, S, METHOD, PREC, BASE_PREC),)
            else:
                X = X + (zeros(NC, S),)
    X = block_doubling(L, X, NC, S, NB, PREC)
    if METHOD == "mxr_refine":
        X = refine(L, X, NC, S, NB, REFINE_PREC)
    return X
