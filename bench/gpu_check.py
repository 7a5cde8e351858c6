"""The one GPU check: everything a lent GPU should run, in one script that fits a session's device time.

    python bench/gpu_check.py                     # on the device: at most ~8 minutes on an H200
    python bench/gpu_check.py --toy               # on a CPU: the same steps at toy size (Triton interpreter)

Steps, each bounded in time; ``gpu_check.json`` is rewritten after every step, so a run cut short
keeps what it measured:

1. ``prepare``: install the wheels carried in ``.whl/`` (``pip download --no-deps fla-core==0.6.0 -d .whl``
   on the CPU box first) that the device lacks; record versions, the GPU, its clocks.
2. ``tests``: the CUDA kernel tests (``tests/kernels``), with a time limit; pass/fail counts.
3. ``solve_tril``: the paper's shapes (B32 H4, T 4096 and 16384, BT 32/64/128): fla ieee, fla tf32
   and every deltainv recipe (``tril_bench.TRIL_OURS``), and at BT=64 each recipe pinned to each
   ``(NC, warps)`` config. Per point: median and p20/p80 ms, GB/s, share of a measured copy,
   speed-up over fla ieee, error against float64 on fresh inputs, a NaN-poisoned output check,
   and the config that ran.
4. ``intra`` and ``forward``: the fused GDN intra kernel and the whole ``chunk_gated_delta_rule``
   forward at the Qwen3-Next shape (``tril_bench``'s grids, T 4k and 16k).

Results go to ``bench/results/<gpu>/`` (``gpu_check.json`` plus ``tril_bench.{json,md,png}``); commit
them with the command line. It asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))


class Report:
    """The JSON report, rewritten after every step."""

    def __init__(self, path: Path, meta: dict):
        self.path, self.data = path, {"meta": meta, "steps": []}
        path.parent.mkdir(parents=True, exist_ok=True)
        self.write()

    def step(self, name: str, **fields) -> None:
        self.data["steps"].append({"step": name, **fields})
        self.write()

    def write(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1, default=str))


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def prepare(wheels: Path) -> dict:
    """Install carried wheels whose distribution is missing; return what is installed."""
    import importlib.metadata as md

    installed = []
    for whl in sorted(wheels.glob("*.whl")) if wheels.is_dir() else []:
        dist = whl.name.split("-")[0].replace("_", "-")
        try:
            md.version(dist)
            continue
        except md.PackageNotFoundError:
            pass
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", str(whl)], check=True)
        installed.append(whl.name)
    versions = {}
    for dist in ("torch", "triton", "fla-core", "deltainv"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    smi = ""
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,power.limit",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"installed_wheels": installed, "versions": versions, "nvidia_smi": smi}


def run_tests(limit_s: int, toy: bool) -> dict:
    """The kernel tests on this device (CUDA, or the interpreter for --toy, a small slice)."""
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    args += ["tests/kernels/tril/test_triton.py", "-k", "fixed_length or not_a_multiple"] if toy else ["tests/kernels"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=limit_s)
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout"
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped)", out)}
    return {"returncode": rc, "seconds": round(time.perf_counter() - t0, 1), "counts": counts,
            "tail": out[-4000:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/gpu_check.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--toy", action="store_true", help="toy sizes on the CPU (Triton interpreter)")
    ap.add_argument("--out", help="output folder (default bench/results/<device>)")
    ap.add_argument("--wheels", default=str(ROOT / ".whl"), help="folder of carried wheels")
    ap.add_argument("--test-seconds", type=int, default=150, help="time limit of the test step")
    ap.add_argument("--skip", default="", help="comma list of steps to skip (tests, solve_tril, intra, forward)")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))

    prep = prepare(Path(args.wheels))
    import torch

    from deltainv.bench import tril_bench

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        if not args.toy:
            log("no CUDA device: use --toy (tiny shapes under the Triton interpreter)")
            return 2
        tril_bench._interpreter_for_toy_run()
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu-{platform.machine()} (Triton interpreter)"
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / slug
    meta = {"device_name": name, "toy": args.toy, "date": time.strftime("%Y-%m-%d %H:%M"),
            "command": "python bench/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "python": platform.python_version(), **prep}
    report = Report(out / "gpu_check.json", meta)
    log(f"{name}; versions {prep['versions']}; results -> {out}")

    if "tests" not in skip:
        log("step tests")
        report.step("tests", **run_tests(args.test_seconds, args.toy))

    import triton

    import fla

    bench = tril_bench._timer(device)
    copy_gbps = tril_bench.copy_bandwidth(device, bench, (1 << 28) if device == "cuda" else (1 << 22))
    report.step("copy", gbps=copy_gbps)
    bench_meta = {"device_name": name, "device": device, "torch": torch.__version__, "triton": triton.__version__,
                  "fla": getattr(fla, "__version__", "?"), "copy_gbps": copy_gbps, "toy": args.toy,
                  "timer": "triton.testing.do_bench median (p20/p80 in extra)" if device == "cuda"
                  else "wall-clock median of 3 (interpreter)", "python": platform.python_version(),
                  "date": time.strftime("%Y-%m-%d")}
    points: list = []

    def checkpoint(part: str):
        def done() -> None:
            tril_bench.write_results(points, bench_meta, out)
            report.step(part, points=len(points))
        return done

    from deltainv.kernels.tril.triton import method_configs

    if args.toy:
        tril = {"B1 T96 H2 BT32": (1, 96, 2, 32, 0), "B1 T150 H2 BT64 varlen3": (1, 150, 2, 64, 3)}
        g_tril, g_intra, g_fwd = tril, *tril_bench.grids(True)[1:]
        def pins(method):
            return method_configs(method, 64)[:1]
    else:
        g_tril = {f"paper B32 H4 T{T} BT{bt}": (32, T, 4, bt, 0) for bt in (32, 64, 128) for T in (4096, 16384)}
        _, g_intra, g_fwd = tril_bench.grids(False)
        g_intra = {k: v for k, v in g_intra.items() if "T32768" not in k}
        g_fwd = {k: v for k, v in g_fwd.items() if "T32768" not in k and "varlen" not in k}
        def pins(method):
            return method_configs(method, 64)
    if "solve_tril" not in skip:
        log("step solve_tril")
        for shape, point in g_tril.items():
            tril_bench.bench_solve_tril({shape: point}, device, bench, copy_gbps, points, log,
                                        checkpoint("solve_tril"), pins=pins if point[3] == 64 else (lambda m: ()))
    if "intra" not in skip:
        log("step intra")
        tril_bench.bench_intra(g_intra, device, bench, copy_gbps, points, log, checkpoint("intra"))
    if "forward" not in skip:
        log("step forward")
        tril_bench.bench_forward(g_fwd, device, bench, copy_gbps, points, log, checkpoint("forward"))
    report.step("done")
    log(f"wrote {out / 'gpu_check.json'} and tril_bench.*")
    return 0


if __name__ == "__main__":
    sys.exit(main())
