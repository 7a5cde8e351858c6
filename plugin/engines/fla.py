"""fla 0.6: ``fla.ops.utils.solve_tril`` and the GDN intra path (gates in log2)."""

from __future__ import annotations

import torch

from deltainv.kernels import dropin

from . import chunk_size_reason, itself, kernel, last


def _solve_tril_accepts(A, cu_seqlens=None, chunk_indices=None, output_dtype=torch.float):
    if not isinstance(A, torch.Tensor) or A.dim() != 4:
        return "A is not a [B, T, H, BT] tensor"
    if not A.is_floating_point():
        return f"A has dtype {A.dtype}"
    return chunk_size_reason(A.shape[-1])


def _intra_accepts(k, v, g=None, beta=None, cu_seqlens=None, chunk_size=64, chunk_indices=None):
    if beta is None or not isinstance(k, torch.Tensor) or k.dim() != 4:
        return "inputs are not [B, T, H, K] tensors with beta"
    return chunk_size_reason(chunk_size)


def solve_tril(settings, original, target):
    return kernel(dropin.solve_tril, settings, pick=itself, accepts=_solve_tril_accepts, with_backend=True)


def gdn_intra(settings, original, target):
    return kernel(dropin.fla_gdn_fwd_intra, settings, pick=last, accepts=_intra_accepts, with_backend=True)


def _kda_intra_accepts(q, k, v, gk=None, beta=None, scale=None, cu_seqlens=None, chunk_size=64, *rest, **kw):
    """Shared by the fla and SGLang KDA intra contracts (their first eight parameters agree)."""
    if gk is None or beta is None or not isinstance(k, torch.Tensor) or k.dim() != 4:
        return "inputs are not [B, T, H, K] tensors with a gate and beta"
    return chunk_size_reason(chunk_size)


def kda_intra(settings, original, target):
    """``fla.ops.kda.chunk_fwd.chunk_kda_fwd_intra`` (fla's by-name copy; the dispatch-wrapped original
    in ``chunk_intra`` is rebound too). fla 0.6.0 sends KDA to FlashKDA instead when the ``flash_kda``
    package is installed and ``FLA_FLASH_KDA`` is not 0: then this function is never called, and
    deltainv says so once."""
    _warn_if_flash_kda()
    built = kernel(dropin.fla_kda_fwd_intra, settings, pick=last, accepts=_kda_intra_accepts)
    built.info["flash_kda"] = flash_kda_active()
    return built


def flash_kda_active() -> bool:
    """Whether fla 0.6.0 would auto-dispatch ``chunk_kda`` to FlashKDA (installed and not disabled)."""
    import importlib.util
    import os

    if os.environ.get("FLA_FLASH_KDA", "1") == "0":
        return False
    try:
        return importlib.util.find_spec("flash_kda") is not None
    except (ImportError, ValueError):
        return False


def _warn_if_flash_kda() -> None:
    if flash_kda_active():
        from ..log import warning_once

        warning_once("fla-flash-kda", "fla dispatches chunk_kda to FlashKDA (the flash_kda package is installed): "
                     "its fused CUTLASS forward does not call chunk_kda_fwd_intra, so deltainv's KDA inversion "
                     "will NOT run under fla; set FLA_FLASH_KDA=0 to keep fla's Triton path, which deltainv patches")
