"""PyTorch chunked GDN against the float64 token-by-token recurrence."""

import pytest
import torch

from deltainv.kernels import CHUNK_SIZES, solve_tril
from deltainv.kernels.gdn import (
    chunk_gated_delta_rule,
    chunk_gated_delta_rule_fwd_intra,
    chunk_local_cumsum,
    chunk_scaled_dot_kkt,
    l2norm,
    naive_recurrent_gated_delta_rule,
)


def _inputs(seed, B=2, T=150, H=2, HV=4, K=32, V=16, gate=0.5):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=g)
    k = l2norm(torch.randn(B, T, H, K, generator=g))
    v = torch.randn(B, T, HV, V, generator=g)
    gate_ = -gate * torch.rand(B, T, HV, generator=g)
    beta = torch.rand(B, T, HV, generator=g)
    return q, k, v, gate_, beta


def _close(a, b, tol):
    err = (a.double() - b.double()).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), err


@pytest.mark.parametrize("C", CHUNK_SIZES)
@pytest.mark.parametrize("method", ["substitution", "mxr_refine", "mxr", "blocked"])
def test_matches_recurrence_with_state_and_grouped_heads(C, method, seed):
    q, k, v, g, beta = _inputs(seed)
    h0 = torch.randn(2, 4, 32, 16, generator=torch.Generator().manual_seed(seed + 1))
    o, S = chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True, chunk_size=C,
                                  method=method)
    ro, rS = naive_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=h0)
    assert o.shape == v.shape and o.dtype == v.dtype and S.shape == h0.shape
    _close(o, ro, 2e-5)
    _close(S, rS, 2e-5)


@pytest.mark.parametrize("C", [16, 64, 128])
def test_varlen_matches_recurrence(C, seed):
    q, k, v, g, beta = (x.reshape(1, -1, *x.shape[2:]) for x in _inputs(seed))
    cu = torch.tensor([0, 1, 15, 64, 65, 200, 300], dtype=torch.int32)
    h0 = torch.randn(6, 4, 32, 16, generator=torch.Generator().manual_seed(seed))
    o, S = chunk_gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True, cu_seqlens=cu,
                                  chunk_size=C)
    ro, rS = naive_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=h0, cu_seqlens=cu)
    _close(o, ro, 2e-5)
    _close(S, rS, 2e-5)


def test_gate_conventions_and_l2norm_option(seed):
    q, k, v, g, beta = _inputs(seed, T=70)
    ro, _ = naive_recurrent_gated_delta_rule(q, l2norm(k), v, g, beta)
    o_e, _ = chunk_gated_delta_rule(q, k * 3.0, v, g, beta, use_qk_l2norm=True, scale=None)
    ro_n, _ = naive_recurrent_gated_delta_rule(l2norm(q), l2norm(k), v, g, beta)
    _close(o_e, ro_n, 2e-5)
    # base-2 gates (fla 0.6.0) give the same answer for g / ln 2
    o_2, _ = chunk_gated_delta_rule(q, k, v, g / torch.log(torch.tensor(2.0)), beta, gate_log2=True)
    _close(o_2, ro, 2e-5)
    o_none, _ = chunk_gated_delta_rule(q, k, v, None, beta)
    _close(o_none, naive_recurrent_gated_delta_rule(q, k, v, None, beta)[0], 2e-5)


def test_intra_contract_matches_kkt_then_solve_tril(seed):
    _, k, v, g, beta = _inputs(seed, B=1, T=130)
    cu = torch.tensor([0, 30, 130])
    gc = chunk_local_cumsum(g, 64, cu_seqlens=cu)
    w, u, A = chunk_gated_delta_rule_fwd_intra(k.bfloat16(), v.bfloat16(), gc, beta, cu_seqlens=cu, chunk_size=64,
                                               method="substitution", wu_precision="fp32")
    assert (w.dtype, u.dtype, A.dtype) == (torch.bfloat16,) * 3
    assert w.shape == (1, 130, 4, 32) and u.shape == (1, 130, 4, 16) and A.shape == (1, 130, 4, 64)
    kkt = chunk_scaled_dot_kkt(k.bfloat16(), beta, gc, 64, cu_seqlens=cu)
    Ai = solve_tril(kkt, cu_seqlens=cu, method="substitution")
    torch.testing.assert_close(A.float(), Ai, rtol=0, atol=2e-2)
    # u = (I + A)^-1 (beta v) row by row inside each chunk of each sequence
    for s, e in [(0, 30), (30, 94), (94, 130)]:
        blk = Ai[0, s:e, :, : e - s].transpose(0, 1)                     # [HV, n, n]
        want = blk @ (v[0, s:e].bfloat16().float() * beta[0, s:e, :, None]).transpose(0, 1)
        torch.testing.assert_close(u[0, s:e].float(), want.transpose(0, 1), rtol=2e-2, atol=2e-2)


def test_future_tokens_never_change_earlier_outputs(seed):
    q, k, v, g, beta = _inputs(seed, B=1, T=128, H=1, HV=1)
    o, _ = chunk_gated_delta_rule(q, k, v, g, beta, method="mxr_refine", chunk_size=64)
    t0 = 77
    k2, v2, g2, b2 = k.clone(), v.clone(), g.clone(), beta.clone()
    k2[:, t0:] = l2norm(torch.randn_like(k2[:, t0:]))
    v2[:, t0:] *= -3
    g2[:, t0:] = -5.0
    b2[:, t0:] = 0.99
    o2, _ = chunk_gated_delta_rule(q, k2, v2, g2, b2, method="mxr_refine", chunk_size=64)
    assert torch.equal(o[:, :t0], o2[:, :t0])
    assert not torch.equal(o[:, t0:], o2[:, t0:])


def test_shape_errors_are_named():
    q, k, v, g, beta = _inputs(0, T=20)
    with pytest.raises(ValueError, match="beta must be"):
        chunk_gated_delta_rule(q, k, v, g, beta[..., :2])
    with pytest.raises(ValueError, match="multiple of H"):
        chunk_gated_delta_rule(q, k, v[:, :, :3], g[..., :3], beta[..., :3])
    with pytest.raises(ValueError, match="initial_state"):
        chunk_gated_delta_rule(q, k, v, g, beta, initial_state=torch.zeros(1, 4, 32, 16))
