"""Paired statistics for an accuracy-parity gate: baseline vs candidate on the same items.

Per item i, ``a_i`` (baseline) and ``b_i`` (candidate) are 0/1 correctness, paired by ``doc_id``.
``n11`` both right, ``n10`` baseline only, ``n01`` candidate only, ``n00`` both wrong; the
difference is ``delta = (n01 - n10) / n`` (candidate minus baseline).

The decision is non-inferiority against a margin ``delta_margin`` (default 1 point = 0.01):

- the lower confidence bound ``L`` of ``delta`` is the more conservative of a paired bootstrap
  percentile bound and an exact bound, ``CP_lower(n01) - CP_upper(n10)`` (Clopper-Pearson, each at
  ``alpha / 2``). The exact bound keeps a degenerate bootstrap (no discordant items, so a [0, 0]
  interval) from passing a task too small to tell: with nothing discordant it still needs
  ``n > ln(alpha/2) / ln(1 - delta_margin)`` items (368 for 1 point at alpha = 0.05);
- **pass** if ``L > -delta_margin`` (non-inferiority shown);
- **fail** if the observed loss reaches the margin (``delta <= -delta_margin``);
- **inconclusive** otherwise: the items cannot support the margin, and the report gives the
  number needed, ``n = (z_{1-alpha} + z_{1-beta})^2 r / delta_margin^2`` at the observed
  discordance rate ``r`` (never below the exact-bound minimum).

The exact McNemar test answers another question (is there *any* difference?); a significant loss
is reported as a flag beside the verdict, not used as the pass criterion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as st

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


@dataclass(frozen=True)
class PairedCounts:
    n11: int
    n10: int
    n01: int
    n00: int

    @property
    def n(self) -> int:
        return self.n11 + self.n10 + self.n01 + self.n00

    @property
    def discordant(self) -> int:
        return self.n10 + self.n01


def paired_counts(a: Sequence[bool | float], b: Sequence[bool | float]) -> PairedCounts:
    """Discordance table of two equally long 0/1 sequences (baseline ``a``, candidate ``b``)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired results must be two equally long 1-D sequences; got {a.shape} and {b.shape}")
    if not np.isin(a, (0.0, 1.0)).all() or not np.isin(b, (0.0, 1.0)).all():
        raise ValueError("paired results must be 0/1 correctness values")
    a, b = a.astype(bool), b.astype(bool)
    return PairedCounts(int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum()), int((~a & ~b).sum()))


def mcnemar_exact(n10: int, n01: int) -> float:
    """Two-sided exact McNemar p-value: ``n01 ~ Binomial(n10 + n01, 1/2)`` under no difference."""
    d = n10 + n01
    if d == 0:
        return 1.0
    return float(min(1.0, 2.0 * st.binom.cdf(min(n10, n01), d, 0.5)))


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """Exact two-sided ``1 - alpha`` interval for a binomial proportion ``k / n``."""
    lo = 0.0 if k == 0 else float(st.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(st.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], *, iters: int = 10_000, alpha: float = 0.05, seed: int = 0,
    clusters: Sequence[object] | None = None,
) -> tuple[float, float]:
    """Percentile interval (two-sided ``1 - 2 alpha``, i.e. one-sided ``1 - alpha`` bounds) of
    ``mean(b) - mean(a)``, resampling items (or whole ``clusters``) jointly for both arms."""
    diff = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    rng = np.random.default_rng(seed)
    n = len(diff)
    if clusters is None:
        # Item resampling only changes how many -1 / +1 / 0 differences are drawn: sample those counts.
        p = np.array([(diff < 0).sum(), (diff > 0).sum(), (diff == 0).sum()], dtype=float) / n
        counts = rng.multinomial(n, p, size=iters)
        means = (counts[:, 1] - counts[:, 0]) / n
    else:
        labels, inverse = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
        sums = np.bincount(inverse, weights=diff, minlength=len(labels))
        sizes = np.bincount(inverse, minlength=len(labels))
        means = np.empty(iters)
        for s in range(0, iters, 1000):  # bounded memory: 1000 resamples at a time
            pick = rng.integers(0, len(labels), size=(min(1000, iters - s), len(labels)))
            means[s:s + len(pick)] = sums[pick].sum(axis=1) / sizes[pick].sum(axis=1)
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def exact_lower_bound(c: PairedCounts, alpha: float) -> float:
    """``CP_lower(n01 / n) - CP_upper(n10 / n)``, each at ``alpha / 2`` (Bonferroni, so jointly ``1 - alpha``)."""
    return clopper_pearson(c.n01, c.n, alpha)[0] - clopper_pearson(c.n10, c.n, alpha)[1]


def min_items(margin: float, alpha: float) -> int:
    """Fewest items for which no discordance at all passes the exact bound: ``(1 - margin)^n < alpha / 2``."""
    return math.floor(math.log(alpha / 2) / math.log(1 - margin)) + 1


def items_needed(discordance: float, margin: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Items for ``power`` to pass non-inferiority at a true difference of 0 with ``discordance`` rate."""
    z = st.norm.ppf(1 - alpha) + st.norm.ppf(power)
    return max(min_items(margin, alpha), math.ceil(z * z * discordance / (margin * margin)))


@dataclass(frozen=True)
class ParityResult:
    n: int
    baseline_acc: float
    candidate_acc: float
    delta: float
    ci_low: float
    ci_high: float
    bootstrap_low: float
    exact_low: float
    mcnemar_p: float
    n11: int
    n10: int
    n01: int
    n00: int
    margin: float
    verdict: str
    items_needed: int
    reason: str
    significant_loss: bool

    def as_dict(self) -> dict:
        return asdict(self)


def parity(
    a: Sequence[float], b: Sequence[float], *, margin: float = 0.01, alpha: float = 0.05, iters: int = 10_000,
    seed: int = 0, clusters: Sequence[object] | None = None,
) -> ParityResult:
    """Compare paired 0/1 results of a baseline ``a`` and a candidate ``b``; see the module docstring."""
    if not 0 < margin < 1:
        raise ValueError(f"margin must be in (0, 1), got {margin}")
    c = paired_counts(a, b)
    if c.n == 0:
        raise ValueError("no paired items")
    delta = (c.n01 - c.n10) / c.n
    boot_lo, boot_hi = paired_bootstrap(a, b, iters=iters, alpha=alpha, seed=seed, clusters=clusters)
    exact_lo = exact_lower_bound(c, alpha)
    low = min(boot_lo, exact_lo)
    p = mcnemar_exact(c.n10, c.n01)
    needed = items_needed(c.discordant / c.n, margin, alpha)
    if low > -margin:
        verdict, reason = PASS, f"lower bound {100 * low:+.2f} pt is above -{100 * margin:g} pt"
    elif delta <= -margin:
        verdict, reason = FAIL, f"accuracy moved {100 * delta:+.2f} pt, beyond the -{100 * margin:g} pt margin"
    else:
        verdict = INCONCLUSIVE
        reason = (f"lower bound {100 * low:+.2f} pt does not clear -{100 * margin:g} pt with {c.n} items; "
                  f"about {needed} are needed at this discordance")
    return ParityResult(c.n, (c.n11 + c.n10) / c.n, (c.n11 + c.n01) / c.n, delta, low, boot_hi, boot_lo, exact_lo,
                        p, c.n11, c.n10, c.n01, c.n00, margin, verdict, needed, reason,
                        significant_loss=bool(p < alpha and delta < 0))


@dataclass(frozen=True)
class Drift:
    """Per-choice loglikelihood drift between arms on multiple-choice items."""

    items: int
    choices: int
    max_abs: float
    mean_abs: float
    argmax_flips: int

    def as_dict(self) -> dict:
        return asdict(self)


def loglik_drift(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> Drift:
    """``a[i][j]``, ``b[i][j]``: loglikelihood of choice j of item i in each arm (same items, same order)."""
    if len(a) != len(b):
        raise ValueError("both arms must have the same items")
    diffs, flips, count = [], 0, 0
    for i, (x, y) in enumerate(zip(a, b)):
        if len(x) != len(y):
            raise ValueError(f"item {i} has {len(x)} choices in one arm and {len(y)} in the other")
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        d = np.abs(x - y)
        d[~np.isfinite(d)] = np.inf  # a non-finite loglikelihood in one arm only is infinite drift
        d[np.isnan(x) & np.isnan(y)] = np.inf
        diffs.append(d)
        flips += int(np.argmax(x) != np.argmax(y))
        count += len(x)
    allv = np.concatenate(diffs) if diffs else np.zeros(0)
    return Drift(len(a), count, float(allv.max()) if allv.size else 0.0, float(allv.mean()) if allv.size else 0.0,
                 flips)
