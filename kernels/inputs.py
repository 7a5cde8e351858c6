"""Input generators: the chunk matrices ``A`` that delta-rule layers actually invert, plus adversarial ones.

Every generator returns ``A``: ``[n, C, C]``, strictly lower triangular, built in float64 and
rounded once to the requested dtype (float32 by default, what the engines' ``kkt`` kernels
store). The reference inverse is then computed from that rounded ``A``, so measured errors are
the inversion's own.

Families (``A_ij`` for ``i > j``; ``k`` unit-norm keys, ``G`` in-chunk cumulative log-decay):

- GDN (Gated DeltaNet, Qwen3-Next / Qwen3.5): ``beta_i (k_i . k_j) exp(G_i - G_j)``, one gate per
  token; per-token log-decay from 0 (gate = 1, nothing damped: the hard case) down to about -20.
- KDA (Kimi Delta Attention): ``beta_i sum_c k_ic k_jc exp(G_ic - G_jc)``, per-channel gates.
- DPLR (RWKV-7): ``sum_c kk_ic kk_jc lr_jc exp(G_(i-1)c - G_jc)``, the ``a = -kk``,
  ``b = kk * lr`` vectors with in-context learning rate ``lr`` in (0, 1) and per-channel decay
  ``w = exp(-0.6065 sigmoid(x))`` (fla's RWKV-7 bound).
- ``neg_eigval``: GDN with ``beta`` up to 2 (``allow_neg_eigval``).
- stress: a run of one repeated token in a slow-decay head (identical keys, constant beta and
  gate), which real text produces (whitespace, ``====`` rules, repeated characters).
- adversarial: identical keys, highly correlated keys, identical keys with beta in (1, 2) (an
  ``allow_neg_eigval`` model reading a run of repeated tokens), the all-ones strictly lower
  matrix, and the paper's own test matrix (off-diagonal ``0.5 U[0, 1)``).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch

_F64 = torch.float64


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _log_uniform(shape, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(shape, generator=gen, dtype=_F64)
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def _gate_scales(n: int, gen: torch.Generator, hi: float, zero_frac: float = 0.2) -> torch.Tensor:
    """Per-chunk decay scales: a fraction exactly 0 (gate = 1), the rest log-uniform in [1e-3, hi]."""
    scale = _log_uniform((n,), 1e-3, hi, gen)
    zero = torch.rand(n, generator=gen, dtype=_F64) < zero_frac
    return torch.where(zero, torch.zeros_like(scale), scale)


def _strict_lower(M: torch.Tensor) -> torch.Tensor:
    return torch.tril(M, -1)


def gdn_matrix(k: torch.Tensor, beta: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``strictLower(diag(beta) K K^T * exp(g_i - g_j))``: k ``[n, C, d]``, beta/g ``[n, C]`` -> ``[n, C, C]``."""
    gram = k @ k.mT
    # Only i > j survives, where g_i - g_j <= 0, so exp never overflows; mask first anyway.
    diff = torch.tril(g[:, :, None] - g[:, None, :], -1)
    return _strict_lower(beta[:, :, None] * gram * torch.exp(diff))


def per_channel_matrix(left: torch.Tensor, right: torch.Tensor, gl: torch.Tensor, gr: torch.Tensor) -> torch.Tensor:
    """``A_ij = sum_c left_ic right_jc exp(gl_ic - gr_jc)`` for i > j: all ``[n, C, d]`` -> ``[n, C, C]``.

    Built with a ``[C, C, d]`` exponent per chunk (never the overflow-prone ``exp(gl) exp(-gr)``
    factorisation), a few chunks at a time to bound memory.
    """
    n, C, _ = left.shape
    out = torch.empty(n, C, C, dtype=left.dtype)
    mask = torch.tril(torch.ones(C, C, dtype=torch.bool), -1)[:, :, None]
    step = max(1, (1 << 24) // (C * C * left.shape[-1]))
    for s in range(0, n, step):
        e = slice(s, s + step)
        diff = gl[e][:, :, None, :] - gr[e][:, None, :, :]
        decay = torch.exp(torch.where(mask, diff, torch.zeros((), dtype=diff.dtype)))
        out[e] = torch.einsum("nic,njc,nijc->nij", left[e], right[e], decay)
    return _strict_lower(out)


def _gdn(n: int, C: int, gen: torch.Generator, *, d: int, beta_max: float = 1.0,
         gate_hi: float = 20.0, zero_frac: float = 0.2) -> torch.Tensor:
    k = _unit(torch.randn(n, C, d, generator=gen, dtype=_F64))
    beta = beta_max * torch.rand(n, C, generator=gen, dtype=_F64)
    scale = _gate_scales(n, gen, gate_hi, zero_frac) if gate_hi > 0 else torch.zeros(n, dtype=_F64)
    log_decay = -scale[:, None] * torch.rand(n, C, generator=gen, dtype=_F64)
    return gdn_matrix(k, beta, torch.cumsum(log_decay, dim=1))


def _kda(n: int, C: int, gen: torch.Generator, *, d: int = 128) -> torch.Tensor:
    k = _unit(torch.randn(n, C, d, generator=gen, dtype=_F64))
    beta = torch.rand(n, C, generator=gen, dtype=_F64)
    scale = _gate_scales(n, gen, 5.0)
    G = torch.cumsum(-scale[:, None, None] * torch.rand(n, C, d, generator=gen, dtype=_F64), dim=1)
    return beta[:, :, None] * per_channel_matrix(k, k, G, G)


def _dplr(n: int, C: int, gen: torch.Generator, *, d: int = 64) -> torch.Tensor:
    kk = _unit(torch.randn(n, C, d, generator=gen, dtype=_F64))
    lr = torch.sigmoid(torch.randn(n, C, d, generator=gen, dtype=_F64))
    log_w = -0.6065306597126334 * torch.sigmoid(2.0 * torch.randn(n, C, d, generator=gen, dtype=_F64))
    G = torch.cumsum(log_w, dim=1)
    # The decay between tokens j and i runs over j+1 .. i-1: exclusive on the row side.
    G_excl = G - log_w
    return per_channel_matrix(kk, kk * lr, G_excl, G)


def _dplr_repeated(n: int, C: int, gen: torch.Generator, *, d: int = 64) -> torch.Tensor:
    """A run of one repeated token in an RWKV-7 head: the same ``kk``, learning rate 0.9..1 and a
    slow decay (``w`` in (-1e-3, 0)) at every position, so ``A_ij ~ kk . (kk * lr)`` is near 1
    everywhere below the diagonal (the case FlashKDA's fp16 Neumann inverse turned to NaN on)."""
    kk = _unit(torch.randn(n, 1, d, generator=gen, dtype=_F64)).expand(n, C, d)
    lr = (0.9 + 0.1 * torch.rand(n, 1, d, generator=gen, dtype=_F64)).expand(n, C, d)
    log_w = (-1e-3 * torch.rand(n, 1, d, generator=gen, dtype=_F64)).expand(n, C, d)
    G = torch.cumsum(log_w, dim=1)
    return per_channel_matrix(kk, kk * lr, G - log_w, G)


def _dplr_lower_bound(n: int, C: int, gen: torch.Generator, *, d: int = 64) -> torch.Tensor:
    """RWKV-7 with every gate at fla's safe-gate lower bound ``w = -0.6065`` (fastest decay)."""
    kk = _unit(torch.randn(n, C, d, generator=gen, dtype=_F64))
    lr = torch.sigmoid(torch.randn(n, C, d, generator=gen, dtype=_F64))
    log_w = torch.full((n, C, d), -0.6065306597126334, dtype=_F64)
    G = torch.cumsum(log_w, dim=1)
    return per_channel_matrix(kk, kk * lr, G - log_w, G)


def _identical_keys(n: int, C: int, gen: torch.Generator, *, d: int = 64, beta_min: float = 0.0,
                    beta_max: float = 1.0) -> torch.Tensor:
    k = _unit(torch.randn(n, 1, d, generator=gen, dtype=_F64)).expand(n, C, d)
    beta = beta_min + (beta_max - beta_min) * torch.rand(n, C, generator=gen, dtype=_F64)
    return gdn_matrix(k, beta, torch.zeros(n, C, dtype=_F64))


def _correlated_keys(n: int, C: int, gen: torch.Generator, *, d: int = 64, noise: float = 0.1) -> torch.Tensor:
    shared = _unit(torch.randn(n, 1, d, generator=gen, dtype=_F64))
    jitter = noise * _unit(torch.randn(n, C, d, generator=gen, dtype=_F64))
    k = _unit(shared + jitter)  # cos(k_i, k_j) ~ 0.99
    beta = torch.rand(n, C, generator=gen, dtype=_F64)
    return gdn_matrix(k, beta, torch.zeros(n, C, dtype=_F64))


def _repeated_tokens(n: int, C: int, gen: torch.Generator, *, d: int = 128) -> torch.Tensor:
    """A run of one repeated token in a slow-decay head: after the short conv and L2 norm the keys
    are identical, and beta and the gate are the same for every position of the run."""
    k = _unit(torch.randn(n, 1, d, generator=gen, dtype=_F64)).expand(n, C, d)
    beta = (0.5 + 0.5 * torch.rand(n, 1, generator=gen, dtype=_F64)).expand(n, C)
    log_decay = (-0.01 * torch.rand(n, 1, generator=gen, dtype=_F64)).expand(n, C)
    return gdn_matrix(k, beta, torch.cumsum(log_decay, dim=1))


def _all_ones(n: int, C: int, gen: torch.Generator) -> torch.Tensor:
    return _strict_lower(torch.ones(n, C, C, dtype=_F64))


def _paper_uniform(n: int, C: int, gen: torch.Generator) -> torch.Tensor:
    return _strict_lower(0.5 * torch.rand(n, C, C, generator=gen, dtype=_F64))


@dataclass(frozen=True)
class InputKind:
    """A generator of chunk matrices.

    Attributes:
        name: registry key (``deltainv numerics --inputs``).
        family: ``gdn``, ``kda``, ``dplr`` (random draws of real activations), ``stress`` (a
            worst case real layers do produce) or ``adversarial`` (synthetic).
        summary: one line for reports.
        beta_max: largest ``beta`` (or learning rate) used.
        build: ``(n, C, generator) -> float64 [n, C, C]``.
    """

    name: str
    family: str
    summary: str
    beta_max: float
    build: Callable[[int, int, torch.Generator], torch.Tensor]

    @property
    def typical(self) -> bool:
        """Random real-activation statistics with ``beta <= 1``: every stable method must be accurate."""
        return self.family in ("gdn", "kda", "dplr") and self.beta_max <= 1.0


def _kind(name, family, summary, build, **kw) -> InputKind:
    return InputKind(name, family, summary, kw.get("beta_max", 1.0), lambda n, C, gen: build(n, C, gen, **kw))


_KINDS = (
    _kind("gdn", "gdn", "GDN, d=128, beta in (0,1), log-decay per token 0 .. -20", _gdn, d=128),
    _kind("gdn_d64", "gdn", "GDN, d=64, beta in (0,1), log-decay per token 0 .. -20", _gdn, d=64),
    _kind("gdn_nogate", "gdn", "GDN, d=64, gate = 1 (no decay): the undamped hard case", _gdn, d=64, gate_hi=0.0),
    _kind("kda", "kda", "KDA, d=128, per-channel log-decay 0 .. -5", _kda),
    _kind("dplr", "dplr", "RWKV-7 DPLR, d=64, a=-kk, b=kk*lr, lr in (0,1)", _dplr),
    _kind("neg_eigval", "gdn", "GDN allow_neg_eigval: beta in (0,2), d=64", _gdn, beta_max=2.0, d=64),
    _kind("repeated_tokens", "stress", "a run of one repeated token: identical keys, beta 0.5..1, decay > -0.01",
          _repeated_tokens),
    _kind("identical_keys", "adversarial", "one key repeated, beta in (0,1), gate = 1", _identical_keys),
    _kind("correlated_keys", "adversarial", "keys with cosine ~0.99, beta in (0,1), gate = 1", _correlated_keys),
    _kind("repeated_beta2", "adversarial", "one key repeated, beta in (1,2), gate = 1 (neg-eigval, repeated tokens)",
          _identical_keys, beta_min=1.0, beta_max=2.0),
    _kind("all_ones", "adversarial", "the all-ones strictly lower matrix", _all_ones),
    _kind("paper_uniform", "adversarial", "the paper's test matrix: off-diagonal 0.5*U[0,1)", _paper_uniform),
)

#: Name -> :class:`InputKind`.
INPUTS: Mapping[str, InputKind] = MappingProxyType({k.name: k for k in _KINDS})

#: RWKV-7 kinds used by the numerics report's DPLR study (fla's fp16 recipe beside deltainv's
#: methods) and the DPLR tests, outside the default method x precision grid.
DPLR_STUDY_INPUTS: Mapping[str, InputKind] = MappingProxyType({k.name: k for k in (
    _kind("dplr_repeated", "stress", "RWKV-7 run of one repeated token: same kk, lr 0.9..1, decay > -1e-3",
          _dplr_repeated),
    _kind("dplr_lower_bound", "dplr", "RWKV-7 with every gate at the safe-gate lower bound w = -0.6065",
          _dplr_lower_bound),
)})


def get_input(name: str) -> InputKind:
    kind = INPUTS.get(name) or DPLR_STUDY_INPUTS.get(name)
    if kind is None:
        raise ValueError(f"unknown input kind {name!r}; choose one of {', '.join([*INPUTS, *DPLR_STUDY_INPUTS])}")
    return kind


def chunk_matrices(
    kind: str,
    n: int,
    C: int,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``n`` chunk matrices ``A`` of size ``C x C`` from generator ``kind``: ``[n, C, C]`` in ``dtype``.

    Deterministic in ``(kind, n, C, seed)``.
    """
    # Each kind draws from its own stream, so two kinds never share keys or betas by accident.
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(kind.encode()))
    A = get_input(kind).build(n, C, gen)
    return A.to(dtype=dtype, device=device)


def engine_layout(
    kind: str,
    B: int,
    T: int,
    H: int,
    BT: int,
    *,
    cu_seqlens: torch.Tensor | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """An engine-layout ``A``: ``[B, T, H, BT]``, one generated matrix per (chunk, head).

    With ``cu_seqlens`` (B must be 1) chunks restart at every sequence start and a sequence's
    last chunk is the leading block of a generated BT x BT matrix, as ``kkt`` would produce it.
    Entries of a chunk's rows beyond its own columns are zero.
    """
    starts: list[int] = []
    lengths: list[int] = []
    bounds = cu_seqlens.tolist() if cu_seqlens is not None else [b * T for b in range(B + 1)]
    for bos, eos in zip(bounds, bounds[1:]):
        for s in range(bos, eos, BT):
            starts.append(s)
            lengths.append(min(BT, eos - s))
    mats = chunk_matrices(kind, len(starts) * H, BT, seed=seed, dtype=torch.float64)
    mats = mats.reshape(len(starts), H, BT, BT)
    flat = torch.zeros(B * T, H, BT, dtype=torch.float64)
    for c, (s, ln) in enumerate(zip(starts, lengths)):
        block = mats[c, :, :ln, :].clone()
        block[..., ln:] = 0
        flat[s : s + ln] = block.transpose(0, 1)
    return flat.reshape(B, T, H, BT).to(dtype=dtype, device=device)
