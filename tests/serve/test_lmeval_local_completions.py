"""lm-eval ``local-completions`` against the live ``hf`` server scores every item as lm-eval ``hf``
does on the same model in-process (deltainv active on both sides): same per-item accuracy, same
argmax, loglikelihoods equal to float32 rounding.

Both runs go through the parity gate's arm runner (one process per run, so no shared lm-eval
cache), which reads per-item values before lm-eval's saving stringifies them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from deltainv.eval.tasks import TASK_DIR

TASKS = ["deltainv_mqar_mc", "deltainv_copy_mc"]
LIMIT = 12


def _arm(tmp_path, name: str, spec: dict) -> dict:
    job = {"spec": spec, "tasks": TASKS, "include_path": str(TASK_DIR), "limit": LIMIT, "batch_size": 8,
           "num_concurrent": 4, "seed": 0}
    (tmp_path / f"{name}.json").write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "deltainv.eval.parity.arm", f"{name}.json", f"{name}.out.json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((tmp_path / f"{name}.out.json").read_text())


@pytest.mark.slow
def test_local_completions_matches_hf_item_by_item(server, tiny_model, tmp_path):
    api = _arm(tmp_path, "api", {"base_url": server.base + "/v1/completions", "model_name": tiny_model.name,
                                 "tokenizer": str(tiny_model)})
    hf = _arm(tmp_path, "hf", {"model": str(tiny_model), "env": {"DELTAINV_METHOD": "mxr_refine"}})
    assert hf["deltainv"]["active"], hf["deltainv"]
    for task in TASKS:
        a = {i["doc_id"]: i for i in api["tasks"][task]["items"]}
        h = {i["doc_id"]: i for i in hf["tasks"][task]["items"]}
        assert sorted(a) == sorted(h) == list(range(LIMIT))
        for d in a:
            assert a[d]["prompt_hash"] == h[d]["prompt_hash"], f"{task}/{d}: different prompts"
            assert a[d]["value"] == h[d]["value"], f"{task}/{d}: scored differently"
            diff = max(abs(x - y) for x, y in zip(a[d]["lls"], h[d]["lls"]))
            assert diff < 2e-3, f"{task}/{d}: loglikelihoods {a[d]['lls']} vs {h[d]['lls']}"
