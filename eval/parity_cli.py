"""``deltainv parity``: the accuracy-parity gate (see :mod:`deltainv.eval.parity.gate`)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

DEFAULT_TASKS = "deltainv_mqar_mc,deltainv_kvlast_mc,deltainv_copy_mc,deltainv_arith_mc"


def register(sub: argparse._SubParsersAction) -> None:
    from deltainv.kernels import METHODS, PRECISIONS

    p = sub.add_parser(
        "parity",
        help="lm-eval accuracy parity: engine kernel (baseline) vs deltainv (candidate); exit 0 pass, 1 fail, "
             "2 inconclusive, 3 a run failed",
        description=(
            "Run lm-eval on a baseline and a candidate, pair items by doc_id, and decide non-inferiority against a "
            "margin with paired confidence bounds (exit 0 pass, 1 fail, 2 inconclusive or bad arguments, 3 a run "
            "failed). Arms: the same local model "
            "in-process with deltainv off/on (--model), two running servers (--baseline-url/--candidate-url), or "
            "two servers this command launches with deltainv serve (--launch ENGINE)."
        ),
    )
    arms = p.add_argument_group("arms")
    arms.add_argument("--model", help="local model directory (in-process transformers, or what --launch serves)")
    arms.add_argument("--candidate", default="mxr_refine", choices=["off", *METHODS],
                      help="candidate's inversion method (default mxr_refine; off runs the engine's own kernel, "
                           "an A/A check)")
    arms.add_argument("--candidate-precision", choices=PRECISIONS, default=None)
    arms.add_argument("--candidate-options", default=None, help="method options, e.g. refine_precision=tf32x3")
    arms.add_argument("--baseline", default="off", choices=["off", *METHODS],
                      help="baseline's method; off (default) is the engine's own kernel")
    arms.add_argument("--baseline-precision", choices=PRECISIONS, default=None)
    arms.add_argument("--baseline-options", default=None)
    arms.add_argument("--guard", choices=("on", "off"), default="on",
                      help="deltainv's non-finite guard in the deltainv arms (off to see a method fail)")
    arms.add_argument("--baseline-url", help="baseline server's /v1/completions URL")
    arms.add_argument("--candidate-url", help="candidate server's /v1/completions URL")
    arms.add_argument("--model-name", help="model name the servers serve (with --*-url)")
    arms.add_argument("--tokenizer", help="local tokenizer for the servers (default: their /tokenize endpoints)")
    arms.add_argument("--launch", choices=("hf", "vllm", "sglang"), help="start both servers with deltainv serve")
    arms.add_argument("--engine-args", default="", help="extra arguments for the launched engines (one string)")
    t = p.add_argument_group("tasks and decision")
    t.add_argument("--tasks", default=DEFAULT_TASKS, help=f"comma list (default {DEFAULT_TASKS})")
    t.add_argument("--include-path", default=None, help="folder of lm-eval task YAMLs (default: deltainv's eval/tasks)")
    t.add_argument("--limit", type=int, default=None, help="first N items of each task")
    t.add_argument("--margin", type=float, default=1.0, help="non-inferiority margin in accuracy points (default 1)")
    t.add_argument("--alpha", type=float, default=0.05)
    t.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--batch-size", type=int, default=16, help="lm-eval batch size (in-process)")
    t.add_argument("--num-concurrent", type=int, default=4, help="concurrent requests per server")
    p.add_argument("--out", default=None, help="folder for parity.json, parity.md and parity.png")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shlex

    from .parity.gate import EXIT, ParityConfig, arm_env, format_table, launched, run_parity, write_outputs

    if not 0 < args.margin < 100:
        print("deltainv parity: --margin is in accuracy points and must be in (0, 100)", file=sys.stderr)
        return 2
    urls = (args.baseline_url, args.candidate_url)
    if any(urls) and not all(urls):
        print("deltainv parity: give both --baseline-url and --candidate-url", file=sys.stderr)
        return 2
    if all(urls) and not args.model_name:
        print("deltainv parity: --model-name is required with --baseline-url/--candidate-url", file=sys.stderr)
        return 2
    if not all(urls) and not args.model:
        print("deltainv parity: give --model (in-process or --launch) or both server URLs", file=sys.stderr)
        return 2
    if args.model and Path(args.model).exists():
        # the arms run in their own working folders: a relative model folder would read as a hub id there
        args.model = str(Path(args.model).resolve())
    if args.tokenizer and Path(args.tokenizer).exists():
        args.tokenizer = str(Path(args.tokenizer).resolve())
    config = ParityConfig(tasks=[x for x in args.tasks.split(",") if x], limit=args.limit, margin=args.margin / 100,
                          alpha=args.alpha, iters=args.bootstrap, seed=args.seed, batch_size=args.batch_size,
                          num_concurrent=args.num_concurrent)
    if args.include_path:
        config.include_path = args.include_path
    guard = args.guard == "on"
    base_env = arm_env(args.baseline, args.baseline_precision, args.baseline_options, guard)
    cand_env = arm_env(args.candidate, args.candidate_precision, args.candidate_options, guard)

    def endpoint(url: str, name: str) -> dict:
        return {"base_url": url, "model_name": name, "tokenizer": args.tokenizer}

    try:
        if all(urls):
            report = run_parity(endpoint(args.baseline_url, args.model_name),
                                endpoint(args.candidate_url, args.model_name), config)
        elif args.launch:
            extra = shlex.split(args.engine_args)
            name = Path(args.model).name
            if args.launch != "hf":
                # vLLM and SGLang serve a model under the path they were given, and have no tokenizer
                # endpoint lm-eval can use by default: name it, and tokenize with the local model folder
                if "--served-model-name" in extra:
                    name = extra[extra.index("--served-model-name") + 1]
                else:
                    extra += ["--served-model-name", name]
                args.tokenizer = args.tokenizer or args.model
            with tempfile.TemporaryDirectory(prefix="deltainv-parity-logs-") as logs:
                with launched(args.launch, args.model, args.baseline, base_env, extra, Path(logs) / "baseline.log") as b, \
                        launched(args.launch, args.model, args.candidate, cand_env, extra, Path(logs) / "cand.log") as c:
                    report = run_parity(endpoint(b, name), endpoint(c, name), config)
        else:
            report = run_parity({"model": args.model, "env": base_env}, {"model": args.model, "env": cand_env}, config)
    except (RuntimeError, ValueError, TimeoutError) as e:
        print(f"deltainv parity: {e}", file=sys.stderr)
        return 3
    print(format_table(report))
    if args.out:
        for path in write_outputs(report, args.out):
            print(f"wrote {path}", file=sys.stderr)
    return EXIT[report.verdict]
