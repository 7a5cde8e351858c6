"""Compile time of deltainv's Triton kernels for an NVIDIA target, on any machine (no GPU needed).

The kernels are straight-line generated code; a large one costs seconds of ptxas per autotune config
at its first call (on an H100, 8 configs of ``mxr_refine`` at BT=64 took 59 s in fp32 and 186 s with
tf32x3). Triton's wheel ships ptxas, so the compile itself can be measured on a CPU box:

    python -m deltainv.bench.compile_time                         # every inversion kernel, sm_90
    python -m deltainv.bench.compile_time --kernels 'mxr_refine_bt64' --precisions tf32:tf32x3:tf32x3

Reports seconds and PTX size per (kernel, warps, precisions), times the autotune config count, and
writes JSON and Markdown to ``bench/results/<host>/compile_time.*``. It asserts nothing.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
#: (merge, base, refine) precisions: plain fp32 and the mixed GPU configuration.
DEFAULT_PRECISIONS = ("fp32:fp32:fp32", "tf32:tf32x3:tf32x3")


def _jit(kernel):
    import triton

    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        kernel = kernel.fn
    return kernel


def compile_kernel(kernel, warps: int, prec: str, base: str, refine: str, arch: int = 90) -> tuple[float, int]:
    """Seconds to compile ``kernel`` (an inversion kernel of kernels/tril/_generated.py) and its PTX size."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _jit(kernel)
    params = list(inspect.signature(fn.fn).parameters)
    types = {"A": "*fp32", "Ai": "*bf16", "cu_seqlens": "*i32", "chunk_indices": "*i32", "T": "i32"}
    values = {"H": 4, "IS_VARLEN": False, "PREC": prec, "BASE_PREC": base, "REFINE_PREC": refine}
    signature = {p: types.get(p, "constexpr") for p in params}
    constexprs = {(params.index(k),): v for k, v in values.items() if k in params}
    t0 = time.perf_counter()
    compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", arch, 32), options={"num_warps": warps, "num_stages": 1})
    return time.perf_counter() - t0, len(compiled.asm["ptx"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deltainv.bench.compile_time", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernels", default="", help="regular expression on kernel names (default: all)")
    ap.add_argument("--precisions", default=",".join(DEFAULT_PRECISIONS), help="merge:base:refine, comma list")
    ap.add_argument("--arch", type=int, default=90, help="CUDA compute capability x10 (default 90, Hopper)")
    ap.add_argument("--out", help="output folder (default bench/results/<host>)")
    args = ap.parse_args(argv)

    # A cold compile every time: Triton's on-disk cache would otherwise answer in milliseconds.
    cache = tempfile.mkdtemp(prefix="deltainv-compile-time-")
    os.environ["TRITON_CACHE_DIR"] = cache
    os.environ["TRITON_ALWAYS_COMPILE"] = "1"
    try:
        return _run(args)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _run(args) -> int:
    import triton

    from deltainv.kernels import triton_tiles
    from deltainv.kernels.tril import _generated

    pick = re.compile(args.kernels)
    names = [n for n in dir(_generated) if n.endswith("_kernel") and pick.search(n)]
    rows = []
    for name in names:
        bt = int(re.search(r"_bt(\d+)_", name).group(1))
        warps = triton_tiles.WARPS[bt]
        for spec in args.precisions.split(","):
            prec, base, refine = spec.split(":")
            if name.startswith("substitution") and (base, refine) != (prec, prec):
                base = refine = prec  # substitution has no base or refine stage
            secs = []
            for w in warps:
                s, ptx = compile_kernel(getattr(_generated, name), w, prec, base, refine, args.arch)
                secs.append(s)
                rows.append({"kernel": name, "bt": bt, "warps": w, "precisions": f"{prec}:{base}:{refine}",
                             "seconds": round(s, 2), "ptx_kchars": round(ptx / 1e3)})
                print(f"[compile] {name:<26} warps {w}  {prec}:{base}:{refine:<8} {s:6.1f} s  "
                      f"ptx {ptx / 1e3:5.0f}k", file=sys.stderr, flush=True)
    host = f"cpu-{platform.machine()}".lower().replace("_", "-")
    out = Path(args.out) if args.out else RESULTS / host
    out.mkdir(parents=True, exist_ok=True)
    meta = {"triton": triton.__version__, "arch": f"sm_{args.arch}", "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"), "autotune_warps": triton_tiles.WARPS}
    (out / "compile_time.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# Triton compile time of deltainv's inversion kernels for sm_{args.arch}", "",
             f"triton {meta['triton']}, compiled on this CPU (no GPU), {meta['date']}. One row per autotune config; "
             f"a first call compiles every config of its chunk size ({meta['autotune_warps']}).", "",
             "| kernel | warps | merge:base:refine | seconds | PTX (k chars) |", "|---|---|---|---|---|"]
    lines += [f"| {r['kernel']} | {r['warps']} | {r['precisions']} | {r['seconds']} | {r['ptx_kchars']} |"
              for r in rows]
    (out / "compile_time.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'compile_time.json'} and compile_time.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
