"""fla 0.6.0's RWKV-7 inverse, emulated: the fp16 product form on 16x16 blocks plus fp16 merges.

``chunk_rwkv7`` runs ``chunk_dplr_delta_rule`` with ``safe_gate=True, chunk_size=64``, which
inverts ``(I - A_ab)`` with ``prepare_wy_repr_fwd_kernel_safe`` (fla/ops/generalized_delta_rule/
dplr/wy_fast_fwd.py, PR 1162). Per 16x16 diagonal block ``L = A_ab`` (rounded to fp16)::

    L2 = fp16(L L), L4 = fp16(L2 L2), L8 = fp16(L4 L4)
    T  = fp16((I + L)(I + L2)) -> fp16(T (I + L4)) -> T (I + L8)            # = (I - L)^-1

and the off-diagonal blocks are merged from fp16 operands with fp32 accumulation, rounding
every intermediate product to fp16 as the kernel does (C = 32: ``T10 = T11 (L10 T00)``; C = 64:
the 4x4 block formulas of the kernel). The result is fp32 (the kernel stores fp32).

This module reproduces those roundings operation by operation (an fp16 x fp16 product accumulated
in fp32 is exact in fp32 up to summation order), so the numerics report and the parity study can
show what fla's recipe does on the same inputs as deltainv's methods. It is a study tool, not a
deltainv method: it is not in the registry and nothing deploys it.
"""

from __future__ import annotations

import torch

#: Chunk sizes fla's safe-gate inverse supports.
FLA_CHUNK_SIZES = (16, 32, 64)


def _h(x: torch.Tensor) -> torch.Tensor:
    """Round to fp16 and back (values beyond 65504 become inf, as on the hardware)."""
    return x.to(torch.float16).to(torch.float32)


def _dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``tl.dot`` of two fp16 operands: exact products, fp32 accumulation."""
    return _h(x) @ _h(y)


def _inv_diag16(L: torch.Tensor) -> torch.Tensor:
    """``_inv_diag16``: ``(I - L)^-1`` of a strictly lower 16x16 fp16 block by the product form."""
    eye = torch.eye(16, dtype=torch.float32, device=L.device)
    L2 = _h(_dot(L, L))
    L4 = _h(_dot(L2, L2))
    L8 = _h(_dot(L4, L4))
    T = _dot(eye + L, eye + L2)
    T = _dot(T, eye + L4)
    return _dot(T, eye + L8)


def fla_fp16_inverse(A: torch.Tensor) -> torch.Tensor:
    """``(I + A)^-1`` the way fla 0.6.0's safe-gate DPLR kernel computes it (deltainv's convention).

    Args:
        A: ``[..., C, C]``, C in {16, 32, 64}; only the strictly lower triangle is read. fla's
            ``A_ab`` is ``-A``.

    Returns:
        ``[..., C, C]`` float32, unit lower triangular.
    """
    C = A.shape[-1]
    if A.shape[-2] != C or C not in FLA_CHUNK_SIZES:
        raise ValueError(f"fla's safe-gate inverse takes [..., C, C] with C in {FLA_CHUNK_SIZES}; got {list(A.shape)}")
    Lf = -A.to(torch.float32).tril(-1)
    n = C // 16
    Lb = [[_h(Lf[..., 16 * i:16 * i + 16, 16 * j:16 * j + 16]) for j in range(n)] for i in range(n)]
    T = [[None] * n for _ in range(n)]
    for i in range(n):
        T[i][i] = _inv_diag16(Lb[i][i])
    if n >= 2:
        T[1][0] = _dot(T[1][1], _h(_dot(Lb[1][0], T[0][0])))
    if n == 4:
        L21T11 = _h(_dot(Lb[2][1], T[1][1]))
        T[3][2] = _dot(T[3][3], _h(_dot(Lb[3][2], T[2][2])))
        P1 = _dot(Lb[2][0], T[0][0]) + _dot(Lb[2][1], T[1][0])
        P2 = _dot(Lb[3][0], T[0][0]) + _dot(Lb[3][1], T[1][0])
        T[2][0] = _dot(T[2][2], P1)
        T[2][1] = _dot(T[2][2], L21T11)
        T[3][0] = _dot(T[3][2], P1) + _dot(T[3][3], P2)
        T[3][1] = _dot(T[3][2], L21T11) + _dot(T[3][3], _h(_dot(Lb[3][1], T[1][1])))
    zero = torch.zeros_like(T[0][0])
    rows = [torch.cat([T[i][j] if j <= i else zero for j in range(n)], dim=-1) for i in range(n)]
    return torch.cat(rows, dim=-2)


__all__ = ["FLA_CHUNK_SIZES", "fla_fp16_inverse"]
