"""``invert``: the batched ``(I + A)^-1`` entry point over the method registry."""

from __future__ import annotations

from typing import Any

import torch

from ..registry import CHUNK_SIZES, Recipe, resolve

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_dtype(A: Any, name: str = "A") -> None:
    """``A`` must be a floating tensor: float16, bfloat16, float32 or float64."""
    if not isinstance(A, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(A).__name__}")
    if A.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {A.dtype}")


def check_out_dtype(out_dtype: Any, name: str = "out_dtype") -> None:
    """``out_dtype`` must be ``None`` or a floating dtype: an integer inverse would be silently rounded."""
    if out_dtype is not None and out_dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be None or float16, bfloat16, float32 or float64, got {out_dtype}")


def check_chunk_size(C: int) -> int:
    if C not in CHUNK_SIZES:
        raise ValueError(f"chunk size C={C} is not supported; use one of {', '.join(map(str, CHUNK_SIZES))}")
    return C


def check_chunk_matrix(A: Any, name: str = "A") -> int:
    """Validate a ``[..., C, C]`` floating tensor with a supported C; return C."""
    check_dtype(A, name)
    if A.dim() < 2:
        raise ValueError(f"{name} must have shape [..., C, C]; got shape {list(A.shape)} (rank {A.dim()})")
    if A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{name} must be square in its last two dims ([..., C, C]); got shape {list(A.shape)}")
    return check_chunk_size(A.shape[-1])


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto`` -> ``triton`` on CUDA when available, else ``torch``."""
    if backend == "auto":
        if device.type == "cuda":
            from .. import triton_available

            if triton_available():
                return "triton"
        return "torch"
    if backend not in ("torch", "triton"):
        raise ValueError(f"unknown backend {backend!r}; choose auto, torch or triton")
    if backend == "triton":
        _check_triton_usable(device)
    return backend


def _check_triton_usable(device: torch.device) -> None:
    """``backend="triton"`` needs Triton and either a CUDA tensor or Triton's CPU interpreter; say
    which is missing and what to do instead of failing inside Triton ("0 active drivers")."""
    import importlib.util
    import os

    if importlib.util.find_spec("triton") is None:
        raise RuntimeError("backend='triton' needs the triton package: pip install 'deltainv[triton]', "
                           "or use backend='torch' (or 'auto')")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return  # Triton's CPU interpreter runs the kernels on any device (slowly; bf16 math is inexact)
    if device.type != "cuda":
        raise RuntimeError(f"backend='triton' needs a CUDA tensor; this one is on {device.type}. Move it to a "
                           "GPU, use backend='torch' (or 'auto'), or set TRITON_INTERPRET=1 before importing "
                           "triton to run the kernels in Triton's CPU interpreter")
    from .. import triton_available

    if not triton_available():
        raise RuntimeError("backend='triton': Triton finds no usable GPU driver on this machine; use "
                           "backend='torch' (or 'auto'), or check the CUDA driver (`deltainv doctor` shows "
                           "what Triton sees)")


def invert(
    A: torch.Tensor,
    method: str | Recipe | None = None,
    precision: str | None = None,
    *,
    backend: str = "torch",
    out_dtype: torch.dtype | None = torch.float32,
    check_finite: bool = True,
    **options: Any,
) -> torch.Tensor:
    """Compute ``(I + A)^-1`` for a batch of strictly lower-triangular chunk matrices.

    Args:
        A: ``[..., C, C]``, C in {16, 32, 64, 128}; float16, bfloat16, float32 or float64.
            Only the strictly lower triangle is read: the diagonal and upper triangle are ignored.
        method: a name from :data:`deltainv.kernels.METHODS` (default ``mxr_refine``).
        precision: a name from :data:`deltainv.kernels.PRECISIONS` (default ``fp32``).
        backend: ``torch`` (any device), ``triton`` (CUDA, or the CPU interpreter) or ``auto``.
        out_dtype: dtype of the result (default float32; ``None`` keeps ``A.dtype``).
        check_finite: raise ``ValueError`` if the strictly lower triangle of ``A`` holds NaN or
            inf. With ``False`` non-finite input propagates into the result (and costs no
            device-to-host sync).
        **options: method options, e.g. ``iters`` for ``newton_schulz`` or
            ``refine_precision`` for ``mxr_refine``.

    Returns:
        ``X = (I + A)^-1``: ``[..., C, C]``, unit lower triangular, computed in fp32 with the
        method's arithmetic and the operands of each product rounded per ``precision``.
    """
    check_chunk_matrix(A)
    check_out_dtype(out_dtype)
    recipe = resolve(method, precision, **options)
    backend = resolve_backend(backend, A.device)
    L = A.to(torch.float32).tril(-1)
    if check_finite:
        bad = int((~torch.isfinite(L)).sum())
        if bad:
            raise ValueError(
                f"A holds {bad} non-finite value(s) in its strictly lower triangle; "
                "pass check_finite=False to let them propagate"
            )
    X = recipe.method.implementation(backend)(L, recipe.precision, **recipe.kwargs)
    return X.to(A.dtype if out_dtype is None else out_dtype)
