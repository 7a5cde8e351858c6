"""``deltainv parity``: run both arms, pair items by ``doc_id``, decide, and report.

Three ways to get the two arms (see :mod:`deltainv.eval.parity.arm`):

- in-process transformers: the same model with deltainv off (baseline) and on (candidate);
- two running OpenAI-compatible endpoints, through lm-eval ``local-completions``;
- launching both servers with ``deltainv serve`` first (``--launch ENGINE``), then as above.

Per task the report gives both accuracies, the paired difference with its confidence bounds, the
exact McNemar p-value and discordant counts, the non-inferiority verdict against the margin and,
for multiple-choice tasks, per-choice loglikelihood drift and argmax flips. The run's verdict is
``fail`` if any task fails, else ``inconclusive`` if any task is, else ``pass`` (exit 1 / 2 / 0).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .stats import FAIL, INCONCLUSIVE, PASS, loglik_drift, parity

EXIT = {PASS: 0, FAIL: 1, INCONCLUSIVE: 2}
TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"


@dataclass
class ParityConfig:
    tasks: list[str]
    include_path: str = str(TASKS_DIR)
    limit: int | None = None
    margin: float = 0.01
    alpha: float = 0.05
    iters: int = 10_000
    seed: int = 0
    batch_size: int = 16
    num_concurrent: int = 4


@dataclass
class ParityReport:
    baseline: dict
    candidate: dict
    config: ParityConfig
    tasks: dict[str, dict] = field(default_factory=dict)
    verdict: str = PASS
    meta: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "exit_code": EXIT[self.verdict], "baseline": self.baseline,
                "candidate": self.candidate, "config": self.config.__dict__, "tasks": self.tasks, "meta": self.meta}


def run_arm(spec: dict, config: ParityConfig, label: str, log: IO[str] | None = sys.stderr) -> dict:
    """Run one arm in its own Python process and return its per-item results."""
    with tempfile.TemporaryDirectory(prefix=f"deltainv-parity-{label}-") as tmp:
        job = Path(tmp) / "job.json"
        out = Path(tmp) / "out.json"
        job.write_text(json.dumps({"spec": spec, "tasks": config.tasks, "include_path": config.include_path,
                                   "limit": config.limit, "batch_size": config.batch_size,
                                   "num_concurrent": config.num_concurrent, "seed": config.seed}))
        if log is not None:
            print(f"[parity] {label}: {_describe(spec)} on {', '.join(config.tasks)}", file=log, flush=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DELTAINV_") and k != "TRITON_INTERPRET"}
        env["PYTHONSAFEPATH"] = "1"  # a checkout in the cwd must not shadow the installed package
        proc = subprocess.run([sys.executable, "-m", "deltainv.eval.parity.arm", str(job), str(out)], env=env,
                              cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the {label} arm failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
        result = json.loads(out.read_text())
        if log is not None:
            print(f"[parity] {label}: done in {result['seconds']} s", file=log, flush=True)
        return result


def _describe(spec: dict) -> str:
    if "base_url" in spec:
        return f"endpoint {spec['base_url']} ({spec['model_name']})"
    env = spec.get("env", {})
    method = env.get("DELTAINV_METHOD", "off")
    if method == "off":
        return f"{spec['model']} with the engine's own kernel"
    extra = ", ".join(f"{k.removeprefix('DELTAINV_').lower()}={v}" for k, v in env.items() if k != "DELTAINV_METHOD")
    return f"{spec['model']} with deltainv {method}" + (f" ({extra})" if extra else "")


def compare(base: dict, cand: dict, config: ParityConfig) -> tuple[dict[str, dict], str]:
    """Pair the arms' items per task by ``doc_id``; per-task statistics and the overall verdict."""
    missing = set(base["tasks"]) ^ set(cand["tasks"])
    if missing:
        raise ValueError(f"the arms ran different tasks: {sorted(missing)}")
    tasks = {}
    for task in sorted(base["tasks"]):
        b, c = base["tasks"][task], cand["tasks"][task]
        bi, ci = {i["doc_id"]: i for i in b["items"]}, {i["doc_id"]: i for i in c["items"]}
        if set(bi) != set(ci):
            raise ValueError(f"{task}: the arms scored different items")
        ids = sorted(bi)
        changed = [d for d in ids if (bi[d]["doc_hash"], bi[d]["prompt_hash"]) != (ci[d]["doc_hash"], ci[d]["prompt_hash"])]
        if changed:
            raise ValueError(f"{task}: {len(changed)} items have different documents or prompts across arms "
                             f"(doc_id {changed[:5]}); the comparison would not be paired")
        r = parity([bi[d]["value"] for d in ids], [ci[d]["value"] for d in ids], margin=config.margin,
                   alpha=config.alpha, iters=config.iters, seed=config.seed)
        entry = {"metric": b["metric"], "output_type": b["output_type"], **r.as_dict()}
        if b["output_type"] == "multiple_choice":
            entry["drift"] = loglik_drift([bi[d]["lls"] for d in ids], [ci[d]["lls"] for d in ids]).as_dict()
            broken = sum(1 for d in ids if all(map(math.isfinite, bi[d]["lls"]))
                         and not all(map(math.isfinite, ci[d]["lls"])))
            entry["nonfinite_items"] = broken
            if broken:
                # A candidate that turns finite loglikelihoods into inf/NaN is broken whatever the
                # accuracy says (argmax over NaN still "picks" a choice).
                entry["verdict"] = FAIL
                entry["reason"] = (f"the candidate's loglikelihoods are non-finite on {broken} of {len(ids)} items "
                                   f"where the baseline's are finite")
        tasks[task] = entry
    verdicts = {t["verdict"] for t in tasks.values()}
    verdict = FAIL if FAIL in verdicts else INCONCLUSIVE if INCONCLUSIVE in verdicts else PASS
    return tasks, verdict


def run_parity(baseline: dict, candidate: dict, config: ParityConfig, log: IO[str] | None = sys.stderr) -> ParityReport:
    t0 = time.perf_counter()
    base = run_arm(baseline, config, "baseline", log)
    cand = run_arm(candidate, config, "candidate", log)
    tasks, verdict = compare(base, cand, config)
    meta = {"seconds": round(time.perf_counter() - t0, 1), "baseline_seconds": base["seconds"],
            "candidate_seconds": cand["seconds"], "candidate_deltainv": cand.get("deltainv"),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return ParityReport(baseline, candidate, config, tasks, verdict, meta)


# ------------------------------------------------------------------------------------------------
# launching servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before it was healthy")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        time.sleep(0.5)
    raise TimeoutError(f"{url} was not healthy after {timeout:.0f} s")


@contextlib.contextmanager
def launched(engine: str, model: str, tri_method: str, env: dict[str, str], extra: list[str], log_path: Path,
             timeout: float = 600.0) -> Iterator[str]:
    """Run ``deltainv serve`` for one arm; yield its ``/v1/completions`` URL; stop it afterwards."""
    port = _free_port()
    cmd = [sys.executable, "-m", "deltainv.cli", "serve", "--engine", engine, "--model", model, "--port", str(port),
           "--tri-method", tri_method, *(["--", *extra] if extra else [])]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DELTAINV_") and k != "TRITON_INTERPRET"}
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(cmd, env={**clean, **env, "PYTHONSAFEPATH": "1"}, cwd=log_path.parent, stdout=logf,
                                stderr=subprocess.STDOUT)
        try:
            _wait_healthy(f"http://127.0.0.1:{port}", proc, timeout)
            yield f"http://127.0.0.1:{port}/v1/completions"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


# ------------------------------------------------------------------------------------------------
# output


def _pt(x: float) -> str:
    return f"{100 * x:+.2f}"


def format_table(report: ParityReport) -> str:
    rows = [("task", "metric", "n", "baseline", "candidate", "delta pt", "lower pt", "McNemar p", "n10/n01",
             "max|dll|", "flips", "verdict")]
    for task, t in report.tasks.items():
        d = t.get("drift") or {}
        rows.append((task, t["metric"], str(t["n"]), f"{100 * t['baseline_acc']:.2f}", f"{100 * t['candidate_acc']:.2f}",
                     _pt(t["delta"]), _pt(t["ci_low"]), f"{t['mcnemar_p']:.3g}", f"{t['n10']}/{t['n01']}",
                     f"{d['max_abs']:.2e}" if d else "-", str(d.get("argmax_flips", "-")),
                     t["verdict"] + (" (!)" if t["significant_loss"] else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.append(f"\nmargin {100 * report.config.margin:g} pt, alpha {report.config.alpha}; "
                 f"(!) marks a significant loss (exact McNemar) inside the margin")
    for task, t in report.tasks.items():
        lines.append(f"{task}: {t['reason']}")
    lines.append(f"verdict: {report.verdict.upper()} (exit {EXIT[report.verdict]})")
    return "\n".join(lines)


def format_markdown(report: ParityReport) -> str:
    out = [f"# deltainv parity: {report.verdict}", "",
           f"- baseline: {_describe(report.baseline)}", f"- candidate: {_describe(report.candidate)}",
           f"- margin {100 * report.config.margin:g} pt, alpha {report.config.alpha}, "
           f"{report.config.iters} bootstrap resamples, seed {report.config.seed}, "
           f"{report.meta.get('seconds')} s", "",
           "| task | metric | n | baseline | candidate | delta (pt) | lower bound (pt) | McNemar p | n10 / n01 | "
           "max abs dll | argmax flips | verdict |", "|" + "---|" * 12]
    for task, t in report.tasks.items():
        d = t.get("drift") or {}
        out.append(f"| {task} | {t['metric']} | {t['n']} | {100 * t['baseline_acc']:.2f} | "
                   f"{100 * t['candidate_acc']:.2f} | {_pt(t['delta'])} | {_pt(t['ci_low'])} | {t['mcnemar_p']:.3g} | "
                   f"{t['n10']} / {t['n01']} | {d.get('max_abs', float('nan')):.2e} | {d.get('argmax_flips', '-')} | "
                   f"{t['verdict']} |")
    out.append("")
    out += [f"- `{task}`: {t['reason']}" for task, t in report.tasks.items()]
    return "\n".join(out) + "\n"


def plot(report: ParityReport, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(report.tasks)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.5 * len(tasks) + 2.5))
    colors = {PASS: "tab:green", FAIL: "tab:red", INCONCLUSIVE: "tab:orange"}
    for y, task in enumerate(tasks):
        t = report.tasks[task]
        ax1.errorbar(100 * t["delta"], y, xerr=[[100 * (t["delta"] - t["ci_low"])], [100 * (t["ci_high"] - t["delta"])]],
                     fmt="o", color=colors[t["verdict"]], capsize=4)
        ax2.barh(y + 0.2, 100 * t["baseline_acc"], 0.4, color="tab:gray", label="baseline" if y == 0 else None)
        ax2.barh(y - 0.2, 100 * t["candidate_acc"], 0.4, color=colors[t["verdict"]],
                 label="candidate" if y == 0 else None)
    ax1.axvline(-100 * report.config.margin, color="tab:red", ls="--", lw=1, label="margin")
    ax1.axvline(0, color="black", lw=0.8)
    ax1.set_yticks(range(len(tasks)), tasks, fontsize=8)
    ax1.set_xlabel("candidate - baseline (points); bar: confidence bounds")
    ax1.legend(fontsize=7)
    ax2.set_yticks(range(len(tasks)), tasks, fontsize=8)
    ax2.set_xlabel("accuracy (%)")
    ax2.legend(fontsize=7)
    fig.suptitle(f"deltainv parity: {report.verdict.upper()}  ({_describe(report.candidate)} vs "
                 f"{_describe(report.baseline)})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(report: ParityReport, out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "parity.json", out / "parity.md", out / "parity.png"]
    paths[0].write_text(json.dumps(report.as_dict(), indent=1, default=str))
    paths[1].write_text(format_markdown(report))
    plot(report, str(paths[2]))
    return paths


def arm_env(method: str, precision: str | None, options: str | None, guard: bool) -> dict[str, str]:
    """The ``DELTAINV_*`` variables of an in-process arm (``method`` ``off`` is the engine's own kernel).

    A parity arm may run a recipe known to be inaccurate (too few Newton-Schulz iterations): judging it
    is the gate's job, so the arm allows it (``DELTAINV_ALLOW_INACCURATE=1``) where a server would refuse.
    """
    env = {"DELTAINV_METHOD": method, "DELTAINV_GUARD": "1" if guard else "0", "DELTAINV_ALLOW_INACCURATE": "1"}
    if precision:
        env["DELTAINV_PRECISION"] = precision
    if options:
        env["DELTAINV_OPTIONS"] = options
    return env

