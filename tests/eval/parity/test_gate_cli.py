"""``deltainv parity`` end to end on the shipped model and tasks: real lm-eval, one process per arm.

- the engine's own kernel against itself passes with zero drift (an A/A run);
- a stable method (``mxr_refine``) passes against the engine's kernel at the default 1-point margin,
  on ``deltainv_kvlast_mc`` (overwritten keys: the task whose answers depend on the inverse);
- the unstable ``product`` form at ``fp16`` with the guard off fails;
- too few items give "inconclusive" (exit 2), with the items needed.

400 items are about what a 1-point margin needs when the arms agree on
every item (the exact bound's rule of three: 3.7/n < 1 %).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deltainv.models import DEFAULT_MODEL

pytestmark = pytest.mark.slow
DELTAINV = str(Path(sys.executable).with_name("deltainv"))


def _parity(tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    out = tmp_path / "report"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELTAINV_") and k != "TRITON_INTERPRET"}
    proc = subprocess.run([DELTAINV, "parity", "--model", str(DEFAULT_MODEL), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=1200, cwd=tmp_path, env=env)
    report = json.loads((out / "parity.json").read_text()) if (out / "parity.json").exists() else {}
    return proc.returncode, report, proc.stdout + proc.stderr


def test_baseline_against_itself_passes_with_zero_drift(tmp_path):
    code, report, log = _parity(tmp_path, "--baseline", "off", "--candidate", "off", "--tasks", "deltainv_mqar_mc",
                                "--limit", "400")
    assert code == 0, log[-3000:]
    task = report["tasks"]["deltainv_mqar_mc"]
    assert task["n"] == 400 and task["verdict"] == "pass"
    assert task["n10"] == task["n01"] == 0
    assert task["drift"]["max_abs"] == 0.0 and task["drift"]["argmax_flips"] == 0
    for name in ("parity.md", "parity.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0


def test_stable_method_passes_against_the_engine_kernel(tmp_path):
    # kvlast: the shipped task whose answers depend on the inverse (docs/models.md, "Status")
    code, report, log = _parity(tmp_path, "--candidate", "mxr_refine", "--tasks", "deltainv_kvlast_mc",
                                "--limit", "400")
    assert code == 0, log[-3000:]
    task = report["tasks"]["deltainv_kvlast_mc"]
    assert task["verdict"] == "pass" and task["ci_low"] > -0.01
    assert 0 < task["drift"]["max_abs"] < 1e-3  # a different kernel: tiny, non-zero drift
    assert "PASS (exit 0)" in log


def test_product_fp16_without_guard_fails(tmp_path):
    code, report, log = _parity(tmp_path, "--candidate", "product", "--candidate-precision", "fp16", "--guard", "off",
                                "--tasks", "deltainv_mqar_mc,deltainv_kvlast_mc", "--limit", "40")
    assert code == 1, log[-3000:]
    assert report["verdict"] == "fail"
    kv = report["tasks"]["deltainv_kvlast_mc"]
    assert kv["verdict"] == "fail" and kv["drift"]["argmax_flips"] > 0


def test_too_few_items_is_inconclusive_and_says_how_many_are_needed(tmp_path):
    code, report, log = _parity(tmp_path, "--candidate", "substitution", "--tasks", "deltainv_mqar_mc",
                                "--limit", "30")
    assert code == 2, log[-3000:]
    task = report["tasks"]["deltainv_mqar_mc"]
    assert task["verdict"] == "inconclusive" and task["items_needed"] > 30
    assert "are needed" in log


def test_rwkv7_arms_run_their_own_method_from_a_relative_model_path(tmp_path):
    """deltainv's RWKV-7 picks its inversion from the settings itself: each arm's variables must reach
    it (a wrong but finite method moves the logliks), and a relative model folder must not be read as a
    hub id in the arms' own working folders."""
    model = os.path.relpath(Path(DEFAULT_MODEL).parent / "rwkv7_tiny", tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELTAINV_") and k != "TRITON_INTERPRET"}
    proc = subprocess.run([DELTAINV, "parity", "--model", model, "--baseline", "torch", "--candidate", "newton_schulz",
                           "--candidate-options", "iters=2", "--guard", "off", "--tasks", "deltainv_kvlast_mc",
                           "--limit", "4", "--margin", "5", "--out", "report"],
                          capture_output=True, text=True, timeout=1200, cwd=tmp_path, env=env)
    assert proc.returncode in (1, 2), (proc.stdout + proc.stderr)[-3000:]
    drift = json.loads((tmp_path / "report" / "parity.json").read_text())["tasks"]["deltainv_kvlast_mc"]["drift"]
    assert drift["max_abs"] > 0.1, drift


@pytest.mark.parametrize("engine_args, name", [("--dtype float32", "rwkv7_tiny"),
                                               ("--served-model-name tiny", "tiny")])
def test_launch_vllm_names_the_served_model_and_tokenizes_locally(monkeypatch, engine_args, name):
    """vLLM/SGLang serve a model under the path given and lack lm-eval's tokenizer endpoint: ``--launch vllm``
    passes ``--served-model-name`` and the local model folder as tokenizer (run by hand on RWKV-7, docs/rwkv7.md)."""
    import contextlib

    from deltainv import cli
    from deltainv.eval.parity import gate

    seen = {"launched": [], "endpoints": None}

    @contextlib.contextmanager
    def launched(engine, model, tri_method, env, extra, log_path, timeout=600.0):
        seen["launched"].append((engine, model, list(extra)))
        yield f"http://127.0.0.1:1/{tri_method}/v1/completions"

    def run_parity(baseline, candidate, config):
        seen["endpoints"] = (baseline, candidate)
        raise ValueError("stop here")

    monkeypatch.setattr(gate, "launched", launched)
    monkeypatch.setattr(gate, "run_parity", run_parity)
    model = str(Path(__file__).resolve().parents[3] / "models" / "rwkv7_tiny")
    code = cli.main(["parity", "--launch", "vllm", "--model", model, "--engine-args", engine_args])
    assert code == 3  # run_parity's ValueError: "a run failed"
    for engine, m, extra in seen["launched"]:
        assert engine == "vllm" and m == model and extra.count("--served-model-name") == 1
        assert extra[extra.index("--served-model-name") + 1] == name
    for endpoint in seen["endpoints"]:
        assert endpoint["model_name"] == name and endpoint["tokenizer"] == model
