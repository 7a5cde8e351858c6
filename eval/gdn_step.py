"""The whole GDN intra-chunk step against float64: ``W``, ``U`` and the layer output ``o``.

The inverse's error alone does not say what a user gets: the engines round the inverse and the
``W``/``U`` operands to bf16 (fla 0.6.0 stores ``A`` in bf16 and runs ``recompute_w_u`` on bf16
tensor cores). This study runs fla's recipe and deltainv's side by side at Qwen3-Next's head shape
(K = V = 128, two value heads per key head, BT = 64) on typical and stress inputs, and measures

- ``W = T (beta exp(G) K)`` and ``U = T (beta V)`` as the products produce them (fp32, before an
  engine stores them in bf16, so the inverse's and the operands' roundings are what is measured);
- ``o``, the layer output, from those ``W``/``U`` through the same fp32 chunk recurrence for every
  arm, so differences between arms are the intra step's;

each against float64 (``o``: the token-by-token recurrence; ``W``/``U``: the exact inverse and products
of the same bf16-valued inputs), as the relative Frobenius error per (sequence, value head), worst and
median, plus the largest absolute error and non-finite entries.

Inputs (per-token gates ``g = -rate_h softplus(x)``, natural log, ``rate_h`` log-uniform per head):

- ``qwen3_next``: unit-norm ``q``/``k`` (Qwen3-Next normalizes them), ``v ~ N(0, 1)``,
  ``beta = sigmoid(N(0, 1))``, decay rates in [1e-3, 1];
- ``repeated_tokens``: each sequence is runs of 32 copies of one token (key, value, beta and gate),
  in slow heads (rates in [1e-4, 1e-2]): what whitespace or ``====`` rules produce;
- ``no_decay``: ``qwen3_next`` with every gate 0 (the hard case for the inverse).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from deltainv.kernels.chunking import FULL_WU_PRECISION, default_wu_precision
from deltainv.kernels.gdn import (
    chunk_gated_delta_rule,
    chunk_gated_delta_rule_fwd_intra,
    chunk_local_cumsum,
    naive_recurrent_gated_delta_rule,
)
from deltainv.kernels.registry import DEFAULT_METHOD, DEFAULT_PRECISION

from .metrics import reference_inverse

#: Qwen3-Next's GDN head shape, with fewer heads (2 key, 4 value) and short sequences for a CPU.
SHAPE = {"T": 256, "H": 2, "HV": 4, "K": 128, "V": 128, "BT": 64}
INPUTS: tuple[str, ...] = ("qwen3_next", "repeated_tokens", "no_decay")
#: (label, method, precision, wu_precision): fla 0.6.0's recipe, fla ieee, then the default inverse
#: with the W/U precision bf16 models get by default and the one fp32 inputs get.
BF16_WU = default_wu_precision(torch.bfloat16)
ARMS: tuple[tuple[str, str, str, str], ...] = (
    ("fla 0.6.0: substitution, tf32 merges, bf16 A and W/U operands", "substitution", "tf32", "bf16"),
    ("substitution fp32 (fla ieee), fp32 W/U", "substitution", "fp32", "fp32"),
    (f"{DEFAULT_METHOD} {DEFAULT_PRECISION}, {BF16_WU} W/U (default for bf16 models)", DEFAULT_METHOD,
     DEFAULT_PRECISION, BF16_WU),
    (f"{DEFAULT_METHOD} {DEFAULT_PRECISION}, {FULL_WU_PRECISION} W/U (default for fp32 inputs)", DEFAULT_METHOD,
     DEFAULT_PRECISION, FULL_WU_PRECISION),
)
FLA_ARM = ARMS[0][0]
DEFAULT_ARM = ARMS[2][0]
#: Not an arm: the float64 W and U rounded once to bf16, which is what a bf16 engine stores whatever
#: the recipe; the floor every bf16 arm's W/U error sits on.
FLOOR = "float64 W/U stored in bf16 (the storage floor of a bf16 engine)"
QUANTITIES: tuple[str, ...] = ("W", "U", "o")


def make_inputs(kind: str, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``n`` sequences of :data:`SHAPE` as fp32 tensors holding bf16 values (``g`` fp32)."""
    if kind not in INPUTS:
        raise ValueError(f"unknown GDN step input {kind!r} (choose from {', '.join(INPUTS)})")
    s = SHAPE
    gen = torch.Generator().manual_seed(seed)
    B, T, H, HV, K, V = n, s["T"], s["H"], s["HV"], s["K"], s["V"]

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    def unit(x):
        return x / x.norm(dim=-1, keepdim=True)

    lo, hi = (1e-4, 1e-2) if kind == "repeated_tokens" else (1e-3, 1.0)
    rate = torch.exp(math.log(lo) + torch.rand(B, 1, HV, generator=gen) * (math.log(hi) - math.log(lo)))
    q, k, v = unit(randn(B, T, H, K)), unit(randn(B, T, H, K)), randn(B, T, HV, V)
    beta, x = torch.sigmoid(randn(B, T, HV)), randn(B, T, HV)
    if kind == "repeated_tokens":
        # Runs of 32 copies of one token: index every token by the first of its run.
        src = torch.arange(T) // 32 * 32
        q, k, v, beta, x = q[:, src], k[:, src], v[:, src], beta[:, src], x[:, src]
    g = -rate * torch.nn.functional.softplus(x)
    if kind == "no_decay":
        g = torch.zeros_like(g)
    bf16 = (lambda t: t.to(torch.bfloat16).float())  # the model's activations are bf16
    return {"q": bf16(q), "k": bf16(k), "v": bf16(v), "beta": bf16(beta), "g": g.float()}


def exact_wu(x: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``W``, ``U`` in float64 from the exact inverse: ``[B, T, HV, K]``, ``[B, T, HV, V]``."""
    BT = SHAPE["BT"]
    k, v, beta, g = (x[n].double() for n in ("k", "v", "beta", "g"))
    B, T, H, K = k.shape
    HV = v.shape[2]
    k = k.repeat_interleave(HV // H, 2)

    def chunks(t):  # [B, T, HV, ...] -> [B, NT, HV, BT, ...]
        return t.reshape(B, T // BT, BT, HV, *t.shape[3:]).transpose(2, 3)

    kc, vc, bc = chunks(k), chunks(v), chunks(beta)
    G = chunks(g).cumsum(-1)
    Ai = reference_inverse(bc[..., None] * (kc @ kc.mT) * torch.exp(G[..., :, None] - G[..., None, :]))
    W = Ai @ (kc * (bc * torch.exp(G))[..., None])
    U = Ai @ (vc * bc[..., None])

    def back(t):
        return t.transpose(2, 3).reshape(B, T, HV, t.shape[-1])

    return back(W), back(U)


def _stats(got: torch.Tensor, truth: torch.Tensor) -> dict[str, Any]:
    """Relative Frobenius error per (sequence, head) of ``[B, T, HV, D]`` tensors: worst and median."""
    got, truth = got.double(), truth.double()
    finite = torch.isfinite(got).all(dim=(1, 3))
    rel = (got - truth).norm(dim=(1, 3)) / truth.norm(dim=(1, 3)).clamp_min(1e-300)
    rel = torch.where(finite, rel, torch.full_like(rel, math.inf))
    return {"rel_fro": rel.max().item(), "rel_fro_median": rel.median().item(),
            "max_abs": (got - truth).abs().max().item() if bool(finite.all()) else math.inf,
            "nonfinite": int((~torch.isfinite(got)).sum())}


def run(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Every arm on every input: one row per (arm, input, quantity)."""
    rows = []
    BT = SHAPE["BT"]
    for i, kind in enumerate(INPUTS):
        x = make_inputs(kind, n, seed + 7919 * i)
        W64, U64 = exact_wu(x)
        o64, _ = naive_recurrent_gated_delta_rule(x["q"], x["k"], x["v"], x["g"], x["beta"])
        gcum = chunk_local_cumsum(x["g"], BT)
        for label, method, precision, wu in ARMS:
            w, u, _ = chunk_gated_delta_rule_fwd_intra(x["k"], x["v"], gcum, x["beta"], chunk_size=BT,
                                                       method=method, precision=precision, wu_precision=wu)
            o, _ = chunk_gated_delta_rule(x["q"], x["k"], x["v"], x["g"], x["beta"], chunk_size=BT,
                                          method=method, precision=precision, wu_precision=wu)
            for name, got, truth in (("W", w, W64), ("U", u, U64), ("o", o, o64)):
                rows.append({"arm": label, "input": kind, "quantity": name, **_stats(got, truth)})
        for name, truth in (("W", W64), ("U", U64)):
            rows.append({"arm": FLOOR, "input": kind, "quantity": name, **_stats(truth.bfloat16(), truth)})
    return rows


def get(rows: list[dict[str, Any]], arm: str, kind: str, quantity: str) -> dict[str, Any]:
    return next(r for r in rows if r["arm"] == arm and r["input"] == kind and r["quantity"] == quantity)


def finding(rows: list[dict[str, Any]]) -> tuple[str, bool, str]:
    """The default intra step is no less accurate than fla 0.6.0's (within 10%, the spread between
    seeds of two recipes with the same bf16 roundings) on every input and quantity."""
    worst = max((get(rows, DEFAULT_ARM, k, q)["rel_fro"] / max(get(rows, FLA_ARM, k, q)["rel_fro"], 1e-300), k, q)
                for k in INPUTS for q in QUANTITIES)
    ev = "; ".join(f"{k}: o {get(rows, FLA_ARM, k, 'o')['rel_fro']:.1e} (fla) vs "
                   f"{get(rows, DEFAULT_ARM, k, 'o')['rel_fro']:.1e} (default)" for k in INPUTS)
    ev += f"; largest ratio default/fla {worst[0]:.2f} ({worst[1]}, {worst[2]})"
    return ("[deltainv] the default GDN intra step (inverse, then W and U) is as accurate as fla 0.6.0's or "
            "better on W, U and the layer output, on every input", worst[0] <= 1.1, ev)


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["arm", *(f"{k} {q}" for k in INPUTS for q in QUANTITIES), "non-finite"]
    body = []
    for label in [a[0] for a in ARMS] + [FLOOR]:
        cells = [next((r for r in rows if r["arm"] == label and r["input"] == k and r["quantity"] == q), None)
                 for k in INPUTS for q in QUANTITIES]
        body.append([label, *(f"{c['rel_fro']:.1e}" if c else "-" for c in cells),
                     str(sum(c["nonfinite"] for c in cells if c))])
    return header, body


TITLE = ("GDN intra step at Qwen3-Next's head shape (K = V = 128, 2 value heads per key head, BT = 64, "
         "T = {T}, {n} sequences per input): relative Frobenius error vs float64, worst over (sequence, value head); "
         "W and U as the products give them (fp32), o through the same fp32 recurrence for every arm")
