"""Compile time of deltainv's Triton kernels for an NVIDIA target, on any machine (no GPU needed).

The kernels are straight-line generated code; a large one costs seconds of ptxas per autotune config
at its first call (on an H100, 8 configs of ``mxr_refine`` at BT=64 took 59 s in fp32 and 186 s with
tf32x3). Triton's wheel ships ptxas, so the compile itself can be measured on a CPU box:

    python -m deltainv.bench.compile_time                         # every inversion kernel, sm_90
    python -m deltainv.bench.compile_time --kernels 'mxr_refine_bt64' --precisions tf32:tf32x3:tf32x3

Reports, per (kernel, warps, precisions): seconds, PTX size, and ptxas's own account of the cubin
(registers per thread, spill bytes) with the number of warp-wide MMA instructions each warp issues.
Those last ones are what a CPU box can say about speed: spills go to local memory, and an MMA count
that does not fall as warps are added means every warp repeats the same tile products. Writes JSON
and Markdown to ``bench/results/<host>/compile_time.*``. It asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
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


def ptxas_stats(log: str) -> dict[str, int]:
    """Registers per thread and spill bytes from a ``ptxas -v`` log (-1 where it says nothing)."""

    def grab(pattern: str) -> int:
        m = re.search(pattern, log)
        return int(m.group(1)) if m else -1

    return {"registers": grab(r"Used (\d+) registers"), "spill_stores": grab(r"(\d+) bytes spill stores"),
            "spill_loads": grab(r"(\d+) bytes spill loads")}


def compile_kernel(kernel, warps: int, prec: str, base: str, refine: str, arch: int = 90) -> dict[str, float]:
    """Compile ``kernel`` (an inversion kernel of kernels/tril/_generated.py) cold for ``sm_<arch>``.

    Returns seconds, PTX characters, ptxas's registers and spill bytes, and ``mma_per_warp``: the
    MMA instructions in the (per-thread, so per-warp) PTX.
    """
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _jit(kernel)
    params = list(inspect.signature(fn.fn).parameters)
    types = {"A": "*fp32", "Ai": "*bf16", "cu_seqlens": "*i32", "chunk_indices": "*i32", "T": "i32"}
    values = {"H": 4, "IS_VARLEN": False, "PREC": prec, "BASE_PREC": base, "REFINE_PREC": refine}
    signature = {p: types.get(p, "constexpr") for p in params}
    constexprs = {(params.index(k),): v for k, v in values.items() if k in params}
    log = io.StringIO()
    # Triton runs ptxas with -v and prints its log on request; keep it instead of running ptxas twice.
    with knobs.nvidia.scope(), contextlib.redirect_stdout(log):
        knobs.nvidia.dump_ptxas_log = True
        t0 = time.perf_counter()
        compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                                  target=GPUTarget("cuda", arch, 32), options={"num_warps": warps, "num_stages": 1})
        seconds = time.perf_counter() - t0
    ptx = compiled.asm["ptx"]
    mma = len(re.findall(r"^\s*(?:@%p\d+\s+)?w?mma\.", ptx, flags=re.MULTILINE))
    return {"seconds": seconds, "ptx_chars": len(ptx), "mma_per_warp": mma, **ptxas_stats(log.getvalue())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deltainv.bench.compile_time", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernels", default="", help="regular expression on kernel names (default: all)")
    ap.add_argument("--precisions", default=",".join(DEFAULT_PRECISIONS), help="merge:base:refine, comma list")
    ap.add_argument("--warps", default="", help="comma list of warp counts (default: each chunk size's autotune set)")
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
        warps = [int(w) for w in args.warps.split(",")] if args.warps else triton_tiles.WARPS[bt]
        for spec in args.precisions.split(","):
            prec, base, refine = spec.split(":")
            if name.startswith("substitution") and (base, refine) != (prec, prec):
                base = refine = prec  # substitution has no base or refine stage
            for w in warps:
                r = compile_kernel(getattr(_generated, name), w, prec, base, refine, args.arch)
                rows.append({"kernel": name, "bt": bt, "warps": w, "precisions": f"{prec}:{base}:{refine}",
                             "seconds": round(r["seconds"], 2), "ptx_kchars": round(r["ptx_chars"] / 1e3),
                             "registers": r["registers"], "spill_bytes": r["spill_stores"] + r["spill_loads"],
                             "mma_per_warp": r["mma_per_warp"]})
                print(f"[compile] {name:<26} warps {w}  {prec}:{base}:{refine:<8} {r['seconds']:6.1f} s  "
                      f"ptx {r['ptx_chars'] / 1e3:5.0f}k  regs {r['registers']:3d}  "
                      f"spill {r['spill_stores'] + r['spill_loads']:5d} B  mma/warp {r['mma_per_warp']}",
                      file=sys.stderr, flush=True)
    host = f"cpu-{platform.machine()}".lower().replace("_", "-")
    out = Path(args.out) if args.out else RESULTS / host
    out.mkdir(parents=True, exist_ok=True)
    meta = {"triton": triton.__version__, "arch": f"sm_{args.arch}", "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"), "autotune_warps": triton_tiles.WARPS}
    (out / "compile_time.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# Triton compile time of deltainv's inversion kernels for sm_{args.arch}", "",
             f"triton {meta['triton']}, compiled on this CPU (no GPU), {meta['date']}. One row per autotune config; "
             f"a first call compiles every config of its chunk size ({meta['autotune_warps']}).", "",
             "Registers and spill bytes (stores + loads, per thread) are ptxas's; MMA/warp counts the warp-wide "
             "MMA instructions in the PTX, so MMA/warp x warps is the tensor-core work of one program.", "",
             "| kernel | warps | merge:base:refine | seconds | PTX (k chars) | registers | spill bytes | MMA/warp |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['kernel']} | {r['warps']} | {r['precisions']} | {r['seconds']} | {r['ptx_kchars']} | "
              f"{r['registers']} | {r['spill_bytes']} | {r['mma_per_warp']} |" for r in rows]
    (out / "compile_time.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'compile_time.json'} and compile_time.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
