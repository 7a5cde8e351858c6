"""Load test for an OpenAI-compatible server: N completion requests at a fixed concurrency.

    python -m deltainv.bench.serve_load --url http://127.0.0.1:8000 --model NAME     # a running server
    python -m deltainv.bench.serve_load --launch                                    # deltainv serve, shipped model

Reports requests by status, lost requests (no answer at all), throughput and latency percentiles,
and writes JSON and Markdown to ``bench/results/<device>/serve_load.*``. It asserts nothing: the
tests check the counts, the numbers are for reading.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


async def _one(client, url: str, payload: dict, latencies: list[float], statuses: Counter, sem: asyncio.Semaphore,
               tokens: list[int]) -> None:
    async with sem:
        t0 = time.perf_counter()
        try:
            r = await client.post(url, json=payload)
        except Exception as e:  # a transport failure is a lost request
            statuses[f"lost:{type(e).__name__}"] += 1
            return
        latencies.append(time.perf_counter() - t0)
        statuses[str(r.status_code)] += 1
        if r.status_code == 200:
            tokens.append(r.json()["usage"]["completion_tokens"])


async def run_load(base_url: str, model: str, n: int = 400, concurrency: int = 32, max_tokens: int = 16,
                   prompt: str = "The quick brown fox", timeout: float = 600.0) -> dict:
    """Fire ``n`` greedy completions at ``concurrency``; return counts, throughput and latency percentiles."""
    import httpx

    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    tokens: list[int] = []
    statuses: Counter = Counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(
            _one(client, base_url + "/v1/completions",
                 {"model": model, "prompt": f"{prompt} {i}", "max_tokens": max_tokens, "temperature": 0},
                 latencies, statuses, sem, tokens)
            for i in range(n)))
        wall = time.perf_counter() - t0
    lat = sorted(latencies)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    return {
        "requests": n, "concurrency": concurrency, "max_tokens": max_tokens,
        "status": dict(statuses), "ok": statuses["200"],
        "lost": sum(v for k, v in statuses.items() if k.startswith("lost")),
        "server_errors": sum(v for k, v in statuses.items() if k.startswith("5")),
        "wall_s": round(wall, 3), "requests_per_s": round(statuses["200"] / wall, 2),
        "completion_tokens_per_s": round(sum(tokens) / wall, 1),
        "latency_s": {"p50": round(pct(0.50), 4), "p90": round(pct(0.90), 4), "p99": round(pct(0.99), 4),
                      "mean": round(statistics.fmean(lat), 4) if lat else None},
    }


def write(result: dict, meta: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "serve_load.json", out / "serve_load.md"]
    paths[0].write_text(json.dumps({"meta": meta, "result": result}, indent=1))
    lat = result["latency_s"]
    paths[1].write_text(
        f"# deltainv serve load test\n\n{meta['description']}\n\n"
        f"| requests | concurrency | ok | lost | 5xx | requests/s | tokens/s | p50 s | p90 s | p99 s |\n"
        f"|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {result['requests']} | {result['concurrency']} | {result['ok']} | {result['lost']} | "
        f"{result['server_errors']} | {result['requests_per_s']} | {result['completion_tokens_per_s']} | "
        f"{lat['p50']} | {lat['p90']} | {lat['p99']} |\n\nStatus counts: {result['status']}\n")
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deltainv.bench.serve_load", description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="server base URL (without /v1)")
    ap.add_argument("--model", help="model name to request")
    ap.add_argument("--launch", action="store_true", help="start `deltainv serve` on the shipped model first")
    ap.add_argument("-n", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--out", help="output folder (default bench/results/<device>)")
    args = ap.parse_args(argv)
    if not args.launch and not (args.url and args.model):
        ap.error("give --url and --model, or --launch")

    import contextlib

    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu-{platform.machine()}"
    with contextlib.ExitStack() as stack:
        url, model = args.url, args.model
        if args.launch:
            import tempfile

            from deltainv.eval.parity.gate import launched
            from deltainv.models import DEFAULT_MODEL

            logs = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            url = stack.enter_context(launched("hf", str(DEFAULT_MODEL), "mxr_refine", {}, [], logs / "serve.log"))
            url, model = url.removesuffix("/v1/completions"), DEFAULT_MODEL.name
        result = asyncio.run(run_load(url, model, args.n, args.concurrency, args.max_tokens))
    desc = (f"{args.n} greedy completions of {args.max_tokens} tokens at concurrency {args.concurrency} against "
            f"{'deltainv serve (hf engine, mxr_refine) on ' + model if args.launch else url} on {device}, "
            f"{time.strftime('%Y-%m-%d')}.")
    meta = {"device": device, "description": desc, "torch": torch.__version__, "python": platform.python_version()}
    slug = "".join(c if c.isalnum() else "-" for c in device.lower()).strip("-")
    for p in write(result, meta, Path(args.out) if args.out else RESULTS / slug):
        print(f"wrote {p}", file=sys.stderr)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
