"""The shipped tiny RWKV-7 (models/rwkv7_tiny): fla's format, its card's numbers, and a re-run slice.

Loading runs in a subprocess with the hub off (an unreachable proxy makes any download fail loudly)
and fla blocked, through ``AutoModelForCausalLM`` after ``import deltainv`` (the registration path).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from deltainv.eval.tasks import loader

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "rwkv7_tiny"
N = 8


def test_folder_config_and_card():
    names = {p.name for p in MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
            "training.json", "lm_eval_results.json", "README.md"} <= names
    assert sum(p.stat().st_size for p in MODEL_DIR.glob("*.safetensors")) <= 8 * 1024 * 1024
    cfg = json.loads((MODEL_DIR / "config.json").read_text())
    assert cfg["model_type"] == "rwkv7" and cfg["architectures"] == ["RWKV7ForCausalLM"]
    for field in ("head_dim", "decay_low_rank_dim", "a_low_rank_dim", "v_low_rank_dim", "gate_low_rank_dim",
                  "value_dim", "norm_first", "fuse_norm"):  # fla's field names
        assert field in cfg, field
    rec = json.loads((MODEL_DIR / "training.json").read_text())
    for key in ("command", "seed", "steps", "wall_time_s", "parameters", "recall_init"):
        assert key in rec, key
    assert rec["steps"] > 0 and 0 < rec["wall_time_s"] <= 20 * 60
    ev = json.loads((MODEL_DIR / "lm_eval_results.json").read_text())["results"]
    assert ev["deltainv_mqar_mc"]["value"] >= 0.9 and ev["deltainv_kvlast_mc"]["value"] >= 0.9
    card = (MODEL_DIR / "README.md").read_text()
    assert f"seed {rec['seed']}" in card and f"{rec['steps']} steps" in card and "wall time" in card


def test_slice_reproduces_recorded_multiple_choice_answers():
    rows = {t: loader.read_rows(f"{t}.jsonl")[:N] for t in ("mqar", "kvlast")}
    code = f"""
import json, sys, torch
sys.modules['fla'] = None
import deltainv
from transformers import AutoModelForCausalLM, AutoTokenizer
d = {str(MODEL_DIR)!r}
tok = AutoTokenizer.from_pretrained(d)
model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
rows = json.loads({json.dumps(json.dumps(rows))})
out = {{"type": type(model).__name__, "inv": model.inversion.describe()}}
for task, items in rows.items():
    got = []
    for r in items:
        ids = tok(r["prompt"], return_tensors="pt").input_ids
        choice_ids = [tok(" " + c, add_special_tokens=False).input_ids for c in r["choices"]]
        assert all(len(c) == 1 for c in choice_ids)
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0, -1], -1)
        pick = max(range(len(choice_ids)), key=lambda i: lp[choice_ids[i][0]].item())
        got.append(int(pick == r["label"]))
    out[task] = got
print(json.dumps(out))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9"}
    env.pop("DELTAINV_METHOD", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    from deltainv.kernels.registry import resolve

    assert res["type"] == "RWKV7ForCausalLM" and res["inv"] == resolve().describe()  # the registry's default
    recorded = json.loads((MODEL_DIR / "lm_eval_results.json").read_text())["results"]
    for task in ("mqar", "kvlast"):
        want = recorded[f"deltainv_{task}_mc"]["first_48_correct"][:N]
        assert sum(res[task]) >= 0.85 * N, (task, res[task])
        assert sum(x != y for x, y in zip(res[task], want)) <= 1, (task, res[task], want)
