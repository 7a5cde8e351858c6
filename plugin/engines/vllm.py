"""vLLM 0.32/0.33: the GDN chunked rule as an out-of-tree custom op (``ChunkGatedDeltaRule``), the
standalone ``solve_tril`` of the GDN chunk path (versions without the op, and other callers), the GDN
prefill backend choice, and the CPU build's C++ GDN prefill kernel."""

from __future__ import annotations

from deltainv.kernels import dropin

from ..core import Built
from ..guard import count
from ..log import info_once, warning_once
from . import chunk_size_reason, first, itself, kernel, last
from .fla import _intra_accepts, _solve_tril_accepts


def solve_tril(settings, original, target):
    return kernel(dropin.solve_tril, settings, pick=itself, accepts=_solve_tril_accepts, with_backend=True)


def prefill_backend(settings, original, target):
    """``_resolve_gdn_prefill_backend(vllm_config) -> (requested, active)``.

    ``auto`` resolves to FlashInfer on SM90 (and SM100/SM12x with head_k_dim 128); when active,
    deltainv turns ``auto`` into ``triton`` (unless ``DELTAINV_FORCE_TRITON=0``), so that vLLM's
    metadata builder prepares FLA chunk indices and its log names the path that runs. An explicit
    ``--gdn-prefill-backend`` other than triton is kept: where deltainv's ``ChunkGatedDeltaRule`` op is
    registered it runs anyway (said in the log); where only ``solve_tril`` is patched (vLLM without
    the op) deltainv does not run, with a loud warning.
    """

    def _resolve_gdn_prefill_backend(vllm_config):
        requested, active = original(vllm_config)
        from vllm.platforms import current_platform  # vLLM is imported by now: this runs in its layers

        if current_platform.is_cpu():
            info_once("vllm-route", "vLLM CPU build: GDN prefill runs the CPU kernel path, which deltainv routes "
                      "through its PyTorch GDN core (vllm._custom_ops.chunk_gated_delta_rule_cpu)")
            return requested, active
        op = _registered_op() is not None
        what = "ChunkGatedDeltaRule op" if op else "solve_tril"
        if active == "triton":
            info_once("vllm-route", f"vLLM GDN prefill backend: triton (requested={requested}); deltainv's {what} runs")
            return requested, active
        if settings.force_triton and requested == "auto":
            info_once("vllm-route", f"vLLM would auto-select the {active} GDN prefill kernel; deltainv selects triton "
                      f"so its {what} runs (DELTAINV_FORCE_TRITON=0 keeps vLLM's choice)")
            return requested, "triton"
        if op and settings.force_triton:
            info_once("vllm-route", f"vLLM's GDN prefill backend is {active} (requested={requested}); deltainv's "
                      "ChunkGatedDeltaRule op replaces it with vLLM's Triton/FLA pipeline and deltainv's fused intra")
            return requested, active
        warning_once("vllm-route", f"deltainv is active but vLLM's GDN prefill runs {active} (requested={requested}): "
                     "deltainv's kernel will NOT run; use --gdn-prefill-backend triton")
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
    return kernel(dropin.vllm_kda_fwd_intra, settings, pick=last, accepts=_kda_intra_accepts,
                  with_backend=True)


def _kda_intra_accepts(q, k, gk=None, beta=None, scale=None, cu_seqlens=None, chunk_size=64, chunk_indices=None,
                       safe_gate=False):
    if gk is None or beta is None or not hasattr(k, "dim") or k.dim() != 4:
        return "inputs are not [B, T, H, K] tensors with a gate and beta"
    return chunk_size_reason(chunk_size)


# ------------------------------------------------------------------------------------------------
# vLLM's GDN chunked rule as a custom op: ``@CustomOp.register("chunk_gated_delta_rule")`` on
# ``ChunkGatedDeltaRule`` (qwen_gdn_linear_attn.py, 0.32/0.33). ``CustomOp.__new__`` instantiates the
# class registered with ``CustomOp.register_oot`` under the in-tree class name instead, so every GDN
# layer vLLM builds gets deltainv's subclass: no vLLM module is changed.

_OP = "ChunkGatedDeltaRule"
_FLA_OPS = "vllm.third_party.flash_linear_attention.ops"


def _registered_op():
    """deltainv's op class if it is the one registered for ``ChunkGatedDeltaRule`` in this process."""
    import sys

    custom_op = sys.modules.get("vllm.model_executor.custom_op")
    registry = getattr(custom_op, "op_registry_oot", None) or {}
    cls = registry.get(_OP)
    return cls if getattr(cls, "deltainv", None) is not None else None


def _vllm_intra(k, v, g=None, beta=None, cu_seqlens=None, chunk_size=64, chunk_indices=None):
    """vLLM's own kkt + solve_tril + recompute_w_u (what the fused intra replaces), ``(w, u, A)``:
    the unsupported-call and comparison path of the op. Gates in ln, already cumulated per chunk."""
    import torch
    from vllm.third_party.flash_linear_attention.ops import chunk as fla_chunk

    A = fla_chunk.chunk_scaled_dot_kkt_fwd(k=k, beta=beta, g=g, cu_seqlens=cu_seqlens, chunk_indices=chunk_indices,
                                           output_dtype=torch.float32)
    A = fla_chunk.solve_tril(A=A, cu_seqlens=cu_seqlens, chunk_indices=chunk_indices, output_dtype=k.dtype)
    w, u = fla_chunk.recompute_w_u_fwd(k=k, v=v, beta=beta, A=A, g_cumsum=g, cu_seqlens=cu_seqlens,
                                       chunk_indices=chunk_indices)
    return w, u, A


def chunk_pipeline(intra):
    """vLLM's chunked GDN forward (``ChunkGatedDeltaRuleFunction.forward`` of its vendored FLA) with
    ``intra`` in place of kkt + solve_tril + recompute_w_u; vLLM's own pieces for the rest.

    ``(q, k, v, g, beta, initial_state, output_final_state, cu_seqlens, chunk_indices, chunk_offsets,
    use_qk_l2norm_in_kernel, core_attn_out) -> (o, final_state)``: q, k ``[1, T, H, K]``, v
    ``[1, T, HV, V]``, g (ln, per token) and beta ``[1, T, HV]``, state ``[N, HV, V, K]`` (vLLM's V-first
    layout); ``o`` in q's dtype (written into ``core_attn_out`` when given), as vLLM returns it.
    """
    from vllm.third_party.flash_linear_attention.ops import chunk as fla_chunk
    from vllm.third_party.flash_linear_attention.ops.utils import FLA_CHUNK_SIZE, input_guard

    @input_guard
    def chunk_gated_delta_rule(q, k, v, g, beta, initial_state, output_final_state, cu_seqlens=None,
                               chunk_indices=None, chunk_offsets=None, use_qk_l2norm_in_kernel=False,
                               core_attn_out=None):
        if use_qk_l2norm_in_kernel:
            q, k = fla_chunk.l2norm_fwd(q), fla_chunk.l2norm_fwd(k)
        g = fla_chunk.chunk_local_cumsum(g, chunk_size=FLA_CHUNK_SIZE, cu_seqlens=cu_seqlens,
                                         chunk_indices=chunk_indices)
        w, u, _ = intra(k, v, g, beta, cu_seqlens, FLA_CHUNK_SIZE, chunk_indices)
        h, v_new, final_state = fla_chunk.chunk_gated_delta_rule_fwd_h(
            k=k, w=w, u=u, g=g, initial_state=initial_state, output_final_state=output_final_state,
            cu_seqlens=cu_seqlens, chunk_indices=chunk_indices, chunk_offsets=chunk_offsets)
        o = fla_chunk.chunk_fwd_o(q=q, k=k, v=v_new, h=h, g=g, scale=k.shape[-1] ** -0.5, cu_seqlens=cu_seqlens,
                                  chunk_indices=chunk_indices, core_attn_out=core_attn_out)
        return o.to(q.dtype), final_state

    return chunk_gated_delta_rule


def _op_reason(q, k, v, g, beta, initial_state, output_final_state, cu_seqlens=None, **_):
    """Calls vLLM's chunked rule refuses (it raises; they go to vLLM's method, which says why)."""
    import torch

    if not (q.dtype == k.dtype == v.dtype) or q.dtype == torch.float32:
        return f"q/k/v dtypes {q.dtype}/{k.dtype}/{v.dtype} (vLLM's chunked rule takes bf16/fp16)"
    if cu_seqlens is not None and q.shape[0] != 1:
        return "packed sequences (cu_seqlens) with batch size != 1"
    if beta.dim() != 3:
        return "beta is not [B, T, H]"
    return None


def chunk_op(settings, original, target):
    """Register deltainv's ``ChunkGatedDeltaRule`` with ``CustomOp.register_oot``.

    The class subclasses vLLM's (vLLM's ``__init__`` still resolves and logs the prefill backend;
    ``isinstance`` checks hold). Its forward is :func:`chunk_pipeline` with deltainv's fused GDN intra
    (``dropin.gdn_fwd_intra``, ln gates) whatever ``--gdn-prefill-backend`` chose; with
    ``DELTAINV_FORCE_TRITON=0`` a non-Triton choice of vLLM's is kept, with a warning. The intra
    call is filed under this target's key (counters, first-call log line, guard on the inverse);
    calls the intra does not support run vLLM's kkt + solve_tril + recompute_w_u.

    On vLLM's CPU build the GDN layers never call this op (``forward_cpu`` runs the C++ kernel, which
    the ``vllm_cpu`` target replaces); the op is still built for every layer and says so in the log.
    """
    import functools

    from vllm.model_executor.custom_op import CustomOp, op_registry_oot
    from vllm.platforms import current_platform

    from ..core import guarded_call

    key = target.key
    factory = functools.partial(dropin.gdn_fwd_intra, gate_log2=False)  # vLLM's FLA takes ln gates
    built = kernel(factory, settings, pick=last, accepts=_intra_accepts, with_backend=True)
    fused = chunk_pipeline(guarded_call(key, _vllm_intra, built, settings))
    info = {"does": "CustomOp.register_oot: vLLM's Triton/FLA pipeline with deltainv's fused GDN intra",
            **built.info}

    class ChunkGatedDeltaRule(original):
        """deltainv's replacement of vLLM's ``ChunkGatedDeltaRule`` (registered out of tree)."""

        deltainv = info

        def __init__(self) -> None:
            super().__init__()
            chosen = self.gdn_prefill_backend
            self.vllm_prefill_backend = chosen
            self._vllm_forward = self._forward_method
            if current_platform.is_cpu():
                info_once("vllm-op", "vLLM CPU build: the GDN layers' forward_cpu runs vllm._custom_ops."
                          "chunk_gated_delta_rule_cpu (deltainv's vllm_cpu target), not this custom op; "
                          "deltainv's ChunkGatedDeltaRule is registered but not called there")
            if chosen != "triton" and not settings.force_triton:
                warning_once("vllm-op", f"vLLM's GDN prefill backend is {chosen} and DELTAINV_FORCE_TRITON=0: "
                             "deltainv's ChunkGatedDeltaRule keeps it, deltainv's kernel will NOT run")
                return
            if not current_platform.is_cpu():
                info_once("vllm-op", f"vLLM GDN layers: deltainv's ChunkGatedDeltaRule (CustomOp.register_oot) "
                          f"runs vLLM's Triton/FLA pipeline with deltainv's fused intra (vLLM chose {chosen})")
            self.gdn_prefill_backend = "triton"  # what runs: the layer reads it (e.g. warmup metadata)
            self._forward_method = self.forward_deltainv

        def forward_deltainv(self, q, k, v, g, beta, initial_state, output_final_state, cu_seqlens=None,
                             chunk_indices=None, chunk_offsets=None, use_qk_l2norm_in_kernel=True,
                             core_attn_out=None, aiter_prefill_metadata=None):
            args = dict(q=q, k=k, v=v, g=g, beta=beta, initial_state=initial_state,
                        output_final_state=output_final_state, cu_seqlens=cu_seqlens, chunk_indices=chunk_indices,
                        chunk_offsets=chunk_offsets, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                        core_attn_out=core_attn_out)
            reason = _op_reason(**args)
            if reason is not None:
                count(key, "original_calls")
                info_once(f"unsupported:{key}:{reason}", f"{key}: {reason}: calling vLLM's own method")
                return self._vllm_forward(**args, aiter_prefill_metadata=aiter_prefill_metadata)
            if self.vllm_prefill_backend in ("cutedsl", "aiter_flydsl"):
                # vLLM's metadata builder then made CuteDSL/AITER metadata, not FLA chunk indices
                args["chunk_indices"] = args["chunk_offsets"] = None
            return fused(**args)

    ChunkGatedDeltaRule.__qualname__ = _OP
    ChunkGatedDeltaRule.__module__ = __name__
    present = op_registry_oot.get(_OP)
    if present is not None:
        warning_once("vllm-op-taken", f"another plugin registered {present.__module__}.{present.__qualname__} for "
                     f"vLLM's {_OP}: deltainv keeps it and does NOT run in vLLM's GDN layers")
        return Built(fast=present, info={"does": f"not registered: {_OP} already replaced by {present.__module__}"})
    CustomOp.register_oot(ChunkGatedDeltaRule, name=_OP)

    def undo():
        if op_registry_oot.get(_OP) is ChunkGatedDeltaRule:
            del op_registry_oot[_OP]

    return Built(fast=ChunkGatedDeltaRule, info=dict(info), undo=undo)
