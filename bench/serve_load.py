"""Load test for an OpenAI-compatible server: N completion requests at a fixed concurrency.

    python -m deltainv.bench.serve_load --url http://127.0.0.1:8000 --model NAME     # a running server
    python -m deltainv.bench.serve_load --launch                                    # deltainv serve, shipped model

Reports requests by status, lost requests (no answer at all), throughput and latency percentiles,
and whether the server's ``/metrics`` counted exactly the requests sent, and writes JSON and
Markdown to ``bench/results/<device>/serve_load.*``. ``--soak SECONDS`` instead keeps
``--concurrency`` requests in flight for that long and reports, per minute, p50/p99 latency and the
server's resident memory (``process_resident_memory_bytes``) to ``serve_soak.*``. It asserts
nothing: the tests check the counts, the numbers are for reading.
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


def metric_total(base_url: str, name: str, labels: str = "") -> float:
    """Sum of ``name``'s samples whose labels contain ``labels`` in the server's /metrics."""
    import re

    import httpx

    text = httpx.get(base_url + "/metrics", timeout=30).text
    return sum(float(m.group(2)) for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.M)
               if labels in (m.group(1) or ""))


async def run_soak(base_url: str, model: str, seconds: float, concurrency: int = 8, max_tokens: int = 16,
                   prompt: str = "The quick brown fox", window: float = 60.0) -> dict:
    """``concurrency`` clients in a closed loop for ``seconds``; per-window latency and server RSS."""
    import httpx

    t_end = time.perf_counter() + seconds
    windows: list[dict] = []
    current: list[float] = []
    statuses: Counter = Counter()
    sent = [0]
    before = metric_total(base_url, "deltainv_http_requests_total", 'endpoint="/v1/completions"')

    async def client(c, k):
        i = 0
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            sent[0] += 1
            try:
                r = await c.post(base_url + "/v1/completions", json={"model": model, "prompt": f"{prompt} {k} {i}",
                                                                     "max_tokens": max_tokens, "temperature": 0})
                statuses[str(r.status_code)] += 1
                current.append(time.perf_counter() - t0)
            except Exception as e:
                statuses[f"lost:{type(e).__name__}"] += 1
            i += 1

    async def sampler(c):
        start = time.perf_counter()
        while time.perf_counter() < t_end:
            await asyncio.sleep(min(window, max(0.0, t_end - time.perf_counter())))
            lat = sorted(current)
            current.clear()
            rss = float((await asyncio.to_thread(metric_total, base_url, "process_resident_memory_bytes")))
            windows.append({"t_s": round(time.perf_counter() - start), "requests": len(lat),
                            "p50_s": round(lat[len(lat) // 2], 4) if lat else None,
                            "p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 4) if lat else None,
                            "rss_mb": round(rss / 2**20, 1)})
            print(f"soak: {windows[-1]}", file=sys.stderr, flush=True)

    rss0 = metric_total(base_url, "process_resident_memory_bytes")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as c:
        await asyncio.gather(sampler(c), *(client(c, k) for k in range(concurrency)))
    counted = metric_total(base_url, "deltainv_http_requests_total", 'endpoint="/v1/completions"') - before
    p99 = [w["p99_s"] for w in windows if w["p99_s"] is not None]
    return {"seconds": seconds, "concurrency": concurrency, "max_tokens": max_tokens, "sent": sent[0],
            "status": dict(statuses), "lost": sum(v for k, v in statuses.items() if k.startswith("lost")),
            "server_errors": sum(v for k, v in statuses.items() if k.startswith("5")),
            "metrics_counted": int(counted), "rss_start_mb": round(rss0 / 2**20, 1),
            "rss_growth_pct": round(100 * (windows[-1]["rss_mb"] * 2**20 - rss0) / rss0, 2) if windows else None,
            "p99_first_last_s": [p99[0], p99[-1]] if p99 else None, "windows": windows}


def write_soak(result: dict, meta: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "serve_soak.json", out / "serve_soak.md"]
    paths[0].write_text(json.dumps({"meta": meta, "result": result}, indent=1))
    rows = "".join(f"| {w['t_s']} | {w['requests']} | {w['p50_s']} | {w['p99_s']} | {w['rss_mb']} |\n"
                   for w in result["windows"])
    paths[1].write_text(
        f"# deltainv serve soak test\n\n{meta['description']}\n\n"
        f"Sent {result['sent']} requests; statuses {result['status']}; lost {result['lost']}; 5xx "
        f"{result['server_errors']}; the server's /metrics counted {result['metrics_counted']} "
        f"/v1/completions requests. Resident memory {result['rss_start_mb']} MB at the start, growth "
        f"{result['rss_growth_pct']}% by the end.\n\n"
        f"| t (s) | requests in window | p50 s | p99 s | server RSS MB |\n|---|---|---|---|---|\n{rows}")
    return paths


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
        f"{lat['p50']} | {lat['p90']} | {lat['p99']} |\n\nStatus counts: {result['status']}. The server's "
        f"/metrics counted {result.get('metrics_counted')} /v1/completions requests.\n")
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
    ap.add_argument("--soak", type=float, default=None, metavar="SECONDS",
                    help="closed-loop soak for this long instead of -n requests (writes serve_soak.*)")
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
        if args.soak:
            result = asyncio.run(run_soak(url, model, args.soak, args.concurrency, args.max_tokens))
        else:
            before = metric_total(url, "deltainv_http_requests_total", 'endpoint="/v1/completions"')
            result = asyncio.run(run_load(url, model, args.n, args.concurrency, args.max_tokens))
            result["metrics_counted"] = int(
                metric_total(url, "deltainv_http_requests_total", 'endpoint="/v1/completions"') - before)
    what = (f"a {args.soak:g} s closed-loop soak" if args.soak else f"{args.n} greedy completions")
    desc = (f"{what} of {args.max_tokens} tokens at concurrency {args.concurrency} against "
            f"{'deltainv serve (hf engine) on ' + model if args.launch else url} on {device}, "
            f"{time.strftime('%Y-%m-%d')}.")
    meta = {"device": device, "description": desc, "torch": torch.__version__, "python": platform.python_version()}
    slug = "".join(c if c.isalnum() else "-" for c in device.lower()).strip("-")
    writer = write_soak if args.soak else write
    for p in writer(result, meta, Path(args.out) if args.out else RESULTS / slug):
        print(f"wrote {p}", file=sys.stderr)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
