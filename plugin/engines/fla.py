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
    in ``chunk_intra`` is rebound too). When fla would hand ``chunk_kda`` to FlashKDA instead, the
    ``fla.flash_kda`` route (:func:`flash_kda_verifier`) keeps it on this path."""
    return kernel(dropin.fla_kda_fwd_intra, settings, pick=last, accepts=_kda_intra_accepts,
                  with_backend=True)


def flash_kda_verifier(settings, original, target):
    """``FlashKDABackend.chunk_kda_verifier``: fla 0.6's dispatch asks it whether FlashKDA takes a
    ``chunk_kda`` call (by default when ``flash_kda`` is installed, on SM90+, without gradients).

    FlashKDA (Moonshot's fused CUTLASS forward) replaces the whole KDA forward, so the patched intra
    function would not run. As for FlashQLA and GDN, when FlashKDA would accept the call deltainv
    rejects it with a reason through fla's own verification, and fla runs its Triton path, which
    calls the patched intra function. ``DELTAINV_FORCE_TRITON=0`` keeps FlashKDA, with a loud warning.
    """
    from ..log import info_once, warning_once

    def chunk_kda_verifier(self, *args, **kwargs):
        accepted, reason = original(self, *args, **kwargs)
        if not accepted:
            return accepted, reason
        if settings.force_triton:
            info_once("fla-route-kda", "fla would dispatch chunk_kda to FlashKDA; deltainv routes it to fla's Triton "
                      "path so its KDA intra function runs (DELTAINV_FORCE_TRITON=0 keeps FlashKDA)")
            return False, ("deltainv is active: fla's Triton path runs, with deltainv's KDA intra function "
                           "(DELTAINV_FORCE_TRITON=0 keeps FlashKDA)")
        warning_once("fla-route-kda", "fla dispatches chunk_kda to FlashKDA and DELTAINV_FORCE_TRITON=0: deltainv's "
                     "KDA intra function will NOT run (FlashKDA replaces the whole forward); unset "
                     "DELTAINV_FORCE_TRITON or set FLA_FLASH_KDA=0")
        return accepted, reason

    from ..core import Built

    return Built(fast=chunk_kda_verifier, info={"does": "FlashKDA auto-dispatch -> fla's Triton path"})


def flash_qla_verifier(settings, original, target):
    """``FlashQLABackend.chunk_gated_delta_rule_verifier``: fla 0.6's dispatch asks it whether FlashQLA
    takes a ``chunk_gated_delta_rule`` call.

    FlashQLA (a fused TileLang kernel, used by default when ``flash_qla`` is installed on SM90/SM100/
    SM120) replaces the whole forward, so the patched intra function would not run. When FlashQLA
    would accept the call, deltainv rejects it with a reason, through fla's own verification: fla logs
    the rejection and runs its Triton path, which calls the patched intra function.
    ``DELTAINV_FORCE_TRITON=0`` keeps FlashQLA, with a loud warning.
    """
    from ..log import info_once, warning_once

    def chunk_gated_delta_rule_verifier(self, *args, **kwargs):
        accepted, reason = original(self, *args, **kwargs)
        if not accepted:
            return accepted, reason
        if settings.force_triton:
            info_once("fla-route", "fla would dispatch chunk_gated_delta_rule to FlashQLA; deltainv routes it to "
                      "fla's Triton path so its intra function runs (DELTAINV_FORCE_TRITON=0 keeps FlashQLA)")
            return False, ("deltainv is active: fla's Triton path runs, with deltainv's intra function "
                           "(DELTAINV_FORCE_TRITON=0 keeps FlashQLA)")
        warning_once("fla-route", "fla dispatches chunk_gated_delta_rule to FlashQLA and DELTAINV_FORCE_TRITON=0: "
                     "deltainv's GDN intra function will NOT run (FlashQLA replaces the whole forward); "
                     "unset DELTAINV_FORCE_TRITON or set FLA_FLASH_QLA=0")
        return accepted, reason

    from ..core import Built

    return Built(fast=chunk_gated_delta_rule_verifier, info={"does": "FlashQLA auto-dispatch -> fla's Triton path"})
