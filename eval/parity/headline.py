"""The paper's headline accuracy result, reproduced offline on the shipped model.

One baseline arm (the engine's own kernel) and one arm per candidate, each in its own process, all
on the same items; every candidate is compared with the baseline by the parity gate's statistics:

- the stable methods (``substitution``, ``mxr``, ``mxr_refine``) should pass;
- ``product`` at ``fp16`` with deltainv's guard off should fail (the paper: accuracy collapses);
- ``newton_schulz`` with too few iterations should lose accuracy gradually, less with each added
  iteration (the paper's Fig. 3).

    python -m deltainv.eval.parity.headline                        # -> eval/reports/parity/
    python -m deltainv.eval.parity.headline --limit 200 --out /tmp/headline   # quicker

Writes ``headline.json``, ``headline.md`` and ``headline.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .gate import EXIT, ParityConfig, arm_env, compare, run_arm

REPORTS = Path(__file__).resolve().parents[1] / "reports" / "parity"
TASKS = "deltainv_mqar_mc,deltainv_kvlast_mc,deltainv_copy_mc,deltainv_arith_mc"
NS_ITERS = (4, 8, 12, 16, 24)


def candidates(ns_iters=NS_ITERS) -> list[tuple[str, dict[str, str]]]:
    """(label, DELTAINV_* environment) of every candidate arm, in report order."""
    arms = [(m, arm_env(m, None, None, True)) for m in ("substitution", "mxr", "mxr_refine")]
    arms.append(("product fp16, guard off", arm_env("product", "fp16", None, False)))
    arms += [(f"newton_schulz {k} iterations", arm_env("newton_schulz", None, f"iters={k}", False)) for k in ns_iters]
    return arms


DEFAULT_BASELINE = "the engine's own kernel, transformers' PyTorch GDN/KDA"
#: The RWKV-7 headline's baseline: deltainv's model with the fp32 triangular solve (RWKV-7 has no
#: engine kernel on a CPU; fla's own kernels need a GPU).
RWKV7_BASELINE = ("torch", "fp32 triangular solve (torch.linalg.solve_triangular)")


def rwkv7_arms(model: str, workdir: Path) -> list[tuple[str, dict]]:
    """(label, arm spec) of the RWKV-7 headline: the stable methods, then fla 0.6.0's fp16 recipe
    (emulated; a copy of the model folder whose config sets ``deltainv_inverse: fla_fp16``)."""
    arms = [(m, {"model": model, "env": arm_env(m, None, None, True)}) for m in ("substitution", "mxr", "mxr_refine")]
    fla_dir = workdir / (Path(model).name + "-fla-fp16")
    fla_dir.mkdir(parents=True, exist_ok=True)
    for f in Path(model).iterdir():
        if f.is_file() and f.name != "config.json" and not (fla_dir / f.name).exists():
            (fla_dir / f.name).symlink_to(f.resolve())
    cfg = json.loads((Path(model) / "config.json").read_text())
    (fla_dir / "config.json").write_text(json.dumps({**cfg, "deltainv_inverse": "fla_fp16"}, indent=1))
    arms.append(("fla 0.6.0 fp16 product16 + fp16 merges (emulated)",
                 {"model": str(fla_dir), "env": arm_env("off", None, None, True)}))
    return arms


def run(model: str, config: ParityConfig, ns_iters=NS_ITERS, log=sys.stderr, arms=None,
        baseline_env=None, baseline_desc=None) -> dict:
    """The headline: one baseline arm (default: the engine's own kernel) against every candidate arm
    (default: :func:`candidates`; ``arms`` gives ``(label, spec)`` pairs instead)."""
    t0 = time.perf_counter()
    base = run_arm({"model": model, "env": baseline_env or arm_env("off", None, None, True)}, config, "baseline", log)
    rows = []
    if arms is None:
        arms = [(label, {"model": model, "env": env}) for label, env in candidates(ns_iters)]
    for label, spec in arms:
        env = spec["env"]
        cand = run_arm(spec, config, label, log)
        tasks, verdict = compare(base, cand, config)
        rows.append({"candidate": label, "env": env, "verdict": verdict, "exit_code": EXIT[verdict],
                     "seconds": cand["seconds"], "tasks": tasks})
        accs = ", ".join(f"{t.removeprefix('deltainv_')} {100 * r['candidate_acc']:.1f}" for t, r in tasks.items())
        print(f"[headline] {label}: {verdict.upper()} ({accs})", file=log, flush=True)
    baseline_acc = {t: r["baseline_acc"] for t, r in rows[0]["tasks"].items()}
    return {"model": model, "config": config.__dict__, "baseline_acc": baseline_acc, "candidates": rows,
            "baseline_desc": baseline_desc or DEFAULT_BASELINE,
            "seconds": round(time.perf_counter() - t0, 1), "date": time.strftime("%Y-%m-%d")}


def markdown(report: dict) -> str:
    tasks = list(report["baseline_acc"])
    short = [t.removeprefix("deltainv_") for t in tasks]
    cfg = report["config"]
    name = Path(report["model"]).name
    title = report.get("title", f"Accuracy parity: the paper's headline result on `{name}`")
    lines = [f"# {title}", "",
             f"Model `{name}`; lm-eval tasks {', '.join(f'`{t}`' for t in tasks)}; "
             f"{cfg['limit'] or 'all'} items per task; margin {100 * cfg['margin']:g} pt, alpha {cfg['alpha']}. "
             f"Accuracy in %, delta in points against the baseline ({report.get('baseline_desc', DEFAULT_BASELINE)}), "
             "then the verdict of `deltainv parity` for that candidate.", "",
             "| candidate | " + " | ".join(short) + " | max abs. loglik drift | argmax flips | verdict |",
             "|---|" + "---|" * (len(tasks) + 3),
             "| baseline | " + " | ".join(f"{100 * report['baseline_acc'][t]:.1f}" for t in tasks) + " | - | - | - |"]
    for row in report["candidates"]:
        cells = []
        for t in tasks:
            r = row["tasks"][t]
            cells.append(f"{100 * r['candidate_acc']:.1f} ({100 * r['delta']:+.1f})")
        drift = max(r.get("drift", {}).get("max_abs", 0.0) for r in row["tasks"].values())
        flips = sum(r.get("drift", {}).get("argmax_flips", 0) for r in row["tasks"].values())
        lines.append(f"| {row['candidate']} | " + " | ".join(cells) + f" | {drift:.1e} | {flips} | "
                     f"**{row['verdict'].upper()}** |")
    lines += ["", "Reasons:", ""]
    for row in report["candidates"]:
        for t, r in row["tasks"].items():
            if r["verdict"] != "pass":
                lines.append(f"- {row['candidate']}, `{t}`: {r['reason']}")
    ns = [r["candidate"].split()[1] for r in report["candidates"] if r["candidate"].startswith("newton_schulz")]
    cmd = "python -m deltainv.eval.parity.headline" + (" --rwkv7" if report.get("rwkv7") else "")
    if Path(report["model"]).name != "qwen3_next_tiny":
        cmd += f" --model models/{Path(report['model']).name}"
    if sorted(tasks) != sorted(TASKS.split(",")):
        cmd += f" --tasks {','.join(tasks)}"
    cmd += f" --limit {cfg['limit']}" if cfg["limit"] else ""
    cmd += f" --margin {100 * cfg['margin']:g}" if abs(cfg["margin"] - 0.01) > 1e-12 else ""
    if not report.get("rwkv7"):
        cmd += f" --ns-iters {','.join(ns)}" if ns else ' --ns-iters ""'
    if Path(report["model"]).name != "qwen3_next_tiny":
        cmd += f" --out eval/reports/parity/{Path(report['model']).name}"
    lines += ["", f"Total wall time {report['seconds']:.0f} s on the CPU ({report['date']}). Reproduce: `{cmd}`.", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(report["baseline_acc"])
    rows = report["candidates"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 6.5), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / (len(rows) + 1)
    xs = range(len(tasks))
    ax.bar([x for x in xs], [100 * report["baseline_acc"][t] for t in tasks], width, label="baseline", color="black")
    for i, row in enumerate(rows, start=1):
        ax.bar([x + i * width for x in xs], [100 * row["tasks"][t]["candidate_acc"] for t in tasks], width,
               label=f"{row['candidate']} ({row['verdict']})")
    ax.set_xticks([x + 0.4 for x in xs], [t.removeprefix("deltainv_") for t in tasks])
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy per task and candidate")
    ax.legend(fontsize=6, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    ns = [r for r in rows if r["candidate"].startswith("newton_schulz")]
    if ns:
        iters = [int(r["candidate"].split()[1]) for r in ns]
        for t in tasks:
            ax2.plot(iters, [100 * r["tasks"][t]["delta"] for r in ns], marker="o", label=t.removeprefix("deltainv_"))
        ax2.axhline(-100 * report["config"]["margin"], color="red", ls="--", lw=0.8, label="margin")
        ax2.set_xlabel("Newton-Schulz iterations")
        ax2.set_ylabel("accuracy change vs baseline (points)")
        ax2.set_title("under-converged Newton-Schulz: graded loss")
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from deltainv.models import DEFAULT_MODEL

    ap = argparse.ArgumentParser(prog="python -m deltainv.eval.parity.headline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--tasks", default=TASKS)
    ap.add_argument("--limit", type=int, default=None, help="items per task (default: all)")
    ap.add_argument("--ns-iters", default=",".join(map(str, NS_ITERS)))
    ap.add_argument("--margin", type=float, default=1.0, help="points")
    ap.add_argument("--out", default=str(REPORTS))
    ap.add_argument("--rwkv7", action="store_true",
                    help="the RWKV-7 headline (--model an RWKV-7 folder): baseline the fp32 triangular solve, "
                         "candidates the stable methods and fla 0.6.0's fp16 recipe")
    args = ap.parse_args(argv)
    config = ParityConfig(tasks=args.tasks.split(","), limit=args.limit, margin=args.margin / 100)
    args.model = str(Path(args.model).resolve())  # the arms run in temporary directories
    if args.rwkv7:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="deltainv-headline-rwkv7-") as tmp:
            report = run(args.model, config, arms=rwkv7_arms(args.model, Path(tmp)),
                         baseline_env=arm_env(RWKV7_BASELINE[0], "fp32", None, True), baseline_desc=RWKV7_BASELINE[1])
        report["rwkv7"] = True
        report["title"] = ("Accuracy parity on the shipped RWKV-7: deltainv's stable methods and fla 0.6.0's fp16 "
                           "recipe against the fp32 triangular solve")
    else:
        report = run(args.model, config, tuple(int(x) for x in args.ns_iters.split(",") if x.strip()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "headline.json").write_text(json.dumps(report, indent=1))
    (out / "headline.md").write_text(markdown(report))
    plot(report, out / "headline.png")
    for name in ("headline.json", "headline.md", "headline.png"):
        print(f"wrote {out / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
