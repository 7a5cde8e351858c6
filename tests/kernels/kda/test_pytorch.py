"""PyTorch chunked KDA against the float64 token-by-token recurrence."""

import pytest
import torch

from deltainv.kernels import CHUNK_SIZES
from deltainv.kernels.gdn import chunk_gated_delta_rule, l2norm
from deltainv.kernels.kda import chunk_kda, naive_recurrent_kda


def _inputs(seed, B=2, T=150, H=2, HV=4, K=32, V=16, gate=0.5):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=g)
    k = l2norm(torch.randn(B, T, H, K, generator=g))
    v = torch.randn(B, T, HV, V, generator=g)
    gate_ = -gate * torch.rand(B, T, HV, K, generator=g)
    beta = torch.rand(B, T, HV, generator=g)
    return q, k, v, gate_, beta


def _close(a, b, tol):
    err = (a.double() - b.double()).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), err


@pytest.mark.parametrize("C", CHUNK_SIZES)
@pytest.mark.parametrize("method", ["substitution", "mxr_refine", "blocked"])
def test_matches_recurrence_with_state_and_grouped_heads(C, method, seed):
    q, k, v, g, beta = _inputs(seed)
    h0 = torch.randn(2, 4, 32, 16, generator=torch.Generator().manual_seed(seed + 1))
    o, S = chunk_kda(q, k, v, g, beta, initial_state=h0, output_final_state=True, chunk_size=C, method=method)
    ro, rS = naive_recurrent_kda(q, k, v, g, beta, initial_state=h0)
    assert o.shape == v.shape and o.dtype == v.dtype and S.shape == h0.shape
    _close(o, ro, 2e-5)
    _close(S, rS, 2e-5)


def test_varlen_strong_decay_and_log2_gates(seed):
    # Strong decay (down to -20 per token per channel) must not overflow the pairwise decays.
    q, k, v, g, beta = (x.reshape(1, -1, *x.shape[2:]) for x in _inputs(seed, gate=20.0))
    cu = torch.tensor([0, 1, 15, 64, 65, 200, 300], dtype=torch.int32)
    h0 = torch.randn(6, 4, 32, 16, generator=torch.Generator().manual_seed(seed))
    o, S = chunk_kda(q, k, v, g, beta, initial_state=h0, output_final_state=True, cu_seqlens=cu, chunk_size=64)
    ro, rS = naive_recurrent_kda(q, k, v, g, beta, initial_state=h0, cu_seqlens=cu)
    assert torch.isfinite(o).all()
    _close(o, ro, 2e-5)
    _close(S, rS, 2e-5)
    g2 = g / torch.log(torch.tensor(2.0))
    o2, _ = chunk_kda(q, k, v, g2, beta, initial_state=h0, cu_seqlens=cu, gate_log2=True)
    _close(o2, ro, 2e-5)


def test_equal_channel_gates_reduce_to_gdn(seed):
    q, k, v, g, beta = _inputs(seed, T=100)
    g_tok = g[..., 0]
    o_kda, S_kda = chunk_kda(q, k, v, g_tok[..., None].expand_as(g).contiguous(), beta, output_final_state=True,
                             use_qk_l2norm=True)
    o_gdn, S_gdn = chunk_gated_delta_rule(q, k, v, g_tok, beta, output_final_state=True, use_qk_l2norm=True)
    _close(o_kda, o_gdn, 1e-5)
    _close(S_kda, S_gdn, 1e-5)


def test_unstable_method_is_visible_on_repeated_keys(seed):
    # One key repeated over a whole chunk with beta = 1 and no decay: the product form in fp16 breaks.
    B, T, H, K, V = 1, 64, 1, 16, 8
    k = l2norm(torch.ones(B, T, H, K))
    q = torch.randn(B, T, H, K, generator=torch.Generator().manual_seed(seed))
    v = torch.randn(B, T, H, V, generator=torch.Generator().manual_seed(seed + 1))
    g = torch.zeros(B, T, H, K)
    beta = torch.ones(B, T, H)
    good, _ = chunk_kda(q, k, v, g, beta, method="substitution")
    bad, _ = chunk_kda(q, k, v, g, beta, method="product", precision="fp16")
    ref, _ = naive_recurrent_kda(q, k, v, g, beta)
    _close(good, ref, 1e-4)
    assert not torch.isfinite(bad).all() or (bad.double() - ref).abs().max() > 1.0


def test_bad_shapes_are_named():
    q, k, v, g, beta = _inputs(0, T=20)
    with pytest.raises(ValueError, match="one gate per channel"):
        chunk_kda(q, k, v, g[..., 0], beta)
    with pytest.raises(ValueError, match="initial_state"):
        chunk_kda(q, k, v, g, beta, initial_state=torch.zeros(1, 4, 32, 16))


def test_bad_input_gets_a_clear_error_naming_it():
    _pytest = pytest
    q = k = torch.randn(1, 20, 2, 8)
    v, beta = torch.randn(1, 20, 2, 4), torch.rand(1, 20, 2)
    with _pytest.raises(ValueError, match=r"g must have rank 4.*per-head gate"):
        chunk_kda(q, k, v, -torch.rand(1, 20, 2), beta, method="substitution")
    v3, beta3 = torch.randn(1, 20, 3, 4), torch.rand(1, 20, 3)
    with _pytest.raises(ValueError, match=r"3 value heads \(v.shape\[2\]\) are not a multiple of the 2 key heads"):
        chunk_kda(q, k, v3, -torch.rand(1, 20, 3, 8), beta3, method="substitution")
    with _pytest.raises(ValueError, match=r"g must be \[B, T, HV, K\]"):
        chunk_kda(q, k, v, -torch.rand(1, 20, 2, 4), beta, method="substitution")


def test_decode_steps_follow_the_recurrence(seed):
    """recurrent_kda_step, one token at a time for 3 sequences with states, against the float64 recurrence."""
    from deltainv.kernels.kda import recurrent_kda_step

    q, k, v, g, beta = _inputs(seed, B=3, T=12, gate=3.0)
    h0 = torch.randn(3, 4, 32, 16, generator=torch.Generator().manual_seed(seed + 1))
    ro, rS = naive_recurrent_kda(q, k, v, g, beta, initial_state=h0)
    S, outs = h0.clone(), []
    for t in range(12):
        o, S_new = recurrent_kda_step(q[:, t], k[:, t], v[:, t], g[:, t], beta[:, t], S)
        assert S_new is not S
        S = S_new
        outs.append(o)
    _close(torch.stack(outs, 1), ro, 2e-5)
    _close(S, rS, 2e-5)
    with pytest.raises(ValueError, match="do not match"):
        recurrent_kda_step(q[:, 0], k[:, 0], v[:, 0], g[:, 0, :2], beta[:, 0], S)
