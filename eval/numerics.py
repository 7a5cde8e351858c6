"""``deltainv numerics``: methods x precisions x chunk sizes x inputs against float64.

Reproduces the paper's stability study on any device (the precisions are emulated, see
:mod:`deltainv.kernels.precision`) and checks its findings explicitly, so a regression in a
method or in the emulation shows up as a failed finding rather than a number nobody reads.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import torch

from deltainv import __version__
from deltainv.kernels import CHUNK_SIZES, METHODS, PRECISIONS, Recipe, invert, resolve
from deltainv.kernels.dplr import fla_fp16_inverse
from deltainv.kernels.inputs import INPUTS, chunk_matrices, get_input
from deltainv.kernels.registry import DEFAULT_METHOD, DEFAULT_PRECISION

from . import gdn_step
from .metrics import error_stats, reference_inverse


@dataclass(frozen=True)
class NumericsConfig:
    """What to run. ``n`` matrices per (input, C); the same matrices serve every method/precision."""

    methods: tuple[str, ...] = tuple(METHODS)
    precisions: tuple[str, ...] = PRECISIONS
    sizes: tuple[int, ...] = CHUNK_SIZES
    inputs: tuple[str, ...] = tuple(INPUTS)
    n: int = 256
    seed: int = 0
    #: Method options (e.g. ``base_precision=tf32x3``), given to the methods that take them.
    options: tuple[tuple[str, str], ...] = ()
    #: Also run the DPLR study (fla's fp16 RWKV-7 recipe beside deltainv's) when ``dplr`` is an input.
    dplr_study: bool = True
    #: Also run the GDN step study (:mod:`deltainv.eval.gdn_step`: W, U and o for fla's recipe and
    #: deltainv.s) when ``gdn`` is an input; ``max(1, n // 64)`` sequences per input.
    gdn_study: bool = True

    @classmethod
    def quick(cls, **kw: Any) -> NumericsConfig:
        return cls(n=32, **kw)


@dataclass
class Report:
    config: NumericsConfig
    rows: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    #: Rows of the DPLR study (see :func:`run_dplr_study`); empty when it did not run.
    dplr: list[dict[str, Any]] = field(default_factory=list)
    #: Rows of the GDN step study (see :mod:`deltainv.eval.gdn_step`); empty when it did not run.
    gdn: list[dict[str, Any]] = field(default_factory=list)

    def select(self, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.rows if all(r[k] == v for k, v in match.items())]

    def get(self, method: str, precision: str, input: str, C: int) -> dict[str, Any] | None:
        rows = self.select(method=method, precision=precision, input=input, C=C)
        return rows[0] if rows else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "config": self.config.__dict__,
            "rows": [_json_safe(r) for r in self.rows],
            "findings": self.findings,
            "dplr_study": [_json_safe(r) for r in self.dplr],
            "gdn_step_study": [_json_safe(r) for r in self.gdn],
        }


def _json_safe(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def recipes(config: NumericsConfig) -> dict[tuple[str, str], Recipe]:
    """Every (method, precision) cell of the grid validated once into its
    :class:`~deltainv.kernels.registry.Recipe`, each method with the options it takes; precisions a
    method does not take are left out. Raises ``ValueError``/``TypeError`` naming a bad option."""
    out = {}
    for name in config.methods:
        method = METHODS[name]
        opts = {k: v for k, v in config.options if k in method.options}
        for precision in config.precisions:
            if precision in method.precisions:
                out[name, precision] = resolve(name, precision, **opts)
    return out


def run(config: NumericsConfig, progress: IO[str] | None = sys.stderr) -> Report:
    """Run the grid; print one progress line per (input, C) to ``progress``."""
    grid = recipes(config)
    report = Report(config)
    report.meta = {
        "deltainv": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    cells = [(kind, C) for kind in config.inputs for C in config.sizes]
    t0 = time.perf_counter()
    for i, (kind, C) in enumerate(cells, 1):
        A = chunk_matrices(kind, config.n, C, seed=config.seed + 1000 * C)
        ref = reference_inverse(A)
        spec = INPUTS[kind]
        for (name, precision), recipe in grid.items():
            X = invert(A, recipe)
            stats = error_stats(A, X, ref)
            report.rows.append({
                "method": name, "precision": precision, "input": kind, "family": spec.family,
                "typical": spec.typical, "beta_max": spec.beta_max, "C": C, **stats.as_dict(),
            })
        if progress is not None:
            print(f"[numerics {i:>3}/{len(cells)}] {kind:<16} C={C:<3} "
                  f"({time.perf_counter() - t0:5.1f}s)", file=progress, flush=True)
    if config.dplr_study and "dplr" in config.inputs:
        report.dplr = run_dplr_study(config.n, config.seed)
        if progress is not None:
            print(f"[numerics] DPLR study ({time.perf_counter() - t0:5.1f}s)", file=progress, flush=True)
    if config.gdn_study and "gdn" in config.inputs:
        report.gdn = gdn_step.run(gdn_sequences(config.n), config.seed)
        if progress is not None:
            print(f"[numerics] GDN step study ({time.perf_counter() - t0:5.1f}s)", file=progress, flush=True)
    report.meta["seconds"] = round(time.perf_counter() - t0, 2)
    report.findings = check_findings(report)
    return report


def gdn_sequences(n: int) -> int:
    """Sequences per input of the GDN step study for ``n`` matrices per cell."""
    return max(1, n // 64)


# ----------------------------------------------------------------------------------------------
# RWKV-7 / DPLR: fla 0.6.0's fp16 recipe beside deltainv's methods

#: Inputs of the DPLR study: random RWKV-7 activations, a run of one repeated token, every gate at
#: fla's safe-gate lower bound.
DPLR_STUDY_INPUTS: tuple[str, ...] = ("dplr", "dplr_repeated", "dplr_lower_bound")
#: fla's safe-gate inverse supports these chunk sizes; RWKV-7 runs at 64.
DPLR_STUDY_SIZES: tuple[int, ...] = (16, 32, 64)
#: (label, method, precision, options); method None is fla's recipe (emulated).
DPLR_STUDY_ARMS: tuple[tuple[str, str | None, str | None, tuple[tuple[str, str], ...]], ...] = (
    ("fla 0.6.0 fp16 product16 + fp16 merges", None, None, ()),
    ("substitution fp16", "substitution", "fp16", ()),
    ("mxr fp16", "mxr", "fp16", ()),
    ("substitution fp32", "substitution", "fp32", ()),
    ("mxr fp32", "mxr", "fp32", ()),
    ("mxr_refine tf32 (refine tf32x3)", "mxr_refine", "tf32", (("refine_precision", "tf32x3"),)),
    ("mxr_refine fp32", "mxr_refine", "fp32", ()),
    (f"{DEFAULT_METHOD} {DEFAULT_PRECISION} (default)", DEFAULT_METHOD, DEFAULT_PRECISION, ()),
)
FLA_LABEL = DPLR_STUDY_ARMS[0][0]
DEFAULT_LABEL = DPLR_STUDY_ARMS[-1][0]


def run_dplr_study(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Every arm of :data:`DPLR_STUDY_ARMS` on every DPLR study input and size, against float64."""
    rows = []
    for kind in DPLR_STUDY_INPUTS:
        for C in DPLR_STUDY_SIZES:
            A = chunk_matrices(kind, n, C, seed=seed + 1000 * C)
            ref = reference_inverse(A)
            for label, method, precision, options in DPLR_STUDY_ARMS:
                X = fla_fp16_inverse(A) if method is None else invert(A, method, precision, **dict(options))
                rows.append({"arm": label, "input": kind, "family": get_input(kind).family, "C": C,
                             **error_stats(A, X, ref).as_dict()})
    return rows


def _dplr_get(report: Report, arm: str, kind: str, C: int) -> dict[str, Any] | None:
    for r in report.dplr:
        if r["arm"] == arm and r["input"] == kind and r["C"] == C:
            return r
    return None


def _dplr_finding(report: Report) -> dict[str, Any]:
    worst = {label: max(_dplr_get(report, label, "dplr_repeated", C)["rel_fro"] for C in DPLR_STUDY_SIZES if C > 16)
             for label in (FLA_LABEL, DEFAULT_LABEL)}
    default_all = max(r["rel_fro"] for r in report.dplr if r["arm"] == DEFAULT_LABEL)
    fla_typical = max(_dplr_get(report, FLA_LABEL, "dplr", C)["rel_fro"] for C in DPLR_STUDY_SIZES)
    ok = worst[FLA_LABEL] >= 1e-2 and default_all <= 1e-5
    ev = (f"runs of one repeated token, C 32/64: fla {_fmt(worst[FLA_LABEL])}, {DEFAULT_LABEL} "
          f"{_fmt(worst[DEFAULT_LABEL])}; random RWKV-7 activations: fla {_fmt(fla_typical)}; {DEFAULT_LABEL} worst "
          f"over every DPLR input {_fmt(default_all)}")
    return _finding("[deltainv] fla 0.6.0's fp16 RWKV-7 inverse loses its accuracy on runs of repeated tokens; "
                    "deltainv's default keeps fp32-level accuracy on every DPLR input", ok, ev)


def _dplr_table(report: Report) -> tuple[list[str], list[list[str]]]:
    header = ["arm", *(f"{k} C={C}" for k in DPLR_STUDY_INPUTS for C in DPLR_STUDY_SIZES), "non-finite"]
    body = []
    for label, *_ in DPLR_STUDY_ARMS:
        rows = [_dplr_get(report, label, k, C) for k in DPLR_STUDY_INPUTS for C in DPLR_STUDY_SIZES]
        body.append([label, *(_fmt(r["rel_fro"]) for r in rows), str(sum(r["nonfinite"] for r in rows))])
    return header, body


_DPLR_TITLE = ("RWKV-7 / DPLR: fla 0.6.0's fp16 inverse (emulated bit for bit: product form on 16x16 blocks, "
               "fp16 merges) beside deltainv's methods (relative Frobenius error vs float64, worst of {n})")


# ----------------------------------------------------------------------------------------------
# The paper's findings, checked


def _finding(claim: str, holds: bool | None, evidence: str) -> dict[str, Any]:
    return {"claim": claim, "holds": holds, "evidence": evidence}


def _have(report: Report, methods: Iterable[str], precisions: Iterable[str]) -> bool:
    c = report.config
    return set(methods) <= set(c.methods) and set(precisions) <= set(c.precisions)


def _digits(a: float, b: float) -> float:
    """How many decimal digits ``a`` is worse than ``b`` (errors at rounding level count as 1e-9)."""
    return math.log10(max(a, 1e-9) / max(b, 1e-9))


def check_findings(report: Report) -> list[dict[str, Any]]:
    out = []
    big = [C for C in report.config.sizes if C >= 64]
    if _have(report, ["product"], ["fp32"]) and big:
        fails = {C: [r["input"] for r in report.select(method="product", precision="fp32", C=C)
                     if r["rel_fro"] >= 1e-3] for C in big}
        ok = all(fails.values())
        ev = "; ".join(f"C={C}: rel err >= 1e-3 on {', '.join(v) or 'no input'}" for C, v in fails.items())
        out.append(_finding("product fails at C >= 64 in fp32", ok, ev))

    if _have(report, ["product"], ["fp16"]):
        per_c = {C: [r["input"] for r in report.select(method="product", precision="fp16", C=C)
                     if r["nonfinite"]] for C in report.config.sizes}
        beyond = [C for C in per_c if C > 16]
        # At C = 16 the intermediates are bounded by C(15, 7) * max|A|^15, finite in fp16 while
        # |A| <= 1; with beta up to 2 they are not, which is why MXR needs beta <= 1 in fp16.
        at16 = [k for k in per_c.get(16, []) if INPUTS[k].beta_max <= 1.0]
        ok = (all(per_c[C] for C in beyond) and not at16) if beyond else None
        ev = "; ".join(f"C={C}: non-finite on {', '.join(v) or 'no input'}" for C, v in per_c.items())
        out.append(_finding("product goes non-finite in fp16 beyond C = 16 (finite at 16 when beta <= 1)", ok, ev))

    beta1 = [k for k in report.config.inputs if INPUTS[k].beta_max <= 1.0]
    if _have(report, ["mxr", "substitution"], ["fp32"]):
        lost = []
        for k in beta1:
            for C in report.config.sizes:
                m, s = report.get("mxr", "fp32", k, C), report.get("substitution", "fp32", k, C)
                lost.append((_digits(m["rel_fro"], s["rel_fro"]), k, C))
        worst = max(lost)
        ok = worst[0] <= 3.05
        ev = (f"fp32, beta <= 1: mxr loses at most {worst[0]:.1f} digits vs substitution "
              f"(worst: {worst[1]}, C={worst[2]}); median {sorted(x[0] for x in lost)[len(lost) // 2]:.1f}")
        out.append(_finding("mxr stays within about 2-3 digits of substitution (fp32)", ok, ev))

    if _have(report, ["mxr_refine", "substitution"], ["fp32"]):
        ratio = []
        for k in beta1:
            for C in report.config.sizes:
                m, s = report.get("mxr_refine", "fp32", k, C), report.get("substitution", "fp32", k, C)
                ratio.append((_digits(m["rel_fro"], s["rel_fro"]), k, C))
        worst = max(ratio)
        ok = worst[0] <= 1.0
        ev = (f"fp32, beta <= 1: mxr_refine is at most {worst[0]:+.1f} digits from substitution "
              f"(worst: {worst[1]}, C={worst[2]})")
        out.append(_finding("one Newton-Schulz step (mxr_refine) recovers them", ok, ev))

    if _have(report, [], ["fp16", "bf16"]):
        pairs = []
        for r in report.select(precision="fp16"):
            if not r["typical"] or r["method"] == "product":
                continue
            if r["method"] == "substitution" and r["C"] == 16:
                continue  # no products at all: nothing is rounded
            b = report.get(r["method"], "bf16", r["input"], r["C"])
            if b is not None:
                pairs.append(b["rel_fro"] / max(r["rel_fro"], 1e-12))
        if pairs:
            wins = sum(p > 1 for p in pairs)
            pairs.sort()
            ok = wins == len(pairs)
            ev = (f"fp16 more accurate than bf16 in {wins}/{len(pairs)} (method, input, C) cells on typical "
                  f"inputs; bf16/fp16 error ratio median {pairs[len(pairs) // 2]:.1f}x, min {pairs[0]:.1f}x")
            out.append(_finding("fp16 operands beat bf16", ok, ev))

    stable_rows = [r for r in report.rows if r["method"] != "product"]
    if stable_rows:
        def exempt(r):  # synthetic, or beta above 1: allowed to break, but shown
            return r["family"] == "adversarial" or r["beta_max"] > 1.0

        bad = [r for r in stable_rows if not exempt(r) and r["nonfinite"]]
        adv = sorted({f"{r['method']}/{r['precision']} on {r['input']}" for r in stable_rows
                      if exempt(r) and r["nonfinite"]})
        ev = (f"{len(bad)} (method, precision, input, C) cells with non-finite output on GDN/KDA/DPLR/stress "
              "inputs with beta <= 1"
              + (f": {bad[:3]}" if bad else "")
              + ("; adversarial exceptions: " + ", ".join(adv) if adv else "; no adversarial exceptions"))
        out.append(_finding("no method except product goes non-finite on GDN/KDA/DPLR inputs (beta <= 1)",
                            not bad, ev))

    # deltainv's default recipe keeps fla ieee's error (substitution/fp32) within 3x everywhere.
    if _have(report, [DEFAULT_METHOD, "substitution"], [DEFAULT_PRECISION, "fp32"]):
        med, worst = [], []
        for k in report.config.inputs:
            if INPUTS[k].family == "adversarial":
                continue
            for C in report.config.sizes:
                d, s = report.get(DEFAULT_METHOD, DEFAULT_PRECISION, k, C), report.get("substitution", "fp32", k, C)
                med.append((d["rel_fro_median"] / max(s["rel_fro_median"], 1e-12), k, C))
                worst.append((d["rel_fro"] / max(s["rel_fro"], 1e-12), k, C))
        m, w = max(med), max(worst)
        # Judged on each cell's median error: the worst of a batch is one matrix, and at 32 per cell
        # (--quick) its ratio moves by 10-20% between seeds. The worst-of-batch ratio is shown too.
        ev = (f"{DEFAULT_METHOD}/{DEFAULT_PRECISION} vs substitution/fp32, typical and stress inputs: median error "
              f"at most {m[0]:.2f}x ({m[1]}, C={m[2]}); worst of batch at most {w[0]:.2f}x ({w[1]}, C={w[2]})")
        out.append(_finding("[deltainv] the default recipe stays within 3x of fla ieee's error on every "
                            "typical and stress input at every C", m[0] <= 3.0, ev))

    # deltainv's own finding: the paper's MXR in a 10-bit format is not safe on repeated tokens.
    if "repeated_tokens" in report.config.inputs and _have(report, ["mxr", "substitution"], ["fp16", "fp32"]):
        big_c = [C for C in report.config.sizes if C >= 64] or list(report.config.sizes)
        worst = {(m, p): max(report.get(m, p, "repeated_tokens", C)["rel_fro"] for C in big_c)
                 for m in ("mxr", "mxr_refine", "substitution") if m in report.config.methods
                 for p in ("fp16", "fp32") if p in report.config.precisions}
        ok = worst[("mxr", "fp16")] >= 1e-2 and worst[("substitution", "fp16")] <= 1e-2 \
            and worst.get(("mxr_refine", "fp32"), 0.0) <= 1e-6
        ev = ", ".join(f"{m}/{p} {_fmt(v)}" for (m, p), v in worst.items()) + f" (worst over C in {big_c})"
        out.append(_finding("[deltainv] mxr with 10-bit operands is wrong on runs of repeated tokens; "
                            "substitution stays accurate and mxr_refine in fp32 repairs mxr", ok, ev))

    if report.dplr:
        out.append(_dplr_finding(report))
    if report.gdn:
        out.append(_finding(*gdn_step.finding(report.gdn)))
    return out


# ----------------------------------------------------------------------------------------------
# Output


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf"
    if x == 0:
        return "0"
    return f"{x:.1e}"


def _input_table(report: Report, kind: str) -> tuple[list[str], list[list[str]]]:
    sizes = report.config.sizes
    header = ["method", "prec"] + [f"C={C}" for C in sizes] + ["max|err|", "residual", "non-finite"]
    body = []
    for name in report.config.methods:
        for precision in report.config.precisions:
            rows = [report.get(name, precision, kind, C) for C in sizes]
            if any(r is None for r in rows):
                continue
            cells = [_fmt(r["rel_fro"]) for r in rows]
            body.append([name, precision, *cells,
                         _fmt(max(r["max_abs"] for r in rows)),
                         _fmt(max(r["residual"] for r in rows)),
                         str(sum(r["nonfinite"] for r in rows))])
    return header, body


def format_table(report: Report) -> str:
    """Plain-text tables (one per input: relative Frobenius error per C, worst of the rest)."""
    lines = []
    for kind in report.config.inputs:
        header, body = _input_table(report, kind)
        widths = [max(len(x) for x in col) for col in zip(header, *body)]
        spec = INPUTS[kind]
        lines.append(f"\n== {kind}: {spec.summary}  (relative Frobenius error vs float64, worst of "
                     f"{report.config.n}; max|err|, residual and non-finite over all C)")
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for row in body:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    if report.dplr:
        header, body = _dplr_table(report)
        widths = [max(len(x) for x in col) for col in zip(header, *body)]
        lines.append("\n== dplr study: " + _DPLR_TITLE.format(n=report.config.n))
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for row in body:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    if report.gdn:
        header, body = gdn_step.table(report.gdn)
        widths = [max(len(x) for x in col) for col in zip(header, *body)]
        lines.append("\n== GDN step study: " + _gdn_title(report))
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for row in body:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    lines.append("\n== findings (the paper's, checked)")
    for f in report.findings:
        mark = {True: "PASS", False: "FAIL", None: "SKIP"}[f["holds"]]
        lines.append(f"[{mark}] {f['claim']}\n       {f['evidence']}")
    return "\n".join(lines)


def format_markdown(report: Report) -> str:
    m = report.meta
    out = [
        "# deltainv numerics report",
        "",
        f"deltainv {m.get('deltainv')}, torch {m.get('torch')}, {m.get('machine')}, "
        f"{report.config.n} matrices per (input, C), seed {report.config.seed}, {m.get('seconds')} s.",
        "Relative Frobenius error of `(I + A)^-1` against float64 (worst over the batch); precisions are "
        "emulated operand roundings with fp32 accumulation.",
        "",
        "## Findings",
        "",
    ]
    for f in report.findings:
        mark = {True: "holds", False: "**does not hold**", None: "skipped"}[f["holds"]]
        out.append(f"- {f['claim']}: {mark}. {f['evidence']}")
    for kind in report.config.inputs:
        header, body = _input_table(report, kind)
        out += ["", f"## `{kind}`: {INPUTS[kind].summary}", "",
                "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in body]
    if report.dplr:
        header, body = _dplr_table(report)
        out += ["", "## DPLR study", "", _DPLR_TITLE.format(n=report.config.n) + ".", "",
                "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in body]
    if report.gdn:
        header, body = gdn_step.table(report.gdn)
        out += ["", "## GDN step study", "", _gdn_title(report) + ".", "",
                "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(out) + "\n"


def _gdn_title(report: Report) -> str:
    return gdn_step.TITLE.format(T=gdn_step.SHAPE["T"], n=gdn_sequences(report.config.n))


def write_json(report: Report, path: str) -> None:
    with open(path, "w") as f:
        json.dump(report.as_dict(), f, indent=1)


def plot(report: Report, path: str) -> None:
    """One PNG: a heatmap of every cell, plus three panels that show the paper's findings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    c = report.config
    row_keys = [(mth, p) for mth in c.methods for p in c.precisions if p in METHODS[mth].precisions]
    col_keys = [(k, C) for k in c.inputs for C in c.sizes]
    grid = np.full((len(row_keys), len(col_keys)), np.nan)
    bad = np.zeros_like(grid, dtype=bool)
    for i, (mth, p) in enumerate(row_keys):
        for j, (k, C) in enumerate(col_keys):
            r = report.get(mth, p, k, C)
            if r is None:
                continue
            if r["nonfinite"] or not math.isfinite(r["rel_fro"]):
                bad[i, j] = True
            else:
                grid[i, j] = math.log10(max(r["rel_fro"], 1e-9))

    fig = plt.figure(figsize=(max(14, 0.32 * len(col_keys) + 4), 0.26 * len(row_keys) + 9))
    gs = fig.add_gridspec(2, 3, height_ratios=[0.26 * len(row_keys) + 1.5, 4.5], hspace=0.22, wspace=0.28)
    ax = fig.add_subplot(gs[0, :])
    cmap = plt.get_cmap("RdYlGn_r").copy()
    cmap.set_bad("#303030")
    im = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, vmin=-8, vmax=0, interpolation="nearest")
    ys, xs = np.nonzero(bad)
    ax.scatter(xs, ys, marker="x", color="white", s=18, linewidths=1.2, label="non-finite output")
    ax.set_yticks(range(len(row_keys)), [f"{mth} / {p}" for mth, p in row_keys], fontsize=7)
    ax.set_xticks(range(len(col_keys)), [str(C) for _, C in col_keys], fontsize=6)
    for j in range(len(c.sizes), len(col_keys), len(c.sizes)):
        ax.axvline(j - 0.5, color="white", lw=2)
    for j, k in enumerate(c.inputs):
        ax.text(j * len(c.sizes) + (len(c.sizes) - 1) / 2, -0.8, k, ha="center", va="bottom", fontsize=7)
    for i in range(1, len(row_keys)):
        if row_keys[i][0] != row_keys[i - 1][0]:
            ax.axhline(i - 0.5, color="white", lw=2)
    fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01, label="log10 relative Frobenius error")
    ax.legend(loc="upper right", bbox_to_anchor=(1.0, -0.04), fontsize=7, frameon=False)
    fig.suptitle(f"deltainv numerics: (I + A)^-1 vs float64, every method x precision (rows) x input x chunk "
                 f"size C (columns), worst of {c.n} matrices; grey = non-finite", fontsize=10, y=0.995)

    def series(mth, p, k):
        ys = []
        for C in c.sizes:
            r = report.get(mth, p, k, C)
            v = r["rel_fro"] if r else float("nan")
            ys.append(1e3 if not math.isfinite(v) else max(v, 1e-9))
        return ys

    panels = [
        ("fp32 on the paper's test matrix", "paper_uniform", [(m, "fp32") for m in c.methods]),
        ("fp16 (solid) vs bf16 (dashed), GDN", "gdn", [(m, p) for m in c.methods if m not in ("torch", "product")
                                                       for p in ("fp16", "bf16")]),
        ("mxr vs refinement, fp32, correlated keys", "correlated_keys",
         [(m, "fp32") for m in ("substitution", "mxr", "mxr_refine", "torch")]),
    ]
    colors = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for col, (title, kind, keys) in enumerate(panels):
        axp = fig.add_subplot(gs[1, col])
        if kind not in c.inputs:
            axp.set_axis_off()
            continue
        for mth, p in keys:
            if mth not in c.methods or p not in c.precisions or p not in METHODS[mth].precisions:
                continue
            axp.plot(c.sizes, series(mth, p, kind), marker="o", ms=3, color=colors.get(mth),
                     ls="--" if p == "bf16" else "-", label=f"{mth}" if p != "bf16" else None)
        axp.set_xscale("log", base=2)
        axp.set_yscale("log")
        axp.set_xticks(c.sizes, [str(s) for s in c.sizes])
        axp.set_ylim(1e-9, 3e3)
        axp.axhline(1e3, color="grey", lw=0.5, ls=":")
        axp.text(c.sizes[0], 1.3e3, "non-finite", fontsize=6, color="grey")
        axp.set_title(title, fontsize=9)
        axp.set_xlabel("chunk size C", fontsize=8)
        axp.set_ylabel("rel. Frobenius error", fontsize=8)
        axp.tick_params(labelsize=7)
        axp.legend(fontsize=6, ncol=2)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def parse_list(value: str | None, choices: Sequence[Any], cast=str) -> tuple[Any, ...] | None:
    """``"a,b"`` -> ``("a", "b")`` checked against ``choices``; ``None`` -> ``None``."""
    if value is None:
        return None
    items = tuple(cast(v.strip()) for v in value.split(",") if v.strip())
    unknown = [v for v in items if v not in choices]
    if unknown or not items:
        raise ValueError(f"unknown value(s) {unknown or value!r}; choose from {', '.join(map(str, choices))}")
    return items
