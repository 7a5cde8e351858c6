"""Triton launchers for the inversion kernels (``backend="triton"``).

The kernels are generated (:mod:`deltainv.kernels.tril.codegen` -> ``_generated.py``): one per
(method, BT) for ``substitution``, ``mxr`` and ``mxr_refine``. They read ``A`` in the engines'
``[B, T, H, BT]`` layout (fp32, bf16 or fp16), keep the whole chunk's inverse in registers and
write every element of every real row, so the output needs no zero-fill.
"""

from __future__ import annotations

from typing import Any

import torch

from ..index import varlen_chunk_indices
from ..registry import DEFAULT_METHOD, DEFAULT_PRECISION, get_method
from .invert import check_chunk_size, check_dtype

#: Methods with a Triton kernel.
TRITON_METHODS = ("substitution", "mxr", "mxr_refine")


def _kernel(method: str, BT: int):
    from ._generated import KERNELS

    try:
        return KERNELS[method, BT]
    except KeyError:
        raise ValueError(f"method {method!r} has no Triton kernel (Triton methods: {', '.join(TRITON_METHODS)})") from None


def _stage_precisions(method: str, precision: str, options: dict[str, Any]) -> dict[str, str]:
    spec = get_method(method)
    opts = spec.check_options(options)
    base = opts.get("base_precision") or precision
    refine = opts.get("refine_precision") or precision
    for p in (base, refine):
        spec.check_precision(p)
    return {"PREC": precision, "BASE_PREC": base, "REFINE_PREC": refine}


def solve_tril(
    A: torch.Tensor,
    cu_seqlens: torch.Tensor | None = None,
    chunk_indices: torch.Tensor | None = None,
    output_dtype: torch.dtype | None = torch.float32,
    *,
    method: str | None = None,
    precision: str | None = None,
    check_finite: bool = False,
    out: torch.Tensor | None = None,
    **options: Any,
) -> torch.Tensor:
    """``(I + A)^-1`` per chunk of ``A`` ``[B, T, H, BT]`` on the GPU; contract of :func:`deltainv.kernels.solve_tril`.

    With ``chunk_indices`` given (as vLLM passes them) no device-to-host synchronisation happens;
    ``cu_seqlens`` values are then trusted, as the engines' own kernels trust them. Without it the
    chunk table is built on the host, and ``cu_seqlens`` is validated on the way.
    ``out`` (``[B, T, H, BT]``) receives the result if given.
    """
    check_dtype(A)
    if A.dim() != 4:
        raise ValueError(f"A must have shape [B, T, H, BT]; got shape {list(A.shape)} (rank {A.dim()})")
    B, T, H, BT = A.shape
    check_chunk_size(BT)
    method = DEFAULT_METHOD if method is None else method
    spec = get_method(method)
    precision = spec.check_precision(DEFAULT_PRECISION if precision is None else precision)
    stages = _stage_precisions(method, precision, options)
    kernel = _kernel(spec.name, BT)
    if check_finite and not bool(torch.isfinite(A).all()):
        raise ValueError(f"A holds {int((~torch.isfinite(A)).sum())} non-finite value(s); "
                         "pass check_finite=False to let them propagate")
    out_dtype = A.dtype if output_dtype is None else output_dtype
    A = A.contiguous()
    if out is None:
        out = torch.empty(B, T, H, BT, dtype=out_dtype, device=A.device)
    elif out.shape != A.shape or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous tensor of shape {list(A.shape)}")
    if cu_seqlens is not None:
        chunk_indices = varlen_chunk_indices(cu_seqlens, chunk_indices, T, B, BT)
        NT = chunk_indices.shape[0]
    else:
        if chunk_indices is not None:
            raise ValueError("chunk_indices is only meaningful together with cu_seqlens")
        NT = -(-T // BT)
    if NT and B * H:
        kernel[(NT, B * H)](A, out, cu_seqlens, chunk_indices, T, H=H, IS_VARLEN=cu_seqlens is not None, **stages)
    return out


def invert(L: torch.Tensor, precision: str, *, method: str, **options: Any) -> torch.Tensor:
    """Registry entry: ``[..., C, C]`` strictly lower fp32 -> ``(I + L)^-1`` fp32, via the engine layout.

    A batch of N chunk matrices is the engine layout ``[1, N*C, 1, C]``: consecutive C-row chunks.
    """
    C = L.shape[-1]
    flat = L.reshape(1, -1, 1, C)
    X = solve_tril(flat, method=method, precision=precision, **options)
    return X.reshape(L.shape)


def substitution(L, precision="fp32"):
    return invert(L, precision, method="substitution")


def mxr(L, precision="fp32", base_precision=None):
    return invert(L, precision, method="mxr", base_precision=base_precision)


def mxr_refine(L, precision="fp32", refine_precision=None, base_precision=None):
    return invert(L, precision, method="mxr_refine", refine_precision=refine_precision, base_precision=base_precision)
