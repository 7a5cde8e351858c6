"""Measure a model folder on the shipped lm-eval tasks (offline, fla blocked) and record it.

    .venv/bin/python -m deltainv.models.evaluate models/qwen3_next_tiny

Runs real lm-eval (``--model hf``, float32, CPU) through ``deltainv.eval.lmeval_offline`` on
every task in ``eval/tasks`` and writes ``lm_eval_results.json`` into the model folder: per task
the metric, its value, lm-eval's (unpaired) standard error and the number of items, plus the
exact command. Progress is lm-eval's own progress bars.
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deltainv.eval.tasks import TASK_DIR, synthetic

TASKS = [f"deltainv_{t}_{f}" for t in synthetic.TASKS for f in ("mc", "gen")]


def lm_eval_command(model_dir: Path, tasks: list[str], out: Path, batch_size: int, limit: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "deltainv.eval.lmeval_offline", "--model", "hf",
           "--model_args", f"pretrained={model_dir},dtype=float32",
           "--tasks", ",".join(tasks), "--include_path", str(TASK_DIR),
           "--device", "cpu", "--batch_size", str(batch_size), "--output_path", str(out), "--log_samples"]
    return cmd + (["--limit", str(limit)] if limit else [])


def read_results(out: Path) -> dict:
    files = sorted(glob.glob(str(out / "**" / "results_*.json"), recursive=True))
    if not files:
        raise RuntimeError(f"lm-eval wrote no results under {out}")
    return json.loads(Path(files[-1]).read_text())


#: Items per task whose per-item correctness is recorded, for the test that re-runs a slice.
N_RECORDED_ITEMS = 48


def first_items(out: Path, task: str, metric_key: str) -> list[int]:
    """Per-item correctness (0/1) of the first ``N_RECORDED_ITEMS`` documents of ``task``."""
    files = sorted(glob.glob(str(out / "**" / f"samples_{task}_*.jsonl"), recursive=True))
    metric = metric_key.split(",")[0]
    rows = [json.loads(line) for line in Path(files[-1]).read_text().splitlines() if line.strip()]
    by_id = {r["doc_id"]: r[metric] for r in rows}
    return [int(round(float(by_id[i]))) for i in range(min(N_RECORDED_ITEMS, len(by_id)))]


def summarize(results: dict) -> dict:
    """``{task: {"metric", "value", "stderr", "n"}}`` from an lm-eval results dict."""
    table = {}
    for task, res in sorted(results["results"].items()):
        key = next(k for k in res if k.startswith(("acc,", "exact_match,")) and "_stderr" not in k)
        metric, flt = key.split(",")
        table[task] = {"metric": key, "value": res[key], "stderr": res.get(f"{metric}_stderr,{flt}"),
                       "n": results["n-samples"][task]["effective"]}
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--no-write", action="store_true", help="print only, do not write into the folder")
    args = p.parse_args(argv)
    model_dir = args.model_dir.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = lm_eval_command(model_dir, args.tasks.split(","), Path(tmp), args.batch_size, args.limit)
        print("[evaluate] " + " ".join(cmd), flush=True)
        t0 = time.time()
        subprocess.run(cmd, check=True)
        results = read_results(Path(tmp))
        table = summarize(results)
        for task, row in table.items():
            row[f"first_{N_RECORDED_ITEMS}_correct"] = first_items(Path(tmp), task, row["metric"])
    record = {
        "command": ".venv/bin/python -m deltainv.eval.lmeval_offline --model hf --model_args "
                   f"pretrained=<this folder>,dtype=float32 --tasks {args.tasks} --include_path eval/tasks "
                   f"--device cpu --batch_size {args.batch_size}" + (f" --limit {args.limit}" if args.limit else ""),
        "wall_time_s": round(time.time() - t0, 1),
        "lm_eval_version": results.get("lm_eval_version"),
        "transformers_version": results.get("transformers_version"),
        "results": table,
    }
    for task, row in table.items():
        print(f"[evaluate] {task:28s} {row['metric']:22s} {row['value']:.4f} (n={row['n']})")
    if not args.no_write:
        (model_dir / "lm_eval_results.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
