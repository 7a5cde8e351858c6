"""One arm of a parity run: lm-eval on one configuration, per-item results written to JSON.

Run in its own process (``python -m deltainv.eval.parity.arm SPEC.json OUT.json``) so the two arms
never share lm-eval's response cache, a patched module or any process-global state. The spec
picks one of:

- ``{"model": PATH, "env": {DELTAINV_*: ...}}``: transformers in-process (lm-eval ``hf``), with
  deltainv activated by the environment variables (``DELTAINV_METHOD=off`` is the engine's own
  kernel);
- ``{"base_url": URL, "model_name": NAME, "tokenizer": PATH|None}``: an OpenAI-compatible server
  through lm-eval ``local-completions`` (token-id prompts, echo + logprobs).

Per item the output keeps what the comparison needs, read before lm-eval's saving would turn it
into strings: ``doc_id``, ``doc_hash``, ``prompt_hash``, the primary metric's value and, for
multiple-choice tasks, every choice's loglikelihood.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _prepare_process(spec: dict) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if "model" not in spec:
        return
    from deltainv.plugin import activate_in_process
    from deltainv.plugin.settings import Settings

    # The arm's variables go into this (dedicated) process's environment, not only into the hooks:
    # models that read the settings themselves (deltainv's RWKV-7 picks its inversion from them)
    # must see the same ones. The parent strips every DELTAINV_* variable before starting the arm.
    os.environ.update(spec.get("env", {}))
    activate_in_process(Settings.from_env())


def _lm(spec: dict, batch_size: int, num_concurrent: int):
    if "model" in spec:
        import torch
        from lm_eval.models.huggingface import HFLM

        device = "cuda" if torch.cuda.is_available() else "cpu"
        return HFLM(pretrained=spec["model"], dtype="float32", device=device, batch_size=batch_size)
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    args = {"model": spec["model_name"], "base_url": spec["base_url"], "num_concurrent": num_concurrent,
            "max_retries": 3, "tokenized_requests": True, "batch_size": 1, "max_length": spec.get("max_length", 2048)}
    if spec.get("tokenizer"):
        args.update(tokenizer=spec["tokenizer"], tokenizer_backend="huggingface")
    else:
        args.update(tokenizer_backend="remote")
    return LocalCompletionsAPI(**args)


def _primary_metric(config: dict) -> str:
    metrics = config.get("metric_list") or []
    return metrics[0]["metric"] if metrics else "acc"


def extract(results: dict) -> dict[str, dict[str, Any]]:
    """Per task: primary metric, output type and the per-item values (JSON-safe floats)."""
    out = {}
    for task, samples in results["samples"].items():
        config = results["configs"][task]
        metric = _primary_metric(config)
        mc = config.get("output_type") == "multiple_choice"
        items = []
        for s in samples:
            item = {"doc_id": int(s["doc_id"]), "doc_hash": s.get("doc_hash"), "prompt_hash": s.get("prompt_hash"),
                    "value": float(s[metric])}
            if mc:
                item["lls"] = [float(r[0]) for r in s["filtered_resps"]]
            items.append(item)
        out[task] = {"metric": metric, "output_type": config.get("output_type"), "items": items}
    return out


def run(spec: dict, tasks: list[str], include_path: str, limit: int | None, batch_size: int,
        num_concurrent: int, seed: int) -> dict:
    _prepare_process(spec)
    import lm_eval
    from lm_eval.tasks import TaskManager

    t0 = time.perf_counter()
    lm = _lm(spec, batch_size, num_concurrent)
    results = lm_eval.simple_evaluate(
        model=lm, tasks=tasks, task_manager=TaskManager(include_path=include_path, include_defaults=False),
        limit=limit, log_samples=True, bootstrap_iters=0, use_cache=None, random_seed=seed,
        numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
    )
    from deltainv.plugin import status

    return {"tasks": extract(results), "seconds": round(time.perf_counter() - t0, 2),
            "deltainv": status() if "model" in spec else None}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m deltainv.eval.parity.arm SPEC.json OUT.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    out = run(job["spec"], job["tasks"], job["include_path"], job.get("limit"), job.get("batch_size", 16),
              job.get("num_concurrent", 1), job.get("seed", 0))
    Path(argv[1]).write_text(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
