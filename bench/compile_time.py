"""What a CPU box can say about the Triton kernels' speed: compile each config for an NVIDIA target and
count its SASS. No GPU is needed (Triton's wheel ships ptxas and cuobjdump).

    python -m deltainv.bench.compile_time                          # every kernel config, sm_90
    python -m deltainv.bench.compile_time --kernels solve_tril --bt 64 --methods blocked

Per config (kernel, method, BT, NC chunks per program, warps, precisions) it records the cold compile
time, ptxas's registers and spill bytes, and from the SASS the MMA and total warp-instructions per
chunk (per chunk and value head for the fused GDN kernel). Straight-line code is counted statically;
an instruction inside a loop counts once per trip (the fused GDN kernel loops over the value heads
of a key head, and inside that over the K slices of ``K K^T``). ``predicted_us`` is the issue-bound
model of ``../shared/notes/kernel-design.md`` (132 SMs x 4 warp-instructions per cycle at 1.75 GHz, which
predicted the H100 time of the one-chunk-per-program ``mxr`` within 5%) at B32 H4 T4096, next to
``floor_us``, the memory floor at 2.95 TB/s (H100 copy bandwidth). Writes ``compile_time.{json,md}``
under ``bench/results/<host>/``; rows of the default recipe carry ``default: true``. It asserts nothing.
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
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

#: The model's machine (H100 SXM) and shape (the paper's: B32 H4 T4096).
SMS, ISSUE_PER_CYCLE, CLOCK_HZ, COPY_BPS = 132, 4, 1.75e9, 2.95e12
SHAPE = {"B": 32, "H": 4, "T": 4096}
#: The fused GDN kernel's shape: Qwen3-Next's heads (16 key, 32 value, d 128), B1 T16k.
GDN_SHAPE = {"B": 1, "T": 16384, "H": 16, "HV": 32, "K": 128, "V": 128}
#: The fused KDA kernel's shape: Kimi-Linear-48B's heads (32, d 128), B1 T16k.
KDA_SHAPE = {"B": 1, "T": 16384, "H": 32, "HV": 32, "K": 128, "V": 128}
#: The fused DPLR kernel's shape: RWKV-7 1.5B (32 heads of size 64), B1 T16k.
DPLR_SHAPE = {"B": 1, "T": 16384, "H": 32, "K": 64, "V": 64}
#: The fused intra kernels (counted per chunk and value head).
FUSED = ("gdn_intra", "kda_intra", "dplr_intra")


@dataclass(frozen=True)
class Config:
    kernel: str        # "solve_tril", "gdn_intra", "kda_intra" or "dplr_intra"
    method: str
    bt: int
    nc: int
    warps: int
    precisions: str    # "merge:base:refine" (":wu" appended for gdn_intra, ":wu:a" for kda_intra and dplr_intra)


def gpu_recipes() -> dict[str, str]:
    """Per method, the recipe a GPU would run (``merge:base:refine``); the default recipe's method
    gets the default precision."""
    from deltainv.kernels.registry import DEFAULT_METHOD, DEFAULT_PRECISION

    recipes = {"substitution": "fp32:fp32:fp32", "blocked": "tf32x3:tf32x3:tf32x3",
               "mxr": "tf32x3:tf32x3:tf32x3", "mxr_refine": "tf32:tf32x3:tf32x3"}
    p = DEFAULT_PRECISION
    recipes[DEFAULT_METHOD] = f"{p}:{p}:{p}"
    return recipes


def is_default(c: Config) -> bool:
    """The default recipe's configs (for the fused kernels, with the default W/U precision of bf16 models;
    for ``kda_intra`` also the default precision of the decayed ``Akk``/``Aqk`` products)."""
    import torch

    from deltainv.kernels.chunking import default_wu_precision
    from deltainv.kernels.dplr.triton import DEFAULT_A_PRECISION as DPLR_A_PRECISION
    from deltainv.kernels.kda.triton import DEFAULT_A_PRECISION
    from deltainv.kernels.registry import DEFAULT_METHOD, DEFAULT_PRECISION

    p = DEFAULT_PRECISION
    a = {"kda_intra": f":{DEFAULT_A_PRECISION}", "dplr_intra": f":{DPLR_A_PRECISION}"}.get(c.kernel, "")
    want = f"{p}:{p}:{p}" + (f":{default_wu_precision(torch.bfloat16)}" if c.kernel in FUSED else "") + a
    return c.method == DEFAULT_METHOD and c.precisions == want


def configs(kernels: str, bts: list[int], methods: list[str]) -> list[Config]:
    """The configs to compile, most telling first (a run cut short keeps those): BT=64 (what the engines
    use), then 32, 16 and 128; the default method first; the fused GDN and KDA kernels after solve_tril.

    ``kda_intra``: each W/U precision with the decayed ``Akk``/``Aqk`` products in tf32 (fla's, the
    default for bf16 models) and in tf32x3 (the fp32 reference's numbers); ``dplr_intra``: its four ``A``
    products in tf32x3 (the default: they feed the inverse) and in tf32 (fla's safe-gate kernel's)."""
    import torch

    from deltainv.kernels.chunking import FULL_WU_PRECISION, default_wu_precision
    from deltainv.kernels.dplr.triton import DEFAULT_A_PRECISION as DPLR_A_PRECISION
    from deltainv.kernels.dplr.triton import MAX_CHUNK as DPLR_MAX_CHUNK
    from deltainv.kernels.gdn.triton import MAX_CHUNK
    from deltainv.kernels.kda.triton import DEFAULT_A_PRECISION
    from deltainv.kernels.kda.triton import MAX_CHUNK as KDA_MAX_CHUNK
    from deltainv.kernels.registry import DEFAULT_METHOD
    from deltainv.kernels.tril.triton import TRITON_METHODS, method_configs

    order = {64: 0, 32: 1, 16: 2, 128: 3}
    methods = sorted((m for m in methods if m in TRITON_METHODS), key=lambda m: m != DEFAULT_METHOD)
    out = []
    for kernel in ("solve_tril",) + FUSED:
        if kernel not in kernels.split(","):
            continue
        for bt in sorted(bts, key=lambda b: order.get(b, 9)):
            if bt > {"gdn_intra": MAX_CHUNK, "kda_intra": KDA_MAX_CHUNK, "dplr_intra": DPLR_MAX_CHUNK}.get(kernel, bt):
                continue
            for m in methods:
                precs = [gpu_recipes()[m]]
                if kernel in FUSED:  # W/U as bf16 models get them (fla's products); the default's also in tf32x3
                    wus = dict.fromkeys([default_wu_precision(torch.bfloat16)]
                                        + ([FULL_WU_PRECISION] if m == DEFAULT_METHOD else []))
                    precs = [f"{precs[0]}:{wu}" for wu in wus]
                if kernel == "kda_intra":
                    precs = [f"{p}:{a}" for p in precs for a in dict.fromkeys([DEFAULT_A_PRECISION, "tf32x3"])]
                if kernel == "dplr_intra":
                    precs = [f"{p}:{a}" for p in precs for a in dict.fromkeys([DPLR_A_PRECISION, "tf32"])]
                out += [Config(kernel, m, bt, nc, w, prec) for prec in precs for nc, w in method_configs(m, bt)]
    return out


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


_SASS_LINE = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)[^;]*;")


def sass_counts(sass: str, trips: int | tuple[int, ...] = 1) -> dict[str, int]:
    """Warp-instructions of one warp from ``cuobjdump -sass`` text: ``total`` and ``mma`` (HMMA/HGMMA).

    The loops in these kernels are runtime loops; a backward branch closes each. ``trips`` gives their
    iteration counts by depth, outermost first (``(2, 8)``: 2 trips of the outer loop, 8 of a loop
    inside it per outer trip), or one count for loops at any depth. An instruction counts the product
    of the trips of the loops around it; everything else once. ptxas may unroll a short inner loop
    entirely; it then counts as straight-line code of its outer loop, which is what runs. A loop
    deeper than ``trips`` reaches is an error: its count would be a guess.
    """
    instrs = []
    for line in sass.splitlines():
        m = _SASS_LINE.match(line)
        if m:
            instrs.append((int(m.group(1), 16), m.group(2), line))
    loops = []
    for addr, op, line in instrs:
        t = re.search(r"\bBRA\b.*?`?\(?\.L_x_\d+\)?|BRA\s+0x([0-9a-f]+)", line)
        if op == "BRA" and t and t.group(1) and int(t.group(1), 16) < addr:
            loops.append((int(t.group(1), 16), addr))
    weight = [1] * len(instrs)
    for target, end in loops:
        depth = sum(1 for t, e in loops if t <= target and end <= e)  # itself and the loops around it
        if isinstance(trips, int):
            n = trips
        elif depth <= len(trips):
            n = trips[depth - 1]
        else:
            raise ValueError(f"a loop at depth {depth} in the SASS, trips gives {len(trips)} depths")
        for k, (a, _, _) in enumerate(instrs):
            if target <= a <= end:
                weight[k] *= n
    total = sum(w for (_, op, _), w in zip(instrs, weight) if op not in ("NOP",))
    mma = sum(w for (_, op, _), w in zip(instrs, weight) if op in ("HMMA", "HGMMA", "IMMA"))
    return {"total": total, "mma": mma}


def _signature(fn, types: dict[str, str], values: dict[str, object]):
    """Triton's signature, constexprs and the attributes a launch specializes on.

    A launch marks every pointer argument ``tt.divisibility = 16`` (torch allocations are aligned)
    unless the kernel opts out with ``do_not_specialize_on_alignment``; that mark changes the layouts
    Triton picks (vectorized loads and stores become layout anchors), so compiling without it counts
    a kernel no GPU runs.
    """
    params = list(inspect.signature(fn.fn).parameters)
    signature = {p: types.get(p, "constexpr") for p in params}
    constexprs = {(params.index(k),): v for k, v in values.items() if k in params}
    skip = set(fn.do_not_specialize_on_alignment) | set(fn.do_not_specialize)
    attrs = {(n,): [["tt.divisibility", 16]] for n, p in enumerate(params)
             if types.get(p, "").startswith("*") and p not in skip and n not in skip}
    return signature, constexprs, attrs


def compile_config(c: Config, arch: int = 90) -> dict:
    """Compile one config cold for ``sm_<arch>`` and count its SASS."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    merge, base, refine, *wu = c.precisions.split(":")
    value_heads = 1  # the loop the fused GDN kernel runs per key head; counts are per value head
    if c.kernel == "solve_tril":
        from deltainv.kernels.tril.triton import solve_tril_kernel, tile_edge

        fn = _jit(solve_tril_kernel)
        types = {"A": "*fp32", "Ai": "*bf16", "cu_seqlens": "*i32", "chunk_indices": "*i32", "T": "i32",
                 "n_items": "i32"}
        values = {"H": SHAPE["H"], "BT": c.bt, "S": tile_edge(c.method, c.bt), "IS_VARLEN": False,
                  "METHOD": c.method, "PREC": merge, "BASE_PREC": base, "REFINE_PREC": refine, "NC": c.nc}
        trips = 1
    elif c.kernel == "gdn_intra":
        from deltainv.kernels.gdn.triton import KK_PER_HEAD, KK_SLICE, _block, gdn_intra_kernel

        fn = _jit(gdn_intra_kernel)
        s = GDN_SHAPE
        types = {"k": "*bf16", "v": "*bf16", "g": "*fp32", "beta": "*bf16", "w": "*bf16", "u": "*bf16",
                 "Ai": "*bf16", "cu_seqlens": "*i32", "chunk_indices": "*i32", "T": "i32", "n_items": "i32"}
        values = {"H": s["H"], "HV": s["HV"], "K": s["K"], "V": s["V"], "BK": _block(s["K"]), "BV": _block(s["V"]),
                  "BT": c.bt, "IS_VARLEN": False, "USE_G": True, "GATE_LOG2": False, "STORE_A": False,
                  "KKT_PREC": "native", "METHOD": c.method, "PREC": merge, "BASE_PREC": base,
                  "REFINE_PREC": refine, "WU_PREC": wu[0], "KK_PER_HEAD": KK_PER_HEAD and s["HV"] > s["H"],
                  "NC": c.nc}
        value_heads = s["HV"] // s["H"]
        if not values["KK_PER_HEAD"]:
            raise NotImplementedError("counting assumes K K^T recomputed per value head (its loop nested)")
        trips = (value_heads, s["K"] // int(KK_SLICE))  # the value heads; the K K^T slices inside
    elif c.kernel == "kda_intra":
        from deltainv.kernels.kda.triton import _a_block
        from deltainv.kernels.kda.triton import _block as kda_block
        from deltainv.kernels.kda.triton import kda_intra_kernel

        fn = _jit(kda_intra_kernel)
        s = KDA_SHAPE
        # fla's dtypes: bf16 q, k, v, beta and outputs; fp32 cumulative gate; no qg (disable_recompute off)
        types = {"q": "*bf16", "k": "*bf16", "v": "*bf16", "g": "*fp32", "beta": "*bf16", "w": "*bf16",
                 "u": "*bf16", "qg": "*bf16", "kg": "*bf16", "Aqk": "*bf16", "Akk": "*bf16", "scale": "fp32",
                 "cu_seqlens": "*i32", "chunk_indices": "*i32", "T": "i32", "n_items": "i32"}
        values = {"H": s["H"], "HV": s["HV"], "K": s["K"], "V": s["V"], "BKA": _a_block(s["K"]),
                  "BK": kda_block(s["K"]), "BV": kda_block(s["V"]), "BT": c.bt, "IS_VARLEN": False, "GATE_LOG2": True,
                  "HAS_V": True, "STORE_A": False, "STORE_QG": False, "A_PREC": wu[1], "METHOD": c.method,
                  "PREC": merge, "BASE_PREC": base, "REFINE_PREC": refine, "WU_PREC": wu[0], "NC": c.nc}
        trips = s["K"] // _a_block(s["K"])  # each row tile's runtime loop over the Akk/Aqk K slices
    elif c.kernel == "dplr_intra":
        from deltainv.kernels.dplr.triton import A_SLICE, _block, dplr_intra_kernel, factor_limit

        fn = _jit(dplr_intra_kernel)
        s = DPLR_SHAPE
        types = {**{x: "*bf16" for x in ("q", "k", "v", "a", "b", "A_qk", "A_qb", "qg", "kg", "ag", "bg", "w", "u")},
                 **{x: "*fp32" for x in ("gi", "ge", "A_ab", "A_ak", "Ai")}, "cu_seqlens": "*i32",
                 "chunk_indices": "*i32", "scale": "fp32", "T": "i32", "n_items": "i32"}
        values = {"H": s["H"], "K": s["K"], "V": s["V"], "BK": _block(s["K"]), "BV": _block(s["V"]),
                  "BKA": A_SLICE, "BT": c.bt, "IS_VARLEN": False, "GATE_LOG2": True,
                  "LIMIT": factor_limit(True), "STORE_A": False, "A_PREC": wu[1], "METHOD": c.method,
                  "PREC": merge, "BASE_PREC": base, "REFINE_PREC": refine, "WU_PREC": wu[0], "NC": c.nc}
        trips = 1
    signature, constexprs, attrs = _signature(fn, types, values)
    log = io.StringIO()
    # Triton runs ptxas with -v and prints its log on request; keep it instead of running ptxas twice.
    with knobs.nvidia.scope(), contextlib.redirect_stdout(log):
        knobs.nvidia.dump_ptxas_log = True
        t0 = time.perf_counter()
        compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs),
                                  target=GPUTarget("cuda", arch, 32),
                                  options={"num_warps": c.warps, "num_stages": 1})
        seconds = time.perf_counter() - t0
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        sass = subprocess.run([str(tool), "-sass", f.name], capture_output=True, text=True, check=True).stdout
    counts = sass_counts(sass, trips)
    stats = ptxas_stats(log.getvalue())
    per = c.warps / c.nc / value_heads  # per chunk (and value head)
    return {"seconds": round(seconds, 2), "registers": stats["registers"],
            "spill_bytes": max(stats["spill_stores"], 0) + max(stats["spill_loads"], 0),
            "mma_per_chunk": round(counts["mma"] * per), "warp_instructions_per_chunk": round(counts["total"] * per)}


def model_us(c: Config, instructions_per_chunk: float) -> tuple[float, float]:
    """``(predicted_us, floor_us)``: issue-bound time and memory floor on an H100 for the config's shape."""
    if c.kernel == "solve_tril":
        chunks = SHAPE["B"] * SHAPE["H"] * SHAPE["T"] // c.bt
        nbytes = SHAPE["B"] * SHAPE["T"] * SHAPE["H"] * c.bt * (4 + 2)  # fp32 A in, bf16 out
    elif c.kernel == "gdn_intra":
        s = GDN_SHAPE
        chunks = s["B"] * s["HV"] * s["T"] // c.bt  # per value head
        nbytes = s["B"] * s["T"] * (s["H"] * s["K"] + 2 * s["HV"] * s["V"] + s["HV"] * s["K"]) * 2 \
            + s["B"] * s["T"] * s["HV"] * 2 * 4  # k, v in; w, u out (bf16); beta, g
    elif c.kernel == "dplr_intra":
        s = DPLR_SHAPE
        chunks = s["B"] * s["H"] * s["T"] // c.bt
        # q k a b v (bf16) and gi ge (fp32) in; qg kg ag bg w u (bf16), A_qk A_qb (bf16), A_ak (fp32) out
        nbytes = s["B"] * s["T"] * s["H"] * (5 * s["K"] * 2 + 2 * s["K"] * 4 + 6 * s["K"] * 2 + c.bt * (2 + 2 + 4))
    else:
        s = KDA_SHAPE
        chunks = s["B"] * s["HV"] * s["T"] // c.bt  # per value head
        # q, k, v in; w, kg, u, Aqk out (bf16); beta (bf16) and the fp32 gate in; Akk not stored
        nbytes = s["B"] * s["T"] * (2 * s["H"] * s["K"] + 2 * s["HV"] * s["V"] + 2 * s["HV"] * s["K"]
                                    + s["HV"] * c.bt + s["HV"]) * 2 + s["B"] * s["T"] * s["HV"] * s["K"] * 4
    issue = instructions_per_chunk * chunks / (SMS * ISSUE_PER_CYCLE * CLOCK_HZ)
    return round(issue * 1e6, 1), round(nbytes / COPY_BPS * 1e6, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deltainv.bench.compile_time", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernels", default="solve_tril,gdn_intra,kda_intra,dplr_intra",
                    help="comma list: solve_tril, gdn_intra, kda_intra, dplr_intra")
    ap.add_argument("--bt", default="16,32,64,128", help="comma list of chunk sizes")
    ap.add_argument("--methods", default="substitution,blocked,mxr,mxr_refine", help="comma list")
    ap.add_argument("--precisions", help="comma list: compile only the configs with these precision strings "
                    "(as in the table, e.g. tf32x3:tf32x3:tf32x3:bf16:tf32)")
    ap.add_argument("--arch", type=int, default=90, help="CUDA compute capability x10 (default 90, Hopper)")
    ap.add_argument("--out", help="output folder (default bench/results/<host>)")
    ap.add_argument("--update", action="store_true",
                    help="keep the existing results' rows of the (kernel, BT) pairs not compiled in this run")
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

    todo = configs(args.kernels, [int(b) for b in args.bt.split(",")], args.methods.split(","))
    if args.precisions:
        todo = [c for c in todo if c.precisions in args.precisions.split(",")]
    host = f"cpu-{platform.machine()}".lower().replace("_", "-")
    out = Path(args.out) if args.out else RESULTS / host
    out.mkdir(parents=True, exist_ok=True)
    meta = {"triton": triton.__version__, "arch": f"sm_{args.arch}", "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"), "shape": SHAPE, "gdn_shape": GDN_SHAPE,
            "kda_shape": KDA_SHAPE, "dplr_shape": DPLR_SHAPE,
            "model": {"sms": SMS, "issue_per_cycle": ISSUE_PER_CYCLE, "clock_hz": CLOCK_HZ, "copy_bps": COPY_BPS},
            "command": "python -m deltainv.bench.compile_time " + " ".join(sys.argv[1:]), "planned": len(todo)}
    kept: list[dict] = []
    if args.update and (out / "compile_time.json").exists():
        old = json.loads((out / "compile_time.json").read_text())
        ran = {(c.kernel, c.bt) for c in todo}
        kept = [{"command": old["meta"]["command"], **r} for r in old["rows"] if (r["kernel"], r["bt"]) not in ran]
        for r in kept:  # the default recipe may have changed since
            if {"method", "chunks_per_program", "warps", "precisions"} <= set(r):
                r["default"] = is_default(Config(r["kernel"], r["method"], r["bt"], r["chunks_per_program"],
                                                 r["warps"], r["precisions"]))
        meta["planned"] += len(kept)
    rows: list[dict] = list(kept)
    for n, c in enumerate(todo, 1):
        r = compile_config(c, args.arch)
        predicted, floor = model_us(c, r["warp_instructions_per_chunk"])
        rows.append({"command": meta["command"], "kernel": c.kernel, "method": c.method, "bt": c.bt, "warps": c.warps, "chunks_per_program": c.nc,
                     "precisions": c.precisions, **r, "predicted_us": predicted, "floor_us": floor,
                     "default": is_default(c)})
        print(f"[compile {n}/{len(todo)}] {c.kernel:<10} {c.method:<12} bt {c.bt:3d} nc {c.nc} warps {c.warps} "
              f"{c.precisions:<24} {r['seconds']:6.1f} s  regs {r['registers']:3d}  spill {r['spill_bytes']:5d} B  "
              f"mma/chunk {r['mma_per_chunk']:5d}  instr/chunk {r['warp_instructions_per_chunk']:6d}  "
              f"~{predicted} us (floor {floor})", file=sys.stderr, flush=True)
        write(out, meta, rows)  # after every config: a run cut short keeps what it compiled
    print(f"wrote {out / 'compile_time.json'} and compile_time.md", file=sys.stderr)
    return 0


def write(out: Path, meta: dict, rows: list[dict]) -> None:
    # the order configs() compiles in: kernel, then BT 64, 32, 16, 128 (stable within)
    bt_order, kernel_order = {64: 0, 32: 1, 16: 2, 128: 3}, {"solve_tril": 0, "gdn_intra": 1, "kda_intra": 2, "dplr_intra": 3}
    rows = sorted(rows, key=lambda r: (kernel_order.get(r["kernel"], 9), bt_order.get(r["bt"], 9)))
    (out / "compile_time.json").write_text(json.dumps({"meta": {**meta, "done": len(rows)}, "rows": rows}, indent=1))
    lines = [f"# Triton kernels compiled for {meta['arch']} on this CPU (no GPU)", "",
             f"triton {meta['triton']}, {meta['date']}. "
             + "; ".join(f"`{cmd}`" for cmd in dict.fromkeys(r.get("command", meta["command"]) for r in rows))
             + f" ({len(rows)} of {meta['planned']} configs).",
             "",
             "Per config: cold compile seconds (on a shared, loaded 2-core box: an upper bound), ptxas registers and "
             "spill bytes per thread, MMA and warp-instructions per chunk from the SASS (per chunk and value head "
             "for the fused kernels), and the issue-bound model at B32 H4 T4096 (gdn_intra: B1 T16k, 16/32 heads, d 128; "
             "kda_intra: B1 T16k, 32 heads, d 128, Akk not stored; dplr_intra: B1 T16k, 32 heads, d 64, A_ab and its "
             "inverse not stored) "
             "on an H100 next to the memory floor. **Not measured on GPU.** Default recipe rows in bold.", "",
             "| kernel | method | BT | NC | warps | merge:base:refine(:wu(:a)) | seconds | registers | spill B | "
             "MMA/chunk | warp-instr/chunk | predicted us | floor us |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r["kernel"], r["method"], r["bt"], r["chunks_per_program"], r["warps"], r["precisions"], r["seconds"],
                 r["registers"], r["spill_bytes"], r["mma_per_chunk"], r["warp_instructions_per_chunk"],
                 r["predicted_us"], r["floor_us"]]
        text = [f"**{x}**" if r["default"] else str(x) for x in cells]
        lines.append("| " + " | ".join(text) + " |")
    (out / "compile_time.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
