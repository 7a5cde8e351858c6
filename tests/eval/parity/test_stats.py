"""Parity statistics against hand-computed cases."""

import math

import numpy as np
import pytest

from deltainv.eval.parity import stats as S


def _arms(n11, n10, n01, n00):
    a = [1] * n11 + [1] * n10 + [0] * n01 + [0] * n00
    b = [1] * n11 + [0] * n10 + [1] * n01 + [0] * n00
    return a, b


def test_paired_counts_and_validation():
    assert S.paired_counts([1, 1, 0, 0, 1], [1, 0, 1, 0, 1]) == S.PairedCounts(2, 1, 1, 1)
    with pytest.raises(ValueError, match="equally long"):
        S.paired_counts([1, 0], [1])
    with pytest.raises(ValueError, match="0/1"):
        S.paired_counts([1, 0.5], [1, 0])


@pytest.mark.parametrize("n10, n01, p", [
    (0, 0, 1.0),
    (5, 0, 2 * 0.5**5),                    # 0.0625
    (1, 9, 2 * (1 + 10) / 1024),           # 2 P(X <= 1), X ~ Bin(10, 1/2)
    (3, 3, 1.0),                           # capped
    (0, 8, 2 * 0.5**8),
])
def test_mcnemar_exact(n10, n01, p):
    assert S.mcnemar_exact(n10, n01) == pytest.approx(p, rel=1e-12)


def test_clopper_pearson_hand_values():
    lo, hi = S.clopper_pearson(5, 10, 0.05)
    assert lo == pytest.approx(0.187086, abs=1e-6) and hi == pytest.approx(0.812914, abs=1e-6)
    n = 200
    assert S.clopper_pearson(0, n, 0.05) == (0.0, pytest.approx(1 - 0.025 ** (1 / n), rel=1e-9))
    assert S.clopper_pearson(n, n, 0.05) == (pytest.approx(0.025 ** (1 / n), rel=1e-9), 1.0)


def test_sample_sizes():
    # (1 - 0.01)^n < 0.025  <=>  n > ln(0.025) / ln(0.99) = 367.03
    assert S.min_items(0.01, 0.05) == 368
    # (1.6449 + 0.8416)^2 * 0.03 / 0.01^2 = 1854.8
    assert S.items_needed(0.03, 0.01) == 1855
    assert S.items_needed(0.0001, 0.01) == 368  # never below the exact-bound minimum


def test_bootstrap_is_seeded_brackets_the_estimate_and_widens_with_clusters():
    rng = np.random.default_rng(0)
    a = rng.random(2000) < 0.7
    b = a.copy()
    flip = rng.choice(2000, 60, replace=False)
    b[flip] = ~b[flip]
    lo, hi = S.paired_bootstrap(a, b, iters=4000, seed=3)
    assert (lo, hi) == S.paired_bootstrap(a, b, iters=4000, seed=3)
    d = b.mean() - a.mean()
    assert lo < d < hi
    # the 5% / 95% quantiles of a mean of 2000 paired differences: about 1.645 paired SEs either side
    se = np.std(b.astype(float) - a, ddof=1) / math.sqrt(2000)
    assert hi - lo == pytest.approx(2 * 1.645 * se, rel=0.1)
    # 100 items per cluster sharing one fate: the cluster bootstrap must be much wider
    blocks = np.repeat(np.arange(20), 100)
    a2 = np.ones(2000)
    b2 = np.repeat(rng.random(20) < 0.9, 100).astype(float)
    item = S.paired_bootstrap(a2, b2, iters=2000, seed=1)
    clustered = S.paired_bootstrap(a2, b2, iters=2000, seed=1, clusters=blocks)
    assert clustered[1] - clustered[0] > 3 * (item[1] - item[0])
    assert S.paired_bootstrap([1] * 50, [1] * 50, iters=100) == (0.0, 0.0)


@pytest.mark.parametrize("table, verdict", [
    ((700, 0, 0, 300), S.PASS),            # identical arms, enough items (1000 >= 368)
    ((70, 0, 0, 30), S.INCONCLUSIVE),      # identical, but 100 items cannot support 1 point
    ((650, 50, 0, 300), S.FAIL),           # -5 points
    ((1400, 8, 0, 592), S.PASS),           # -0.4 points, a real loss (McNemar p = 0.0078), within the margin
    ((1400, 5, 5, 590), S.PASS),           # balanced flips on 2000 items
    ((350, 6, 2, 142), S.INCONCLUSIVE),    # -0.8 points on 500 items: exact bound -2.6 points
    ((350, 8, 0, 142), S.FAIL),            # (0 - 8) / 500 = -1.6 points
])
def test_verdicts(table, verdict):
    a, b = _arms(*table)
    r = S.parity(a, b, margin=0.01, iters=4000)
    assert r.verdict == verdict, r.reason
    assert (r.n11, r.n10, r.n01, r.n00) == table
    assert r.delta == pytest.approx((table[2] - table[1]) / sum(table))
    assert r.ci_low <= r.delta
    if verdict == S.INCONCLUSIVE:
        assert r.items_needed > r.n and str(r.items_needed) in r.reason
    # a significant loss is flagged whatever the verdict
    assert r.significant_loss == (S.mcnemar_exact(table[1], table[2]) < 0.05 and table[1] > table[2])


def test_inconclusive_small_task_reports_how_many_items_are_needed():
    a, b = _arms(70, 0, 0, 30)
    r = S.parity(a, b)
    assert r.items_needed == 368
    with pytest.raises(ValueError, match="margin"):
        S.parity(a, b, margin=0)
    with pytest.raises(ValueError, match="no paired items"):
        S.parity([], [])


def test_loglik_drift_hand_example():
    base = [[-1.0, -2.0, -3.0], [-0.5, -0.4]]
    cand = [[-1.1, -1.9, -3.0], [-0.5, -0.6]]
    d = S.loglik_drift(base, cand)
    assert (d.items, d.choices, d.argmax_flips) == (2, 5, 1)
    assert d.max_abs == pytest.approx(0.2)
    assert d.mean_abs == pytest.approx((0.1 + 0.1 + 0 + 0 + 0.2) / 5)
    assert math.isinf(S.loglik_drift([[-1.0, -2.0]], [[float("nan"), -2.0]]).max_abs)
    with pytest.raises(ValueError, match="choices"):
        S.loglik_drift([[-1.0]], [[-1.0, -2.0]])
