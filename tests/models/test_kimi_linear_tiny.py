"""The shipped tiny Kimi Linear hybrid (``models/kimi_linear_tiny``): the promised architecture and
size, its training record, an lm-eval slice that reproduces the recorded per-item results on both
recall tasks, and ``deltainv serve --model models/kimi_linear_tiny`` (embedded engine, deltainv
active) answering recall prompts over real HTTP with the real ``openai`` client.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deltainv.eval.tasks import TASK_DIR, loader

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "kimi_linear_tiny"
N = 24  # items per task in the lm-eval slice

pytest.importorskip("transformers")


def _config() -> dict:
    return json.loads((MODEL_DIR / "config.json").read_text())


def _offline_env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELTAINV_") and k != "TRITON_INTERPRET"}
    # an unreachable proxy: any attempt to go online fails loudly instead of succeeding
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    env.update(extra)
    return env


def test_folder_config_and_training_record():
    names = {p.name for p in MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", "training.json", "lm_eval_results.json", "README.md"} <= names
    assert sum(p.stat().st_size for p in MODEL_DIR.glob("*.safetensors")) <= 20 * 1024 * 1024
    cfg = _config()
    assert cfg["model_type"] == "kimi_linear" and cfg["architectures"] == ["KimiLinearForCausalLM"]
    types = cfg["layer_types"]
    assert types.count("full_attention") == 1 and types.count("linear_attention") >= 2
    # the tokenizer is the Qwen3-Next tiny model's: same tasks, same ids
    assert (MODEL_DIR / "tokenizer.json").read_text() == (ROOT / "models" / "qwen3_next_tiny" / "tokenizer.json").read_text()
    rec = json.loads((MODEL_DIR / "training.json").read_text())
    assert rec["arch"] == "kimi_linear" and rec["init"] == "recall"
    assert "KDA layer 1" in rec["recall_init"]["description"]
    for key in ("seed", "steps", "wall_time_s", "parameters"):
        assert key in rec, key
    recorded = json.loads((MODEL_DIR / "lm_eval_results.json").read_text())["results"]
    for task in ("deltainv_mqar_mc", "deltainv_kvlast_mc"):
        assert recorded[task]["value"] >= 0.90, (task, recorded[task])


def test_lm_eval_slice_reproduces_the_recorded_items(tmp_path):
    pytest.importorskip("lm_eval")
    recorded = json.loads((MODEL_DIR / "lm_eval_results.json").read_text())["results"]
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "deltainv.eval.lmeval_offline", "--model", "hf",
           "--model_args", f"pretrained={MODEL_DIR},dtype=float32", "--tasks", "deltainv_mqar_mc,deltainv_kvlast_mc",
           "--include_path", str(TASK_DIR), "--device", "cpu", "--batch_size", "16", "--limit", str(N),
           "--output_path", str(out), "--log_samples"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=_offline_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(sorted(out.rglob("results_*.json"))[-1].read_text())
    for path in out.rglob("samples_*.jsonl"):
        task = path.name[len("samples_"):].rsplit("_", 1)[0]
        samples = sorted((json.loads(x) for x in path.read_text().splitlines() if x.strip()), key=lambda s: s["doc_id"])
        got = [int(round(float(s["acc"]))) for s in samples]
        want = recorded[task]["first_48_correct"][:N]
        assert len(got) == N and sum(a != b for a, b in zip(got, want)) <= 1, (task, got, want)
        assert res["results"][task]["acc,none"] >= 0.90, (task, res["results"][task])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_deltainv_serve_answers_recall_prompts(tmp_path):
    from openai import OpenAI

    port = _free_port()
    cli = str(Path(sys.executable).with_name("deltainv"))
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([cli, "serve", "--engine", "hf", "--model", str(MODEL_DIR), "--tri-method",
                                 "mxr_refine", "--port", str(port)], cwd=tmp_path, env=_offline_env(HTTPS_PROXY="",
                                 HTTP_PROXY="", NO_PROXY="127.0.0.1"), stdout=out, stderr=subprocess.STDOUT)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=300)
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                client.models.list()
                break
            except Exception:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        rows = loader.read_rows("mqar.jsonl")[:4] + loader.read_rows("kvlast.jsonl")[:2]
        for r in rows:
            text = client.completions.create(model="kimi_linear_tiny", prompt=r["prompt"], max_tokens=2,
                                             temperature=0).choices[0].text
            assert text.split("\n")[0].strip() == r["answer"], (r["prompt"][-40:], text, r["answer"])
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    served = log.read_text()
    assert "running deltainv (method=mxr_refine" in served
    assert "chunk_kimi_delta_attention" in served
