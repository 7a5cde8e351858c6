"""One engine's KDA intra function, on CPU tensors under the Triton interpreter, before and after
deltainv patches it (run in that engine's venv with ``TRITON_INTERPRET=1``).

    python kda_intra_check.py ENGINE OUT.pt SEED       # ENGINE: fla | vllm | sglang

Calls the engine's own ``chunk_kda_fwd_intra`` on fp32 inputs (the interpreter's bf16 math is
wrong), then installs deltainv (method ``mxr_refine``, only that engine's targets) and calls the
name the engine's own caller uses, and once more with ``newton_schulz`` at 2 iterations (a wrong but
finite inverse). Saves both results, the status and the signature for the test to judge.
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/: support.triton_interpreter
from support import triton_interpreter  # noqa: E402

MODULES = {  # engine -> (module whose by-name copy the engine's caller uses, target group)
    "fla": ("fla.ops.kda.chunk_fwd", "fla"),
    "vllm": ("vllm.models.kimi_k3.nvidia.ops.third_party.kda.chunk", "vllm"),
    "sglang": ("sglang.kernels.ops.attention.fla.kda", "sglang"),
}

engine, out_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
assert triton_interpreter.install(), "run with TRITON_INTERPRET=1"
if engine == "sglang":
    sys.path.insert(0, str(HERE))
    import sglang_cpu  # noqa: E402

    sglang_cpu.prepare()
modname, group = MODULES[engine]
module = importlib.import_module(modname)
if engine == "sglang":
    sglang_cpu.fix_aliases("sglang.kernels.ops.attention.fla")
held = [module.chunk_kda_fwd_intra]  # in a list: deltainv rebinds module globals that hold the original

g = torch.Generator().manual_seed(seed)
B, T, H, K, V, BT = 1, 100, 2, 32, 16, 64
cu = torch.tensor([0, 37, 100], dtype=torch.long)


def l2(x):
    return x / x.norm(dim=-1, keepdim=True)


q, k = l2(torch.randn(B, T, H, K, generator=g)), l2(torch.randn(B, T, H, K, generator=g))
v = torch.randn(B, T, H, V, generator=g)
beta = torch.rand(B, T, H, generator=g)
graw = -torch.rand(B, T, H, K, generator=g) * 0.5 / math.log(2)  # log2 units, as all three engines take
gk = torch.zeros_like(graw)
for s, e in zip(cu.tolist(), cu.tolist()[1:]):
    for c in range(s, e, BT):
        gk[:, c:min(c + BT, e)] = graw[:, c:min(c + BT, e)].cumsum(1)
kwargs = dict(q=q, k=k, gk=gk, beta=beta, scale=K**-0.5, cu_seqlens=cu, chunk_size=BT)
if engine != "vllm":
    kwargs["v"] = v

try:
    theirs, why_not = held[0](**kwargs), None
except TypeError as exc:
    # vLLM's CPU build disables Triton ("doesn't include CPU backend") and swaps its jit decorator
    # for a placeholder, so its Triton kernels cannot run here even under the interpreter.
    theirs, why_not = None, f"{type(exc).__name__}: {exc}"

import deltainv.plugin as plugin  # noqa: E402
from deltainv.plugin.settings import Settings  # noqa: E402

from deltainv.kernels.kda.pytorch import chunk_kda_fwd_intra as reference  # noqa: E402

ref = reference(q, k, v if engine != "vllm" else None, gk, beta, K**-0.5, cu, BT, method="substitution",
                precision="fp32", wu_precision="fp32")
results = {"engine": engine, "why_not": why_not, "reference": ref[-2:] if engine == "vllm" else ref, "signature": list(inspect.signature(held[0]).parameters), "theirs": theirs,
           "inputs": {**kwargs, "v": v}}
for label, settings in (("ours", Settings(method="mxr_refine", targets=frozenset({group}))),
                        ("wrong", Settings(method="newton_schulz", options=(("iters", 2),), guard=False, allow_inaccurate=True,
                                           targets=frozenset({group})))):
    plugin.install(settings)
    patched = module.chunk_kda_fwd_intra
    results[label] = patched(**kwargs)
    status = plugin.status()
    results[label + "_status"] = {"patched": [r["target"] for r in status["patched"]],
                                  "counters": status["counters"], "replaced": patched is not held[0]}
    plugin.uninstall()
results["restored"] = module.chunk_kda_fwd_intra is held[0]
torch.save(results, out_path)
