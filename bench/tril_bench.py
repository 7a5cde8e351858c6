"""Benchmark: deltainv's Triton inversion and fused GDN intra kernels against fla 0.6.0, on one device.

Three parts, each compared in the same run:

- ``solve_tril``: ours (several methods/precisions) vs fla ``solve_tril`` (ieee and tf32) vs
  ``torch.linalg.solve_triangular``, on the paper's grid (B=32, H=4, T 512..16384, BT 32/64/128)
  and the Qwen3-Next GDN shape (32 value heads, T 4k/16k/32k, fixed and varlen);
- ``intra``: our fused kkt -> inverse -> W/U vs fla's fused kkt+solve + ``recompute_w_u``
  (Qwen3-Next shape: 16 key heads, 32 value heads, d = 128, BT = 64);
- ``forward``: the whole ``chunk_gated_delta_rule`` forward, fla stock vs fla with our intra swapped in.

For each point: median time (``triton.testing.do_bench`` on CUDA, a wall-clock median on the CPU),
effective bandwidth (bytes read + written / time), that bandwidth as a share of a measured
device-to-device copy, the speed-up over the baseline, and the error against float64.

    python -m deltainv.bench.tril_bench                 # CUDA: full grid -> bench/results/<gpu>/
    python -m deltainv.bench.tril_bench --toy           # CPU (Triton interpreter): tiny shapes, proves it runs

Nothing here asserts a speed; the numbers are what they are.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Point:
    part: str
    shape: str
    impl: str
    baseline: str
    ms: float
    bytes: int
    gbps: float
    copy_share: float
    speedup: float | None = None
    rel_err: float | None = None
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# timing


class Timer:
    """Median time of a call in ms (``triton.testing.do_bench`` on CUDA, wall clock on the CPU); the
    20th and 80th percentiles of the last call are kept in :attr:`spread`."""

    def __init__(self, device: str, reps: int = 3):
        self.device, self.reps, self.spread = device, reps, (0.0, 0.0)

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.device == "cuda":
            import triton

            p50, p20, p80 = triton.testing.do_bench(fn, warmup=25, rep=100, quantiles=[0.5, 0.2, 0.8])
        else:
            fn()
            samples = []
            for _ in range(self.reps):
                t = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t) * 1e3)
            p50 = statistics.median(samples)
            p20, p80 = min(samples), max(samples)
        self.spread = (float(p20), float(p80))
        return float(p50)


def _timer(device: str) -> Timer:
    return Timer(device)


def copy_bandwidth(device: str, bench, nbytes: int) -> float:
    """GB/s of a device-to-device copy of ``nbytes`` (read + write counted, like the kernels)."""
    import torch

    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src))
    return 2 * nbytes / (ms * 1e-3) / 1e9


def _nbytes(*ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts if t is not None)


# ------------------------------------------------------------------------------------------------
# inputs


def _gdn_tensors(B, T, H, HV, K, V, device, dtype, seed=0, cu=None, chunk=64):
    import torch

    from deltainv.kernels.gdn import chunk_local_cumsum, l2norm

    g = torch.Generator(device="cpu").manual_seed(seed)
    k = l2norm(torch.randn(B, T, H, K, generator=g)).to(dtype)
    q = l2norm(torch.randn(B, T, H, K, generator=g)).to(dtype)
    v = torch.randn(B, T, HV, V, generator=g).to(dtype)
    beta = torch.rand(B, T, HV, generator=g)
    gate = -torch.rand(B, T, HV, generator=g) * torch.logspace(-3, 0, HV)[None, None, :]
    gc = chunk_local_cumsum(gate, chunk, cu_seqlens=cu)
    to = lambda x: None if x is None else x.to(device)  # noqa: E731
    return dict(q=to(q), k=to(k), v=to(v), beta=to(beta), gate=to(gate), gc=to(gc), cu=to(cu))


def _kkt(t, chunk):
    from deltainv.kernels.gdn import chunk_scaled_dot_kkt

    return chunk_scaled_dot_kkt(t["k"], t["beta"], t["gc"], chunk, cu_seqlens=t["cu"]).contiguous()


def _rel_err_inverse(A, X, cu=None, samples: int = 256) -> float:
    """Relative Frobenius error of a sample of chunks' inverses (engine layout) against float64."""
    import torch

    from deltainv.eval.metrics import error_stats
    from deltainv.kernels.index import chunk_table

    B, T, H, BT = A.shape
    table = chunk_table(B, T, BT, cu.cpu() if cu is not None else None)
    rows, valid = table.rows, table.valid
    pick = torch.linspace(0, rows.shape[0] - 1, min(samples, rows.shape[0])).long()

    def chunks(M):
        m = M.reshape(B * T, H, BT)[rows[pick].to(M.device)].float().cpu()          # [n, BT, H, BT]
        m = torch.where(valid[pick][:, :, None, None], m, torch.zeros(()))
        return m.permute(0, 2, 1, 3).reshape(-1, BT, BT)

    Ac, Xc = chunks(A), chunks(X)
    # rows past a partial chunk's end are absent: compare them as the identity they stand for
    pad = (~valid[pick])[:, None, :].expand(-1, H, -1).reshape(-1, BT)
    Xc = Xc + torch.diag_embed(pad.float())
    return error_stats(Ac, Xc).rel_fro


def _rel(a, b) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


# ------------------------------------------------------------------------------------------------
# parts


#: deltainv's solve_tril recipes in the benchmark: the default first.
TRIL_OURS = [
    ("substitution/tf32x3 (default)", dict(method="substitution", precision="tf32x3")),
    ("blocked/tf32x3", dict(method="blocked", precision="tf32x3")),
    ("mxr/tf32x3", dict(method="mxr", precision="tf32x3")),
    ("mxr_refine/tf32+x3", dict(method="mxr_refine", precision="tf32", base_precision="tf32x3",
                                refine_precision="tf32x3")),
    ("substitution/fp32", dict(method="substitution", precision="fp32")),
    ("mxr_refine/fp32", dict(method="mxr_refine", precision="fp32")),
]


def pinned(kernel, nc: int, warps: int):
    """A context manager that restricts an autotuned deltainv kernel to one ``(NC, warps)`` config."""
    import contextlib

    from triton.runtime.autotuner import Autotuner

    tuner = kernel
    while not isinstance(tuner, Autotuner):
        tuner = tuner.fn

    @contextlib.contextmanager
    def scope():
        saved = (tuner.configs, tuner.cache)
        tuner.configs = [c for c in saved[0] if c.kwargs.get("NC") == nc and c.num_warps == warps]
        tuner.cache = {}
        try:
            yield
        finally:
            tuner.configs, tuner.cache = saved

    return scope()


def ran_config(kernel) -> str:
    """``NC=.. warps=..`` of the config an autotuned kernel last ran (its best config)."""
    from triton.runtime.autotuner import Autotuner

    tuner = kernel
    while not isinstance(tuner, Autotuner):
        tuner = tuner.fn
    best = getattr(tuner, "best_config", None)
    return f"NC={best.kwargs.get('NC')} warps={best.num_warps}" if best is not None else "?"


def bench_solve_tril(grid, device, bench, copy_gbps, points: list[Point], log, done=lambda: None,
                     pick=re.compile(""), ours=None, pins=lambda method: ()):
    """``pins(method)``: extra ``(NC, warps)`` configs each of our recipes is also timed with
    (``impl @NC..``); configs are per method (``kernels.tril.triton.method_configs``)."""
    import torch

    from deltainv.kernels.tril.triton import solve_tril as triton_solve_tril
    from deltainv.kernels.tril.triton import solve_tril_kernel

    ours = TRIL_OURS if ours is None else ours

    from deltainv.kernels import solve_tril
    from fla.ops.utils.solve_tril import solve_tril as fla_solve_tril

    for shape, (B, T, H, BT, varlen) in grid.items():
        cu = None
        if varlen:
            cuts = torch.linspace(0, T, varlen + 1).round().long()
            cu = cuts.to(torch.int32)
        t = _gdn_tensors(B, T, H, H, 64, 64, device, torch.bfloat16, cu=cu, chunk=BT)
        A = _kkt(t, BT)
        ci = None
        if cu is not None:
            from deltainv.kernels.index import prepare_chunk_indices

            ci = prepare_chunk_indices(cu.cpu(), BT).to(device)
        out_dtype = torch.bfloat16  # what the engines ask for
        nbytes = _nbytes(A) + A.numel() * 2
        # name -> (timed call, untimed call returning the fp32 inverse for the error column)
        impls: dict[str, tuple[Callable[[], object], Callable[[], torch.Tensor]]] = {}
        if BT in (16, 32, 64):
            impls["fla/ieee"] = (lambda: fla_solve_tril(A, cu_seqlens=cu, chunk_indices=ci, output_dtype=out_dtype),
                                 lambda: fla_solve_tril(A, cu_seqlens=cu, chunk_indices=ci, output_dtype=torch.float32))
            impls["fla/tf32"] = (_fla_tf32(fla_solve_tril, A, cu, ci, out_dtype),
                                 _fla_tf32(fla_solve_tril, A, cu, ci, torch.float32))
        for name, kw in ours:
            if not pick.search(f"deltainv {name}"):
                continue
            impls[f"deltainv {name}"] = (lambda kw=kw: solve_tril(A, cu, ci, out_dtype, backend="triton", **kw),
                                         lambda kw=kw: solve_tril(A, cu, ci, torch.float32, backend="triton", **kw))
            for nc, w in pins(kw["method"]):
                def pin_call(dtype, kw=kw, nc=nc, w=w):
                    with pinned(solve_tril_kernel, nc, w):
                        return solve_tril(A, cu, ci, dtype, backend="triton", **kw)
                impls[f"deltainv {name} @NC{nc}w{w}"] = (lambda f=pin_call: f(out_dtype),
                                                         lambda f=pin_call: f(torch.float32))
        if cu is None:
            chunks = A.reshape(B, T // BT, BT, H, BT).permute(0, 1, 3, 2, 4).reshape(-1, BT, BT).float()
            eye = torch.eye(BT, device=device).expand_as(chunks)

            def trsm():
                return torch.linalg.solve_triangular(chunks, eye, upper=False, unitriangular=True)

            def trsm_layout():
                return trsm().reshape(B, T // BT, H, BT, BT).permute(0, 1, 3, 2, 4).reshape(B, T, H, BT)

            impls["torch.solve_triangular"] = (trsm, trsm_layout)
        baseline = "fla/ieee" if "fla/ieee" in impls else "deltainv substitution/fp32"
        times = {}
        for name, (fn, fn32) in impls.items():
            ms = bench(fn)
            spread = getattr(bench, "spread", (ms, ms))
            times[name] = ms
            X = fn32()
            err = _rel_err_inverse(A, X, cu)
            extra = {"p20": spread[0], "p80": spread[1]}
            if name.startswith("deltainv"):
                # every element written: the same call into a NaN-poisoned output
                out = torch.full(A.shape, float("nan"), dtype=torch.float32, device=A.device)
                kw = dict(next(k for n, k in ours if name.startswith(f"deltainv {n}")))
                triton_solve_tril(A, cu, ci, torch.float32, out=out, **kw)
                extra["poison_ok"] = bool(torch.isfinite(out).all())
                extra["config"] = ran_config(solve_tril_kernel)
            gbps = nbytes / (ms * 1e-3) / 1e9
            points.append(Point("solve_tril", shape, name, baseline, ms, nbytes, gbps, gbps / copy_gbps, rel_err=err,
                                extra=extra))
            log(f"[solve_tril] {shape:<28} {name:<28} {ms:9.3f} ms  {gbps:8.1f} GB/s  err {err:.1e}")
        for p in points:
            if p.part == "solve_tril" and p.shape == shape:
                p.speedup = times[baseline] / p.ms
        done()


def _fla_tf32(fla_solve_tril, A, cu, ci, out_dtype):
    """fla's solve_tril with its merge dots forced to tf32 (its autotuner only lists tf32 with TMA)."""
    import importlib

    import triton

    from triton.runtime.autotuner import Autotuner

    module = importlib.import_module("fla.ops.utils.solve_tril")  # fla.ops.utils re-exports the function
    kernels = []
    for n in ("merge_16x16_to_32x32_inverse_kernel", "merge_16x16_to_64x64_inverse_kernel"):
        k = getattr(module, n)
        while not isinstance(k, Autotuner):  # under @triton.heuristics
            k = k.fn
        kernels.append(k)

    # A tf32 config list and autotune cache of its own, swapped in around each call, so the timed
    # calls hit a warm cache instead of re-autotuning (which is what a cache reset per call would time).
    tf32 = [([triton.Config({"DOT_PRECISION": "tf32"}, num_warps=c.num_warps, num_stages=c.num_stages)
              for c in k.configs], {}) for k in kernels]

    def run():
        saved = [(k.configs, k.cache) for k in kernels]
        try:
            for k, (configs, cache) in zip(kernels, tf32):
                k.configs, k.cache = configs, cache
            return fla_solve_tril(A, cu_seqlens=cu, chunk_indices=ci, output_dtype=out_dtype)
        finally:
            for k, (c, cache) in zip(kernels, saved):
                k.configs, k.cache = c, cache

    return run


#: (label, fused-kernel arguments). The defaults first (bf16 W/U for these bf16 tensors), stored ``A``
#: and not; tf32x3 W/U is left out: it compiles for minutes (bench/compile_time), too long for a GPU session.
INTRA_OURS = [
    ("deltainv default (substitution tf32x3, bf16 W/U)", dict(method=None, precision=None)),
    ("deltainv default, A not stored", dict(method=None, precision=None, store_a=False)),
    ("deltainv mxr_refine mixed", dict(method="mxr_refine", precision="tf32", base_precision="tf32x3",
                                       refine_precision="tf32x3")),
    ("deltainv mxr tf32+x3 base", dict(method="mxr", precision="tf32", base_precision="tf32x3")),
]
def bench_intra(grid, device, bench, copy_gbps, points, log, done=lambda: None, pick=re.compile("")):
    import torch

    from deltainv.kernels.gdn.pytorch import chunk_gated_delta_rule_fwd_intra as reference
    from deltainv.kernels.gdn.triton import chunk_gated_delta_rule_fwd_intra as fused
    from fla.ops.gated_delta_rule.chunk_fwd import chunk_gated_delta_rule_fwd_intra as fla_intra

    LN2 = math.log(2.0)
    for shape, (B, T, H, HV, K, V, varlen) in grid.items():
        cu = None
        if varlen:
            cu = torch.linspace(0, T, varlen + 1).round().to(torch.int32)
        t = _gdn_tensors(B, T, H, HV, K, V, device, torch.bfloat16, cu=cu)
        ci = None
        if cu is not None:
            from deltainv.kernels.index import prepare_chunk_indices

            ci = prepare_chunk_indices(cu.cpu(), 64).to(device)
        cu_l = cu.long() if cu is not None else None
        g2 = t["gc"] / LN2
        nbytes = _nbytes(t["k"], t["v"], t["gc"], t["beta"]) + 2 * (B * T * HV * (K + V + 64))
        impls = {"fla fused kkt+solve+w/u": lambda: fla_intra(t["k"], t["v"], g2, t["beta"], cu_seqlens=cu_l,
                                                                chunk_size=64, chunk_indices=ci)}
        for name, kw in INTRA_OURS:
            if not pick.search(name):
                continue
            impls[name] = (lambda kw=kw: fused(t["k"], t["v"], t["gc"], t["beta"], cu, 64, ci, **kw))
        # float64-grade reference on a slice: first 512 tokens of the first sequence
        n = min(T, 512) if cu is None else int(cu[1])
        sl = lambda x: x[:1, :n].cpu()  # noqa: E731
        ref = reference(sl(t["k"]).float(), sl(t["v"]).float(), sl(t["gc"]), sl(t["beta"]), None, 64,
                        method="torch", wu_precision="fp32")
        times = {}
        for name, fn in impls.items():
            ms = bench(fn)
            times[name] = ms
            w, u, _ = fn()
            err = max(_rel(w[:1, :n].float().cpu(), ref[0]), _rel(u[:1, :n].float().cpu(), ref[1]))
            gbps = nbytes / (ms * 1e-3) / 1e9
            points.append(Point("intra", shape, name, "fla fused kkt+solve+w/u", ms, nbytes, gbps, gbps / copy_gbps,
                                rel_err=err))
            log(f"[intra]      {shape:<28} {name:<38} {ms:9.3f} ms  {gbps:8.1f} GB/s  err {err:.1e}")
        for p in points:
            if p.part == "intra" and p.shape == shape:
                p.speedup = times["fla fused kkt+solve+w/u"] / p.ms
        done()


def bench_forward(grid, device, bench, copy_gbps, points, log, done=lambda: None, pick=re.compile("")):
    import torch

    import fla.ops.gated_delta_rule.chunk as fla_chunk
    from deltainv.kernels import dropin
    from deltainv.kernels.gdn.pytorch import naive_recurrent_gated_delta_rule
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    stock = fla_chunk.chunk_gated_delta_rule_fwd_intra
    # the first intra configuration --impls keeps that fla's forward can take (it does W/U itself)
    chosen = [(n, dict(k)) for n, k in INTRA_OURS if pick.search(n) and not {"wu_precision", "store_a"} & set(k)]
    if not chosen:
        log("[forward] skipped: --impls keeps no intra configuration without wu_precision or store_a")
        return
    label, kw = chosen[0]
    ours = dropin.fla_gdn_fwd_intra(kw.pop("method"), kw.pop("precision"), backend="triton", **kw)
    for shape, (B, T, H, HV, K, V, varlen) in grid.items():
        cu = None
        if varlen:
            cu = torch.linspace(0, T, varlen + 1).round().long()
        t = _gdn_tensors(B, T, H, HV, K, V, device, torch.bfloat16, cu=cu)
        cu_d = cu.to(device) if cu is not None else None
        nbytes = _nbytes(t["q"], t["k"], t["v"], t["gate"], t["beta"]) + B * T * HV * V * 2

        def run():
            return chunk_gated_delta_rule(t["q"], t["k"], t["v"], t["gate"], t["beta"], cu_seqlens=cu_d,
                                          output_final_state=True)

        n = min(T, 256) if cu is None else min(int(cu[1]), 256)
        sl = lambda x: x[:1, :n].float().cpu()  # noqa: E731
        ro, _ = naive_recurrent_gated_delta_rule(sl(t["q"]), sl(t["k"]), sl(t["v"]), sl(t["gate"]), sl(t["beta"]))
        times = {}
        for name, fn_intra in (("fla stock", stock), (f"fla + {label}", ours)):
            fla_chunk.chunk_gated_delta_rule_fwd_intra = fn_intra
            try:
                ms = bench(run)
                o, _ = run()
            finally:
                fla_chunk.chunk_gated_delta_rule_fwd_intra = stock
            times[name] = ms
            err = _rel(o[:1, :n].float().cpu(), ro.float())
            gbps = nbytes / (ms * 1e-3) / 1e9
            points.append(Point("forward", shape, name, "fla stock", ms, nbytes, gbps, gbps / copy_gbps, rel_err=err))
            log(f"[forward]    {shape:<28} {name:<38} {ms:9.3f} ms  {gbps:8.1f} GB/s  err {err:.1e}")
        for p in points:
            if p.part == "forward" and p.shape == shape:
                p.speedup = times["fla stock"] / p.ms
        done()


# ------------------------------------------------------------------------------------------------
# grids

def grids(toy: bool):
    if toy:
        return (
            {"B1 T96 H2 BT32": (1, 96, 2, 32, 0), "B1 T150 H2 BT64 varlen3": (1, 150, 2, 64, 3)},
            {"B1 T128 Hk1 Hv2 d32": (1, 128, 1, 2, 32, 32, 0)},
            {"B1 T64 Hk1 Hv2 d32": (1, 64, 1, 2, 32, 32, 0)},
        )
    paper = {f"paper B32 H4 T{T} BT{bt}": (32, T, 4, bt, 0)
             for bt in (32, 64, 128) for T in (512, 1024, 2048, 4096, 8192, 16384)}
    qwen = {f"qwen3-next HV32 T{T}": (1, T, 32, 64, 0) for T in (4096, 16384, 32768)}
    qwen["qwen3-next HV32 T16k varlen8"] = (1, 16384, 32, 64, 8)
    intra = {f"qwen3-next Hk16 Hv32 d128 T{T}": (1, T, 16, 32, 128, 128, 0) for T in (4096, 16384, 32768)}
    intra["qwen3-next Hk16 Hv32 d128 T16k varlen8"] = (1, 16384, 16, 32, 128, 128, 8)
    return {**paper, **qwen}, intra, dict(intra)


# ------------------------------------------------------------------------------------------------
# output


def write_results(points: list[Point], meta: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "tril_bench.json", out / "tril_bench.md", out / "tril_bench.png"]
    paths[0].write_text(json.dumps({"meta": meta, "points": [asdict(p) for p in points]}, indent=1))
    lines = [f"# deltainv Triton benchmark on {meta['device_name']}", "",
             f"torch {meta['torch']}, triton {meta['triton']}, fla-core {meta['fla']}, "
             f"device-to-device copy {meta['copy_gbps']:.1f} GB/s. Timing: {meta['timer']}.", ""]
    for part in ("solve_tril", "intra", "forward"):
        rows = [p for p in points if p.part == part]
        if not rows:
            continue
        lines += [f"## {part}", "", "| shape | implementation | ms | GB/s | % of copy | speed-up | rel. error vs float64 |",
                  "|---|---|---|---|---|---|---|"]
        for p in rows:
            sp = f"{p.speedup:.2f}x" if p.speedup else "-"
            lines.append(f"| {p.shape} | {p.impl} | {p.ms:.3f} | {p.gbps:.1f} | {100 * p.copy_share:.1f}% | {sp} | "
                         f"{p.rel_err:.1e} |")
        lines.append("")
    paths[1].write_text("\n".join(lines))
    _plot(points, meta, paths[2])
    return paths


def _plot(points, meta, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in ("solve_tril", "intra", "forward") if any(x.part == p for x in points)]
    fig, axes = plt.subplots(1, len(parts), figsize=(7 * len(parts), 5.5), squeeze=False)
    for ax, part in zip(axes[0], parts):
        rows = [p for p in points if p.part == part]
        shapes = list(dict.fromkeys(p.shape for p in rows))
        impls = list(dict.fromkeys(p.impl for p in rows))
        width = 0.8 / len(impls)
        for i, impl in enumerate(impls):
            ys = [next((p.speedup or 0 for p in rows if p.shape == s and p.impl == impl), 0) for s in shapes]
            ax.bar([x + i * width for x in range(len(shapes))], ys, width, label=impl)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(shapes))], shapes, rotation=60, ha="right", fontsize=6)
        ax.set_ylabel(f"speed-up over {rows[0].baseline}")
        ax.set_title(part, fontsize=10)
        ax.legend(fontsize=6)
    fig.suptitle(f"deltainv on {meta['device_name']} (torch {meta['torch']}, triton {meta['triton']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _interpreter_for_toy_run() -> None:
    """Run the CPU toy grid under Triton's interpreter with the project's test-support fixes
    (single autotune config, loop variables, bf16 and tf32 emulation); they live in ``tests/``."""
    os.environ.setdefault("TRITON_INTERPRET", "1")
    tests = Path(__file__).resolve().parents[1] / "tests"
    if str(tests) not in sys.path:
        sys.path.insert(0, str(tests))
    try:
        from support import triton_interpreter
    except ImportError as e:
        raise SystemExit(f"--toy on the CPU needs the repository's tests/support (not found: {e})") from None
    triton_interpreter.install()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deltainv.bench.tril_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--toy", action="store_true", help="tiny shapes (runs on the CPU under TRITON_INTERPRET=1)")
    ap.add_argument("--parts", default="solve_tril,intra,forward")
    ap.add_argument("--out", help="output folder (default bench/results/<device>)")
    ap.add_argument("--impls", default="", help="regular expression: only deltainv configurations whose name matches")
    ap.add_argument("--shapes", default="", help="regular expression: only grid points whose name matches")
    args = ap.parse_args(argv)

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        if not args.toy:
            print("no CUDA device: use --toy (tiny shapes under the Triton interpreter)", file=sys.stderr)
            return 2
        _interpreter_for_toy_run()
    import triton

    import fla

    bench = _timer(device)
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu-{platform.machine()} (Triton interpreter)"
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    copy_gbps = copy_bandwidth(device, bench, (1 << 28) if device == "cuda" else (1 << 22))
    log(f"[bench] {name}: device-to-device copy {copy_gbps:.1f} GB/s")
    meta = {"device_name": name, "device": device, "torch": torch.__version__, "triton": triton.__version__,
            "fla": getattr(fla, "__version__", "?"), "copy_gbps": copy_gbps, "toy": args.toy,
            "timer": "triton.testing.do_bench median" if device == "cuda" else "wall-clock median of 3 (interpreter)",
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}
    impls, shapes = re.compile(args.impls), re.compile(args.shapes)
    g_tril, g_intra, g_fwd = ({k: v for k, v in g.items() if shapes.search(k)} for g in grids(args.toy))
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    out = Path(args.out) if args.out else RESULTS / slug
    points: list[Point] = []
    parts = set(args.parts.split(","))

    def checkpoint() -> None:
        # Results are rewritten after every grid point so that a run cut short still leaves what it measured.
        if points:
            write_results(points, meta, out)

    if "solve_tril" in parts:
        bench_solve_tril(g_tril, device, bench, copy_gbps, points, log, checkpoint, impls)
    if "intra" in parts:
        bench_intra(g_intra, device, bench, copy_gbps, points, log, checkpoint, impls)
    if "forward" in parts:
        bench_forward(g_fwd, device, bench, copy_gbps, points, log, checkpoint, impls)
    for p in ("tril_bench.json", "tril_bench.md", "tril_bench.png"):
        log(f"wrote {out / p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
