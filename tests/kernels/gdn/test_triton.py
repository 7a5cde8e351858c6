"""Fused GDN intra-chunk Triton kernel against the PyTorch reference and fla 0.6.0's fused kernel."""

from __future__ import annotations

import pytest
import torch
from support.device import DEVICE, assert_kernel_close

from deltainv.kernels.gdn import chunk_local_cumsum, l2norm
from deltainv.kernels.gdn.pytorch import chunk_gated_delta_rule_fwd_intra as reference
from deltainv.kernels.gdn.triton import chunk_gated_delta_rule_fwd_intra as fused
from deltainv.kernels.tril.triton import TRITON_METHODS

MIXED = {"mxr": {"base_precision": "tf32x3"}, "mxr_refine": {"base_precision": "tf32x3", "refine_precision": "tf32x3"}}


def _inputs(seed, dtype, BT, T=150, H=2, HV=4, K=64, V=32, cu=(0, 37, 150), gate=0.2):
    g = torch.Generator().manual_seed(seed)
    k = l2norm(torch.randn(1, T, H, K, generator=g)).to(dtype)
    v = torch.randn(1, T, HV, V, generator=g).to(dtype)
    beta = torch.rand(1, T, HV, generator=g)
    cu = torch.tensor(cu, dtype=torch.int32)
    gc = chunk_local_cumsum(-gate * torch.rand(1, T, HV, generator=g), BT, cu_seqlens=cu)
    return [x.to(DEVICE) for x in (k, v, gc, beta, cu)]


def _poison(k, v, BT):
    B, T, HV, K, V = *k.shape[:2], v.shape[2], k.shape[-1], v.shape[-1]
    nan = float("nan")
    return (torch.full((B, T, HV, K), nan, dtype=k.dtype, device=k.device),
            torch.full((B, T, HV, V), nan, dtype=v.dtype, device=v.device),
            torch.full((B, T, HV, BT), nan, dtype=k.dtype, device=k.device))


@pytest.mark.parametrize("BT", [16, 64])
@pytest.mark.parametrize("method", TRITON_METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_reference_varlen_grouped_heads(method, BT, dtype, seed):
    k, v, gc, beta, cu = _inputs(seed, dtype, BT)
    opts = MIXED.get(method, {})
    # blocked doubles inside the 16x16 tiles: in tf32 a rounding boundary flipped by another summation
    # order moves an entry by 2^-11, so it is compared in its GPU recipe, tf32x3
    prec = "tf32x3" if method == "blocked" else "tf32"
    got = fused(k, v, gc, beta, cu, BT, method=method, precision=prec, out=_poison(k, v, BT), **opts)
    ref = reference(k.cpu(), v.cpu(), gc.cpu(), beta.cpu(), cu.cpu(), BT, method=method, precision=prec, **opts)
    exact = reference(*(x.cpu().double() for x in (k, v, gc, beta)), cu.cpu(), BT, method="torch",
                      wu_precision="fp32")
    for name, a, b, t in zip("wuA", got, ref, exact):
        assert a.dtype == b.dtype and a.shape == b.shape
        tol = 1e-4 if dtype == torch.float32 else 2e-2
        assert_kernel_close(a.float(), b.float(), t, atol=tol, rtol=tol, msg=name)


@pytest.mark.parametrize("gate_log2", [False, True])
def test_gate_units_no_gate_and_store_a_off(gate_log2, seed):
    k, v, gc, beta, cu = _inputs(seed, torch.float32, 32)
    g = gc / torch.log(torch.tensor(2.0)) if gate_log2 else gc
    w, u, A = fused(k, v, g, beta, cu, 32, gate_log2=gate_log2, method="mxr_refine")
    rw, ru, rA = reference(k.cpu(), v.cpu(), gc.cpu(), beta.cpu(), cu.cpu(), 32, method="mxr_refine")
    for a, b in ((w, rw), (u, ru), (A, rA)):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-5)
    w2, u2, A2 = fused(k, v, g, beta, cu, 32, gate_log2=gate_log2, method="mxr_refine", store_a=False)
    assert A2 is None and torch.equal(w2, w) and torch.equal(u2, u)
    w3, u3, A3 = fused(k, v, None, beta, cu, 32, method="mxr_refine")
    rw3, ru3, rA3 = reference(k.cpu(), v.cpu(), None, beta.cpu(), cu.cpu(), 32, method="mxr_refine")
    torch.testing.assert_close(A3.cpu(), rA3, rtol=1e-5, atol=1e-5)


def test_more_accurate_than_fla_fused_kernel(seed):
    """Same bf16 inputs; W/U against float64. fla rounds T to bf16 before W/U; so does our default for
    bf16 inputs (its error class, 10% slack), and ``wu_precision="tf32x3"`` keeps T fp32-accurate."""
    chunk_fwd = pytest.importorskip("fla.ops.gated_delta_rule.chunk_fwd")
    k, v, gc, beta, cu = _inputs(seed, torch.bfloat16, 64, T=256, cu=(0, 100, 256), gate=0.02)
    log2 = gc / torch.log(torch.tensor(2.0))
    fw, fu, fA = chunk_fwd.chunk_gated_delta_rule_fwd_intra(k, v, log2, beta, cu_seqlens=cu.long(), chunk_size=64)
    ow, ou, oA = fused(k, v, gc, beta, cu, 64, method="mxr_refine", precision="tf32",
                       base_precision="tf32x3", refine_precision="tf32x3", wu_precision="tf32x3")
    dw, du, dA = fused(k, v, gc, beta, cu, 64)  # the defaults: substitution/tf32x3, bf16 W/U
    xw, xu, xA = reference(k.cpu().double().float(), v.cpu().float(), gc.cpu(), beta.cpu(), cu.cpu(), 64,
                           method="torch", wu_precision="fp32")
    # The float64-grade reference: fp32 torch inverse and fp32 products on the same rounded inputs.
    def err(x, exact):
        return ((x.cpu().float() - exact.float()).norm() / exact.float().norm()).item()

    for name, ours, default, theirs, exact in (("w", ow, dw, fw, xw), ("u", ou, du, fu, xu)):
        assert err(ours, exact) <= err(theirs, exact) * 1.05, (name, err(ours, exact), err(theirs, exact))
        assert err(default, exact) <= err(theirs, exact) * 1.1, (name, err(default, exact), err(theirs, exact))
    # and the same numbers in fla's own configuration (substitution, bf16 W/U products)
    sw, su, sA = fused(k, v, gc, beta, cu, 64, method="substitution", wu_precision="bf16")
    for a, b in ((sw, fw), (su, fu), (sA, fA)):
        assert (a.float() - b.float()).abs().max() <= 3e-2 * max(1.0, b.float().abs().max().item())


def test_bad_arguments():
    k, v, gc, beta, cu = _inputs(0, torch.float32, 64)
    with pytest.raises(ValueError, match="no fused Triton GDN kernel"):
        fused(k, v, gc, beta, cu, 64, method="newton_schulz")
    with pytest.raises(ValueError, match="chunk sizes up to 64"):
        fused(k, v, gc, beta, cu, 128)
    with pytest.raises(ValueError, match="beta must be"):
        fused(k, v, gc, beta[..., :2], cu, 64)
    with pytest.raises(ValueError, match="chunk size C=48"):
        fused(k, v, gc, beta, cu, 48)
