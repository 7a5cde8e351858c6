"""vLLM 0.32/0.33: ``solve_tril`` of the GDN chunk path, the GDN prefill backend choice, and the CPU
build's C++ GDN prefill kernel."""

from __future__ import annotations

from deltainv.kernels import dropin

from ..core import Built
from ..log import info_once, warning_once
from . import chunk_size_reason, first, itself, kernel, last
from .fla import _solve_tril_accepts


def solve_tril(settings, original, target):
    return kernel(dropin.solve_tril, settings, pick=itself, accepts=_solve_tril_accepts, with_backend=True)


def prefill_backend(settings, original, target):
    """``_resolve_gdn_prefill_backend(vllm_config) -> (requested, active)``.

    ``auto`` resolves to FlashInfer on SM90 (and SM100/SM12x with head_k_dim 128); deltainv's
    ``solve_tril`` only runs on the Triton/FLA path, so when active it turns ``auto`` into
    ``triton`` (unless ``DELTAINV_FORCE_TRITON=0``). An explicit ``--gdn-prefill-backend`` other
    than triton is kept, with a loud warning.
    """

    def _resolve_gdn_prefill_backend(vllm_config):
        requested, active = original(vllm_config)
        from vllm.platforms import current_platform  # vLLM is imported by now: this runs in its layers

        if current_platform.is_cpu():
            info_once("vllm-route", "vLLM CPU build: GDN prefill runs the CPU kernel path, which deltainv routes "
                      "through its PyTorch GDN core (vllm._custom_ops.chunk_gated_delta_rule_cpu)")
            return requested, active
        if active == "triton":
            info_once("vllm-route", f"vLLM GDN prefill backend: triton (requested={requested}); deltainv's solve_tril runs")
            return requested, active
        if settings.force_triton and requested == "auto":
            info_once("vllm-route", f"vLLM would auto-select the {active} GDN prefill kernel; deltainv selects triton "
                      "so its solve_tril runs (DELTAINV_FORCE_TRITON=0 keeps vLLM's choice)")
            return requested, "triton"
        warning_once("vllm-route", f"deltainv is active but vLLM's GDN prefill runs {active} (requested={requested}): "
                     "deltainv's solve_tril will NOT run; use --gdn-prefill-backend triton")
        return requested, active

    return Built(fast=_resolve_gdn_prefill_backend, info={"does": "auto -> triton"})


def _cpu_accepts(query, key, value, g, beta, initial_state, output_final_state, cu_seqlens, head_first,
                 use_qk_l2norm_in_kernel, initial_state_indices, eps=1e-5):
    if head_first:
        return "head_first=True"
    if query.dim() != 4 or query.shape[0] != 1 or cu_seqlens is None:
        return "input is not a packed [1, T, H, K] batch with cu_seqlens"
    return None


def _cpu_preserve(query, key, value, g, beta, initial_state, output_final_state, cu_seqlens, head_first,
                  use_qk_l2norm_in_kernel, initial_state_indices, eps=1e-5):
    """The C++ kernel and the drop-in write final states into the pool: keep the slots' inputs."""
    slots = initial_state_indices.long()
    saved = initial_state[slots].clone()

    def restore():
        initial_state[slots] = saved

    return restore


def cpu_gdn(settings, original, target):
    built = kernel(dropin.vllm_cpu_gdn, settings, pick=first, accepts=_cpu_accepts, preserve=_cpu_preserve)
    built.info["replaces"] = "vLLM's C++ GDN prefill kernel (torch.ops._C.chunk_gated_delta_rule_cpu)"
    return built


def kda_intra(settings, original, target):
    """``vllm.models.kimi_k3.{nvidia,amd}.ops.third_party.kda.chunk.chunk_kda_fwd_intra``: Kimi Linear's
    fused intra + inverse, called from ``chunk_kda_with_fused_gate`` (``kimi_gdn_linear_attn.py``);
    returns ``(Aqk, Akk)``, gates in log2."""
    return kernel(dropin.vllm_kda_fwd_intra, settings, pick=last, accepts=_kda_intra_accepts)


def _kda_intra_accepts(q, k, gk=None, beta=None, scale=None, cu_seqlens=None, chunk_size=64, chunk_indices=None,
                       safe_gate=False):
    if gk is None or beta is None or not hasattr(k, "dim") or k.dim() != 4:
        return "inputs are not [B, T, H, K] tensors with a gate and beta"
    return chunk_size_reason(chunk_size)
