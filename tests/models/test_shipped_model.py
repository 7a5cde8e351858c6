"""The shipped tiny Qwen3-Next hybrid: loads offline from its folder, has the promised
architecture and size, its tokenizer round-trips, and it answers the task format greedily.

Loading runs in a subprocess with ``HF_HUB_OFFLINE=1`` (set before anything from Hugging Face
is imported, so the offline guarantee is real) and with fla blocked: with fla installed,
transformers binds fla's Triton kernels for Qwen3Next at import time and they fail on a CPU
(``0 active drivers``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deltainv.eval.tasks import loader, synthetic

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "qwen3_next_tiny"

pytest.importorskip("transformers")


def _run_offline(code: str, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           # an unreachable proxy: any attempt to go online fails loudly instead of succeeding
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    prelude = "import sys\nsys.modules['fla'] = None  # fla's Triton kernels fail on CPU\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd="/")


def _config() -> dict:
    return json.loads((MODEL_DIR / "config.json").read_text())


def test_folder_has_the_promised_files_and_size():
    names = {p.name for p in MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", "training.json", "README.md"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names), "weights must be safetensors only"
    weights = sum(p.stat().st_size for p in MODEL_DIR.glob("*.safetensors"))
    assert weights <= 20 * 1024 * 1024, weights


def test_config_is_a_qwen3_next_hybrid_with_64_wide_heads():
    cfg = _config()
    assert cfg["model_type"] == "qwen3_next"
    assert cfg["architectures"] == ["Qwen3NextForCausalLM"]
    types = cfg["layer_types"]
    assert len(types) == cfg["num_hidden_layers"]
    assert "full_attention" in types and types.count("linear_attention") >= 2
    assert cfg["head_dim"] == cfg["linear_key_head_dim"] == cfg["linear_value_head_dim"] == 64
    # vLLM's Qwen3Next needs at least one MoE layer and a separate lm_head
    assert cfg["num_experts"] > 0 and len(cfg.get("mlp_only_layers") or []) < cfg["num_hidden_layers"]
    assert cfg["tie_word_embeddings"] is False


def test_training_record_has_recipe_seed_and_wall_time():
    rec = json.loads((MODEL_DIR / "training.json").read_text())
    for key in ("command", "seed", "steps", "lr", "wall_time_s", "parameters", "task_weights"):
        assert key in rec, key
    assert 0 < rec["wall_time_s"] < 3 * 3600


def test_loads_offline_with_auto_classes_and_answers_the_task_format():
    rows = [r for r in loader.read_rows("mqar.jsonl")[:12]]
    code = f"""
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
d = {str(MODEL_DIR)!r}
tok = AutoTokenizer.from_pretrained(d)
model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
n = sum(p.numel() for p in model.parameters())
rows = json.loads({json.dumps(json.dumps(rows))})
outs = []
for r in rows:
    ids = tok(r["prompt"], return_tensors="pt").input_ids
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=3, do_sample=False)
    outs.append(tok.decode(gen[0, ids.shape[1]:]))
print(json.dumps({{"type": type(model).__name__, "n": n, "outs": outs}}))
"""
    proc = _run_offline(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["type"] == "Qwen3NextForCausalLM"
    assert res["n"] == json.loads((MODEL_DIR / "training.json").read_text())["parameters"]
    # greedy continuation has the task's answer format: " <two-digit value>\n"
    answers = [o.split("\n")[0].strip() for o in res["outs"]]
    assert all(o.startswith(" ") and "\n" in o for o in res["outs"]), res["outs"]
    assert all(a in synthetic.VALUES for a in answers), answers
    # and the same answers lm-eval's greedy generation recorded for these items
    recorded = json.loads((MODEL_DIR / "lm_eval_results.json").read_text())["results"]
    want = recorded["deltainv_mqar_gen"]["first_48_correct"][:len(rows)]
    got = [int(a == r["answer"]) for a, r in zip(answers, rows)]
    assert sum(x != y for x, y in zip(got, want)) <= 1, (got, want)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(MODEL_DIR / "tokenizer.json"))


@pytest.mark.parametrize("text", [
    "kv: ba 12 ko 45\n? ko",
    "Hello, world! Ünïcödé ✓ 漢字 \t tabs  and  double spaces\n\n",
    "",
    " leading space and trailing space ",
])
def test_tokenizer_round_trips_any_text(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text


def test_tokenizer_round_trips_the_task_files(tokenizer):
    for task in synthetic.TASKS:
        for r in loader.read_rows(f"{task}.jsonl")[:50]:
            ids = tokenizer.encode(r["prompt"] + " " + r["answer"], add_special_tokens=False)
            assert tokenizer.decode(ids) == r["prompt"] + " " + r["answer"]


def test_every_task_word_is_one_token_and_answers_split_cleanly(tokenizer):
    from deltainv.models.tokenizer import required_words

    for w in required_words():
        assert len(tokenizer.encode(w, add_special_tokens=False)) == 1, repr(w)
    # lm-eval scores " <choice>" as the tokens of prompt+choice after the prompt's tokens
    r = loader.read_rows("mqar.jsonl")[0]
    p = tokenizer.encode(r["prompt"], add_special_tokens=False)
    whole = tokenizer.encode(r["prompt"] + " " + r["answer"], add_special_tokens=False)
    assert whole[:len(p)] == p and len(whole) == len(p) + 1


def test_tokenizer_config_special_tokens_and_chat_template():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(MODEL_DIR))
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == tok.eos_token
    assert tok.eos_token_id == _config()["eos_token_id"]
    assert tok("kv: ba 12").input_ids == tok.encode("kv: ba 12", add_special_tokens=False)  # no BOS
    prompt = loader.read_rows("mqar.jsonl")[0]["prompt"]
    rendered = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
    assert rendered == prompt
