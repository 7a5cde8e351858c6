"""Hypothesis property tests: shapes, varlen splits and delta-rule-structured values."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deltainv.eval.metrics import error_stats
from deltainv.kernels import CHUNK_SIZES, METHODS, PRECISIONS, invert, solve_tril
from deltainv.kernels.inputs import engine_layout, gdn_matrix

# Example counts come from the hypothesis profile (tests/conftest.py: HYPOTHESIS_PROFILE=ci|deep).
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
methods = st.sampled_from(list(METHODS))
sizes = st.sampled_from(CHUNK_SIZES)


@SETTINGS
@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=3),
    C=sizes,
    method=methods,
    data=st.data(),
)
def test_any_batch_shape_gives_unit_lower_inverse(lead, C, method, data):
    precision = data.draw(st.sampled_from(METHODS[method].precisions))
    seed = data.draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    A = 0.1 * torch.randn(*lead, C, C, generator=g)
    X = invert(A, method, precision)
    assert X.shape == A.shape and X.dtype == torch.float32
    assert torch.count_nonzero(torch.triu(X, 1)) == 0
    assert torch.isfinite(X).all()


@st.composite
def delta_rule_chunks(draw):
    """One chunk from arbitrary keys, betas in [0, 1] and per-token log-decays in [-20, 0]."""
    C = draw(sizes)
    d = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    # Hypothesis picks the structure (how aligned the keys are, how large beta and the decay);
    # the generator fills in the values, which keeps examples small and shrinkable.
    align = draw(st.floats(0.0, 1.0))
    beta_lo = draw(st.floats(0.0, 1.0))
    decay = draw(st.sampled_from([0.0, 1e-3, 0.1, 1.0, 20.0]))
    base = torch.randn(1, 1, d, generator=g, dtype=torch.float64)
    k = align * base + (1 - align) * torch.randn(1, C, d, generator=g, dtype=torch.float64)
    k = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    beta = beta_lo + (1 - beta_lo) * torch.rand(1, C, generator=g, dtype=torch.float64)
    log_decay = -decay * torch.rand(1, C, generator=g, dtype=torch.float64)
    return gdn_matrix(k, beta, torch.cumsum(log_decay, 1)).float()


#: What each method guarantees on any delta-rule chunk with beta <= 1 (worst relative Frobenius
#: error); ``None``: only that the result is finite. MXR's 16x16 product form carries powers up to
#: C(15,7) * beta^15, so with 10-bit or bf16 operands it has no accuracy guarantee (README "Numerics").
GUARANTEE = {
    "substitution": {"fp32": 1e-6, "tf32x3": 2e-6, "tf32": 8e-3, "fp16": 8e-3, "bf16": 8e-2},
    "blocked": {"fp32": 1e-6, "tf32x3": 2e-6, "tf32": 8e-3, "fp16": 8e-3, "bf16": 8e-2},
    "newton_schulz": {"fp32": 1e-6, "tf32x3": 2e-6, "tf32": 8e-3, "fp16": 8e-3, "bf16": 8e-2},
    "mxr_refine": {"fp32": 1e-6, "tf32x3": 3e-6, "tf32": None, "fp16": None, "bf16": None},
    "mxr": {"fp32": 1e-3, "tf32x3": 2e-3, "tf32": None, "fp16": None, "bf16": None},
}


@SETTINGS
@given(A=delta_rule_chunks(), precision=st.sampled_from(PRECISIONS))
def test_methods_keep_their_guarantees_on_any_delta_rule_chunk(A, precision):
    for method, bounds in GUARANTEE.items():
        e = error_stats(A, invert(A, method, precision))
        assert e.nonfinite == 0, (method, precision)
        if bounds[precision] is not None:
            assert e.rel_fro <= bounds[precision], (method, precision, e.rel_fro)


@SETTINGS
@given(
    lens=st.lists(st.integers(0, 200), min_size=1, max_size=6),
    BT=sizes,
    seed=st.integers(0, 2**31 - 1),
)
def test_varlen_equals_separate_calls(lens, BT, seed):
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int64)
    T = int(cu[-1])
    A = engine_layout("gdn_d64", 1, T, 2, BT, cu_seqlens=cu, seed=seed)
    got = solve_tril(A, cu_seqlens=cu, method="blocked")
    for n, ln in enumerate(lens):
        s = int(cu[n])
        if ln:
            assert torch.equal(got[:, s:s + ln], solve_tril(A[:, s:s + ln], method="blocked"))
