"""deltainv's RWKV-7 in SGLang 0.5.23 on CPU tensors (run in ``.venv-sglang`` with ``TRITON_INTERPRET=1``).

    python sglang_rwkv7_check.py OUT.json WORKDIR LAUNCH_ARGS...

1. What ``python -m sglang.launch_server LAUNCH_ARGS`` does before serving: ``load_plugins()`` (the
   ``sglang.srt.plugins`` entry point), ``prepare_server_args``, then SGLang's argument resolution
   (with ``--device cpu`` added: resolution needs a device) and its ``ModelConfig``. Records the
   resolved flags, the config class, the Mamba-pool state params and the model class SGLang's
   ``ModelRegistry`` resolves, for ``models/rwkv7_tiny`` and for two configs that are not RWKV-7
   (a tiny Qwen3-Next, and the same config naming ``RWKV7ForCausalLM``), and the refusals
   (``--tp-size 2``, the misnamed config).
2. Builds what an SGLang scheduler builds for the model, on the CPU: the model class from the
   registry with ``models/rwkv7_tiny``'s weights (``load_weights``), SGLang's
   ``HybridReqToTokenPool`` (Mamba state pool) sized from the config, and the attention backend
   SGLang's own ``attn_backend_wrapper`` picks (the registered linear-attention backend inside
   ``HybridLinearAttnBackend``). Then runs real ``ForwardBatch`` steps (extend, decode, mixed)
   and compares the logits with deltainv's ``models/rwkv7`` reference (transformers path, fp32)
   run on each whole sequence alone.

Writes what it saw as JSON for the test to judge.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import tempfile
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))  # tests/: support.triton_interpreter
from support import triton_interpreter  # noqa: E402

import sglang_cpu  # noqa: E402
import tiny_models  # noqa: E402

out_path, work, launch_args = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
MODEL = str(HERE.parents[2] / "models" / "rwkv7_tiny")
report: dict = {"interpreter": triton_interpreter.install()}
sglang_cpu.prepare()

# 1. launch_server's first steps: plugins, then the arguments.
from sglang.srt.plugins import load_plugins  # noqa: E402
from sglang.srt.server_args import prepare_server_args  # noqa: E402

load_plugins()
from deltainv.plugin.engines import sglang_models  # noqa: E402

report["after_plugins"] = {k: v for k, v in sglang_models.state.items() if not k.startswith("_")}
report["sglang_registry_imported_by_plugin"] = "sglang.srt.models.registry" in sys.modules


def resolve(args: list[str]):
    from sglang.srt.arg_groups.overrides import resolving_view

    sa = prepare_server_args(args + ["--device", "cpu"])
    sa.resolve_once()
    return sa, resolving_view(sa)


def error_of(fn) -> str | None:
    try:
        fn()
    except Exception as exc:  # the message the user would see
        return f"{type(exc).__name__}: {exc}"
    return None


sa, cfg = resolve(launch_args)
report["resolved"] = {"model_path": sa.model_path, "disable_radix_cache": cfg.disable_radix_cache,
                      "disable_cuda_graph": cfg.disable_cuda_graph,
                      "cuda_graph_backends": {p: str(getattr(cfg.cuda_graph_config, p).backend)
                                              for p in ("decode", "prefill")}}

from sglang.srt.configs.hybrid_arch import mambaish_config  # noqa: E402
from sglang.srt.configs.linear_attn_model_registry import get_linear_attn_config  # noqa: E402
from sglang.srt.configs.model_config import ModelConfig  # noqa: E402

mc = ModelConfig.from_server_args(sa)
params = mambaish_config(mc).mamba2_cache_params
report["config"] = {"class": f"{type(mc.hf_config).__module__}.{type(mc.hf_config).__qualname__}",
                    "conv": [list(s) for s in params.shape.conv], "temporal": list(params.shape.temporal),
                    "conv_dtype": str(params.dtype.conv), "temporal_dtype": str(params.dtype.temporal),
                    "layers": list(params.layers), "full_attention_layer_ids": mambaish_config(mc).full_attention_layer_ids}

# Configs that are not RWKV-7: SGLang's own Qwen3-Next, and the same config naming RWKV7ForCausalLM.
qwen = work / "qwen3-next"
c = tiny_models.config("qwen3_next")
c.architectures = ["Qwen3NextForCausalLM"]
c.save_pretrained(qwen)
misnamed = work / "misnamed"
c = tiny_models.config("qwen3_next")
c.architectures = ["RWKV7ForCausalLM"]
c.save_pretrained(misnamed)

from sglang.srt.model_loader.utils import get_model_architecture  # noqa: E402
from sglang.srt.runtime_context import SpawnRanks, publish  # noqa: E402

publish(sa, role="scheduler", hf_config=mc.hf_config, ranks=SpawnRanks(world_rank=0))
from sglang.srt.distributed import parallel_state  # noqa: E402

parallel_state.init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo",
                                            distributed_init_method=f"file://{tempfile.mktemp(dir=work)}")
parallel_state.initialize_model_parallel(backend="gloo")

cls, arch = get_model_architecture(mc)
report["registry"] = {"rwkv7": f"{cls.__module__}.{cls.__qualname__}", "rwkv7_arch": arch,
                      "state": {k: v for k, v in sglang_models.state.items() if not k.startswith("_")}}
from sglang.srt.models.registry import import_model_classes  # noqa: E402

# SGLANG_EXTERNAL_MODEL_PACKAGE's loader on deltainv's package (what SGLang runs when the variable names it).
report["registry"]["external_package"] = {arch: f"{c.__module__}.{c.__qualname__}" for arch, c in
                                          import_model_classes("deltainv.models.sglang_models", strict=True).items()}
qwen_mc = ModelConfig(str(qwen))
qcls, _ = get_model_architecture(qwen_mc)
report["registry"]["qwen3_next"] = f"{qcls.__module__}.{qcls.__qualname__}"
report["registry"]["qwen3_next_linear_spec"] = (None if get_linear_attn_config(qwen_mc.hf_config) is None
                                                else str(get_linear_attn_config(qwen_mc.hf_config)[0]))
report["refused"] = {
    "misnamed_args": error_of(lambda: resolve(["--model-path", str(misnamed)])),
    "misnamed_model": error_of(lambda: get_model_architecture(ModelConfig(str(misnamed)))[0](
        config=ModelConfig(str(misnamed)).hf_config)),
    "tp2": error_of(lambda: resolve(launch_args + ["--tp-size", "2"])),
}

# 2. The model, the state pool and the backend, as a scheduler builds them (fp32 on the CPU).
from safetensors.torch import load_file  # noqa: E402
from sglang.srt.layers.attention import attention_registry  # noqa: E402
from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend  # noqa: E402
from sglang.srt.mem_cache.memory_pool import HybridReqToTokenPool  # noqa: E402
from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode, ForwardBatch, ForwardMode  # noqa: E402
from sglang.srt.model_executor.forward_context import ForwardContext, set_forward_context  # noqa: E402

import deltainv.models.rwkv7 as rwkv7  # noqa: E402

torch.set_grad_enabled(False)
weights = {}
for f in sorted(glob.glob(os.path.join(MODEL, "*.safetensors"))):
    weights.update(load_file(f))


def build_model():
    model = cls(config=mc.hf_config).eval()
    loaded = model.load_weights(weights.items())
    return model, loaded


model, loaded = build_model()
report["weights"] = {"loaded": len(loaded), "in_checkpoint": len(weights),
                     "inversion": model.model.inversion.describe()}
pool = HybridReqToTokenPool(size=8, mamba_size=6, mamba_spec_state_size=6, max_context_len=4096, device="cpu",
                            enable_memory_saver=False, cache_params=params, mamba_layer_ids=params.layers,
                            enable_mamba_extra_buffer=False, enable_overlap_schedule=False)
runner = types.SimpleNamespace(server_args=sa, device="cpu", is_draft_worker=False, req_to_token_pool=pool,
                               token_to_kv_pool=None, model_config=mc)
backend = attention_registry.attn_backend_wrapper(runner, TorchNativeAttnBackend(runner))
report["backend"] = {"wrapper": type(backend).__name__, "linear": type(backend.linear_attn_backend).__name__,
                     "full_attn_layers": list(backend.full_attn_layers)}
set_forward_context(ForwardContext(attn_backend=backend))
cache = pool.mamba_pool.mamba_cache


def new_request(row: int) -> int:
    """What the scheduler does for a new request: a slot from the allocator, mapped, then zeroed."""
    slot = int(pool.mamba_allocator.alloc(1)[0])
    pool.req_index_to_mamba_index_mapping[row] = slot
    pool.mamba_pool.clear_slots(torch.tensor([slot]))
    return slot


def free_request(row: int) -> None:
    pool.mamba_allocator.free(pool.req_index_to_mamba_index_mapping[row:row + 1].clone())


def step(mode, rows, chunks, prefix, full=False, model_=None):
    """One ForwardBatch over ``chunks`` (token ids per request) after ``prefix`` computed tokens each.
    Returns every token's logits (hidden @ lm_head), or with ``full`` SGLang's LogitsProcessor output."""
    m = model_ or model
    ids = torch.cat(chunks)
    lens = [len(c) for c in chunks]
    starts = [sum(lens[:i]) for i in range(len(lens))]
    seq = [p + n for p, n in zip(prefix, lens)]
    fb = ForwardBatch(forward_mode=mode, batch_size=len(rows), input_ids=ids, req_pool_indices=torch.tensor(rows),
                      seq_lens=torch.tensor(seq), out_cache_loc=torch.zeros(len(ids), dtype=torch.int64),
                      seq_lens_sum=sum(seq), seq_lens_cpu=torch.tensor(seq),
                      positions=torch.cat([torch.arange(p, p + n) for p, n in zip(prefix, lens)]),
                      capture_hidden_mode=CaptureHiddenMode.NULL)
    if mode != ForwardMode.DECODE:
        fb.extend_seq_lens = torch.tensor(lens, dtype=torch.int32)
        fb.extend_start_loc = torch.tensor(starts, dtype=torch.int32)
        fb.extend_seq_lens_cpu, fb.extend_prefix_lens_cpu = lens, prefix
        fb.extend_prefix_lens = torch.tensor(prefix, dtype=torch.int32)
        fb.extend_num_tokens = len(ids)
    backend.init_forward_metadata(fb)
    if full:
        return m(fb.input_ids, fb.positions, fb).next_token_logits
    return m.model(fb.input_ids, fb) @ m.lm_head.weight.T


g = torch.Generator().manual_seed(int(os.environ.get("DELTAINV_TEST_SEED", "0")) % 2**31)
A = torch.randint(1, 512, (150,), generator=g)  # 3 chunks of 64
B = torch.randint(1, 512, (70,), generator=g)
C = torch.randint(1, 512, (90,), generator=g)
ref_model = rwkv7.RWKV7ForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
ref = {name: ref_model(t[None]).logits[0] for name, t in (("A", A), ("B", B), ("C", C))}
scale = max(float(r.abs().max()) for r in ref.values())
err = {}


def diff(a, b) -> float:
    return float((a.double() - b.double()).abs().max())


# a. Two sequences prefilled in one batch (A: 140 tokens, B: 60), then three decode steps of both.
sa_, sb_ = new_request(1), new_request(2)
held = []  # every other slot, held by requests that never run: C below must get A's freed (dirty) slot
while pool.mamba_allocator.available_size() > 0:
    held.append(int(pool.mamba_allocator.alloc(1)[0]))
spare = held[0]  # must never be written by these steps
cache.temporal[:, spare] = 7.0
cache.conv[0][:, spare] = 7.0
lo = step(ForwardMode.EXTEND, [1, 2], [A[:140], B[:60]], [0, 0])
err["prefill_A"], err["prefill_B"] = diff(lo[:140], ref["A"][:140]), diff(lo[140:], ref["B"][:60])
dec = []
for t in range(3):
    lo = step(ForwardMode.DECODE, [1, 2], [A[140 + t:141 + t], B[60 + t:61 + t]], [140 + t, 60 + t])
    dec += [diff(lo[0], ref["A"][140 + t]), diff(lo[1], ref["B"][60 + t])]
err["decode"] = max(dec)
# b. A mixed step (--enable-mixed-chunk): A's last 7 tokens as a prefill chunk, B decoding; through
#    SGLang's LogitsProcessor (last token of each request).
lo = step(ForwardMode.MIXED, [1, 2], [A[143:150], B[63:64]], [143, 63], full=True)
err["mixed_last_A"], err["mixed_B"] = diff(lo[0], ref["A"][149]), diff(lo[1], ref["B"][63])
# c. A finishes; C takes its freed slot (SGLang zeroes it) and is prefilled in two chunks while B decodes:
#    single-run answers, so nothing leaks from A's slot or between requests.
free_request(1)
sc = new_request(4)
lo = step(ForwardMode.EXTEND, [4], [C[:50]], [0])
err["chunk1_C"] = diff(lo, ref["C"][:50])
lo = step(ForwardMode.MIXED, [4, 2], [C[50:90], B[64:65]], [50, 64])
err["chunk2_C"], err["after_mixed_B"] = diff(lo[:40], ref["C"][50:90]), diff(lo[40], ref["B"][64])
report["slots"] = {"A": sa_, "B": sb_, "C": sc, "C_reuses_A": sc == sa_, "held": held}
report["spare_slot_untouched"] = bool((cache.temporal[:, spare] == 7.0).all() and (cache.conv[0][:, spare] == 7.0).all())
pool.mamba_allocator.free(torch.tensor(held, dtype=torch.int64))
# d. Each sequence alone in a fresh slot: the batched answers are the single-run answers.
single = {}
for name, t, row in (("A", A, 5), ("B", B, 6)):
    new_request(row)
    single[name] = step(ForwardMode.EXTEND, [row], [t[:140] if name == "A" else t[:60]], [0])
    free_request(row)
free_request(2)
free_request(4)
sa2, sb2 = new_request(1), new_request(2)
both = step(ForwardMode.EXTEND, [1, 2], [A[:140], B[:60]], [0, 0])
err["batched_vs_single_A"], err["batched_vs_single_B"] = diff(both[:140], single["A"]), diff(both[140:], single["B"])
report["err"], report["scale"] = err, scale
free_request(1)
free_request(2)

# e. The served prefill is deltainv's: a wrong but finite inversion (newton_schulz, 2 iterations) moves it.
os.environ.update(DELTAINV_METHOD="newton_schulz", DELTAINV_OPTIONS="iters=2", DELTAINV_ALLOW_INACCURATE="1")
wrong, _ = build_model()
new_request(1)
lo = step(ForwardMode.EXTEND, [1], [A], [0], model_=wrong)
report["wrong_method"] = {"inversion": wrong.model.inversion.describe(), "err": diff(lo, ref["A"])}
Path(out_path).write_text(json.dumps(report, indent=1, default=str))
