"""Kimi Linear's gate from raw projections against transformers' own ``KimiLinearForgetGate``."""

import pytest
import torch

from deltainv.kernels.kda import kda_beta, kda_gate


def test_equals_transformers_forget_gate_including_the_softplus_threshold(seed):
    modeling = pytest.importorskip("transformers.models.kimi_linear.modeling_kimi_linear")
    from transformers import KimiLinearConfig

    cfg = KimiLinearConfig(hidden_size=32, linear_num_heads=2, linear_head_dim=8, num_hidden_layers=1)
    gate = modeling.KimiLinearForgetGate(cfg).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in gate.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 3)
        gate.dt_bias[:4] += 40.0           # raw + bias above softplus's threshold (20) on some channels
    x = torch.randn(2, 5, 32, generator=g, dtype=torch.float64)
    with torch.no_grad():
        theirs = gate(x)                                            # [2, 5, H, K]
        raw = gate.f_b_proj(gate.f_a_proj(x)).view(2, 5, 2, 8)
    ours = kda_gate(raw, gate.A_log.detach().flatten(), gate.dt_bias.detach())
    assert ours.dtype == torch.float32 and ours.shape == theirs.shape
    # the formula in float64 (softplus through log1p): ours is fp32-accurate
    x = raw + gate.dt_bias.detach().view(2, 8)
    exact = -gate.A_log.detach().exp().view(2, 1) * torch.where(x > 20, x, torch.log1p(torch.exp(x)))
    torch.testing.assert_close(ours.double(), exact, rtol=1e-5, atol=1e-6)
    # transformers computes log(1 + exp(x)) in fp32, which loses the small softplus values (so do
    # vLLM's kernels): agreement to fp32 rounding of the largest gate
    assert (ours.double() - theirs.double()).abs().max() <= 1e-5 * theirs.abs().max() + 1e-5
    assert (x > 20).any()


def test_lower_bound_gate_and_beta():
    raw = torch.linspace(-30, 30, 24).view(1, 3, 8)       # [T, H=3, K=8]
    A_log = torch.tensor([0.0, 1.0, -2.0])
    g = kda_gate(raw, A_log, None, lower_bound=-5.0)
    want = -5.0 * torch.sigmoid(A_log.exp().view(3, 1) * raw)
    torch.testing.assert_close(g, want)
    assert (g < 0).all() and (g >= -5.0).all()   # within [lower_bound, 0)
    torch.testing.assert_close(kda_beta(torch.tensor([0.0, 100.0])), torch.tensor([0.5, 1.0]))


@pytest.mark.parametrize("bad, message", [
    (dict(A_log=torch.zeros(3)), "A_log has 3 entries for 2 heads"),
    (dict(dt_bias=torch.zeros(7)), "dt_bias has 7 entries"),
    (dict(lower_bound=0.5), "lower_bound must be negative"),
])
def test_bad_shapes_and_bounds_are_refused_by_name(bad, message):
    args = dict(A_log=torch.zeros(2), dt_bias=torch.zeros(16), lower_bound=None)
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        kda_gate(torch.zeros(4, 2, 8), **args)
