"""SGLang 0.5.23: the fused GDN intra function (gates in ln), and the GDN prefill backend choice."""

from __future__ import annotations

from deltainv.kernels import dropin

from ..log import info_once, warning_once
from . import first, kernel, last
from .fla import _intra_accepts


def gdn_intra(settings, original, target):
    return kernel(dropin.sglang_gdn_fwd_intra, settings, pick=last, accepts=_intra_accepts, with_backend=True)


def prefill_default(settings, original, target):
    """``flashinfer_gdn_prefill_default(model_runner)``: SGLang's FlashInfer auto-default on SM90/SM100.

    When it picks FlashInfer (the user did not choose a prefill backend), deltainv keeps the
    Triton path that carries its kernel, unless ``DELTAINV_FORCE_TRITON=0``.
    """

    def flashinfer_gdn_prefill_default(model_runner):
        choice = original(model_runner)
        if choice is None:
            return None
        if settings.force_triton:
            info_once("sglang-route", f"SGLang would default GDN prefill to {choice}; deltainv keeps it on triton "
                      "so its kernel runs (DELTAINV_FORCE_TRITON=0 keeps SGLang's choice)")
            return None
        warning_once("sglang-route", f"SGLang defaults GDN prefill to {choice} and DELTAINV_FORCE_TRITON=0: "
                     "deltainv's kernel will NOT run; pass --linear-attn-prefill-backend triton")
        return choice

    from ..core import Built

    return Built(fast=flashinfer_gdn_prefill_default, info={"does": "FlashInfer auto-default -> triton"})


def check_backends(settings, original, target):
    """``resolve_linear_attn_backends(prefill_default=None)``: say loudly when prefill is not Triton."""

    def resolve_linear_attn_backends(prefill_default=None):
        backends = original(prefill_default=prefill_default)
        prefill = getattr(backends.prefill, "value", backends.prefill)
        if prefill != "triton":
            warning_once("sglang-backend", f"deltainv is active but SGLang's linear-attention prefill backend is "
                         f"{prefill!r}: deltainv's GDN kernel runs only on the triton backend and will NOT run; "
                         "use --linear-attn-prefill-backend triton")
        else:
            info_once("sglang-backend", "SGLang linear-attention prefill backend: triton (deltainv's GDN kernel runs)")
        return backends

    from ..core import Built

    return Built(fast=resolve_linear_attn_backends, info={"does": "warns when prefill is not triton"})


def kda_intra(settings, original, target):
    """``sglang.kernels.ops.attention.fla.kda.chunk_kda_fwd_intra`` (the Triton KDA prefill backend's
    by-name copy; the original in ``fla.chunk_intra`` is rebound too). Gates in log2."""
    from .fla import _kda_intra_accepts

    return kernel(dropin.sglang_kda_fwd_intra, settings, pick=first, accepts=_kda_intra_accepts,
                  with_backend=True)
