"""Every triangular-inversion method as plain, device-agnostic PyTorch.

Each function takes ``L``: ``[..., C, C]`` float32, strictly lower triangular (the caller masks
it), C a power of two, and returns ``X = (I + L)^-1``: ``[..., C, C]`` float32, unit lower
triangular. ``precision`` (see :mod:`deltainv.kernels.precision`) rounds the operands of every
matrix product; element-wise work and accumulation stay fp32, as in a GPU kernel.

These are the numerical definitions the Triton kernels are tested against, so they follow the
kernels' arithmetic (which products, in which order), not the shortest PyTorch.
"""

from __future__ import annotations

import math

import torch

from ..precision import matmul
from ..registry import newton_schulz_converged_iters

#: Size of the diagonal blocks that ``substitution`` solves by forward substitution and that
#: ``mxr`` inverts with the product form: one fp16 MMA fragment, and the largest size at which
#: the product form's intermediates cannot overflow fp16 when |L_ij| <= 1 (they reach C(15,7)).
BASE_BLOCK = 16


def _eye_like(L: torch.Tensor) -> torch.Tensor:
    return torch.eye(L.shape[-1], dtype=L.dtype, device=L.device)


def diag_blocks(M: torch.Tensor, size: int) -> torch.Tensor:
    """The diagonal ``size x size`` blocks of ``M``: ``[..., n, n] -> [..., n // size, size, size]``."""
    n = M.shape[-1]
    m = n // size
    blocks = M.reshape(*M.shape[:-2], m, size, m, size)
    return torch.diagonal(blocks, dim1=-4, dim2=-2).movedim(-1, -3)


def forward_substitution(L: torch.Tensor) -> torch.Tensor:
    """Row-by-row forward substitution, fp32 on "CUDA cores" (no precision knob, as in fla).

    Row i of the strictly-lower part ``S = X - I`` is ``S_i = -L_i - L_i[:i] S[:i]``: fla's
    ``solve_tril_16x16_kernel`` recurrence, vectorised over all leading dimensions.
    """
    n = L.shape[-1]
    S = torch.zeros_like(L)
    for i in range(1, n):
        row = L[..., i : i + 1, :i] @ S[..., :i, :]
        S[..., i, :] = -L[..., i, :] - row[..., 0, :]
    return S + _eye_like(L)


def product_form(L: torch.Tensor, precision: str) -> torch.Tensor:
    """The product form (repeated squaring) ``(I - L)(I + L^2)(I + L^4) ... (I + L^(C/2))``.

    Exact in exact arithmetic because ``L^C = 0``; ``2 log2 C - 2`` products. Numerically unstable:
    the powers grow like binomial coefficients and cancel (the paper's MCH, Sec. 3.2).
    """
    n = L.shape[-1]
    X = _eye_like(L) - L
    steps = int(math.log2(n))
    if steps < 2:
        return X
    Y = matmul(L, L, precision)
    for i in range(1, steps):
        X = X + matmul(X, Y, precision)
        if i < steps - 1:
            Y = matmul(Y, Y, precision)
    return X


def block_doubling(L: torch.Tensor, D: torch.Tensor, precision: str) -> torch.Tensor:
    """Recursive block inversion from the diagonal-block inverses ``D`` up to the whole matrix.

    ``D``: ``[..., C // s, s, s]``, the inverses of the diagonal ``s x s`` blocks of ``I + L``.
    Each level pairs neighbouring blocks and fills the new off-diagonal block with
    ``X21 = -(X22 L21) X11`` (the paper's MBH, logarithmically stable), until ``s = C``.
    """
    n = L.shape[-1]
    s = D.shape[-1]
    while s < n:
        L21 = diag_blocks(L, 2 * s)[..., s:, :s]
        X11 = D[..., 0::2, :, :]
        X22 = D[..., 1::2, :, :]
        X21 = -matmul(matmul(X22, L21, precision), X11, precision)
        top = torch.cat([X11, torch.zeros_like(X11)], dim=-1)
        bottom = torch.cat([X21, X22], dim=-1)
        D = torch.cat([top, bottom], dim=-2)
        s *= 2
    return D[..., 0, :, :]


def substitution(L: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """fla's ``solve_tril``: forward substitution on the 16x16 diagonal blocks, then block merges.

    Off-diagonal 16x16 blocks are filled one block-row at a time (block forward substitution):
    ``X_ij = -(X_ii L_ij) X_jj`` next to the diagonal and ``X_ij = -X_ii (sum_k L_ik X_kj)``
    further out, with the products in fla's order. fla stops at C = 64; the same recurrence
    extends to 128. ``precision`` applies to the merge products only (fla's ``DOT_PRECISION``).
    """
    n = L.shape[-1]
    b = min(BASE_BLOCK, n)
    m = n // b
    diag = forward_substitution(diag_blocks(L, b))
    if m == 1:
        return diag[..., 0, :, :]
    Lb = L.reshape(*L.shape[:-2], m, b, m, b)
    blk = [[None] * m for _ in range(m)]
    for i in range(m):
        blk[i][i] = diag[..., i, :, :]
    for dist in range(1, m):
        for j in range(m - dist):
            i = j + dist
            if dist == 1:
                blk[i][j] = -matmul(matmul(blk[i][i], Lb[..., i, :, j, :], precision), blk[j][j], precision)
            else:
                acc = matmul(Lb[..., i, :, j, :], blk[j][j], precision)
                for k in range(j + 1, i):
                    acc = acc + matmul(Lb[..., i, :, k, :], blk[k][j], precision)
                blk[i][j] = -matmul(blk[i][i], acc, precision)
    zero = torch.zeros_like(diag[..., 0, :, :])
    rows = [torch.cat([blk[i][j] if j <= i else zero for j in range(m)], dim=-1) for i in range(m)]
    return torch.cat(rows, dim=-2)


def blocked(L: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """Recursive block inversion doubling from 1x1 blocks: ``2 log2 C`` levels of products."""
    D = torch.ones(*L.shape[:-2], L.shape[-1], 1, 1, dtype=L.dtype, device=L.device)
    return block_doubling(L, D, precision)


def product(L: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """The product form over the whole chunk. Unstable: kept for study and as a canary."""
    return product_form(L, precision)


def mxr(L: torch.Tensor, precision: str = "fp32", base_precision: str | None = None) -> torch.Tensor:
    """The paper's MXR: product form inside the 16x16 diagonal blocks, then doubling 16 -> C.

    ``base_precision`` (default ``precision``) is the precision of the 16x16 product form alone.
    Its powers reach C(15,7) * max|L|^15 before they cancel, so it needs more operand bits than
    the doubling merges, whose operands are bounded sub-blocks of the inverse.
    """
    b = min(BASE_BLOCK, L.shape[-1])
    D = product_form(diag_blocks(L, b), base_precision or precision)
    return block_doubling(L, D, precision)


def newton_schulz_step(L: torch.Tensor, X: torch.Tensor, precision: str) -> torch.Tensor:
    """One Newton-Schulz step ``X <- X (2I - (I + L) X)``, written as ``X + X R``.

    ``R = I - X - L X`` is formed without multiplying by the identity, so the rounding of the
    operands touches only ``L X`` and the small correction ``X R``, not ``X`` itself.
    """
    R = _eye_like(L) - X - matmul(L, X, precision)
    return X + matmul(X, R, precision)


def mxr_refine(
    L: torch.Tensor,
    precision: str = "fp32",
    refine_precision: str | None = None,
    base_precision: str | None = None,
) -> torch.Tensor:
    """MXR followed by one Newton-Schulz step (2 more products); squares the residual.

    ``refine_precision`` and ``base_precision`` (the 16x16 product form, see :func:`mxr`) default
    to ``precision``.
    """
    X = mxr(L, precision, base_precision)
    return newton_schulz_step(L, X, refine_precision or precision)


def newton_schulz(L: torch.Tensor, precision: str = "fp32", iters: int | None = None) -> torch.Tensor:
    """Newton-Schulz iteration from ``X0 = I / (2C)``; ``iters`` defaults to enough to converge."""
    n = L.shape[-1]
    if iters is None:
        iters = newton_schulz_converged_iters(n)
    X = _eye_like(L).expand_as(L) / (2 * n)
    for _ in range(iters):
        X = newton_schulz_step(L, X, precision)
    return X


def triangular_solve(L: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """``torch.linalg.solve_triangular`` in fp32 (LAPACK/cuBLAS TRSM); a reference point."""
    eye = _eye_like(L).expand_as(L)
    return torch.linalg.solve_triangular(L, eye, upper=False, unitriangular=True)
