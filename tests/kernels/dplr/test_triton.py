"""Fused DPLR intra-chunk Triton kernel against the PyTorch reference, float64 and fla 0.6.0's own
DPLR intra / WY kernels (all under the CPU interpreter here, on CUDA on a GPU machine)."""

from __future__ import annotations

import math

import pytest
import torch
from support.device import DEVICE, INTERPRETED, assert_kernel_close
from support.dplr import rwkv7_inputs

from deltainv.kernels.chunking import gather, scatter
from deltainv.kernels.dplr import chunk_rwkv7, recurrent_dplr_delta_rule
from deltainv.kernels.dplr.pytorch import chunk_dplr_fwd_intra as reference
from deltainv.kernels.dplr.triton import chunk_dplr_fwd_intra as fused
from deltainv.kernels.gdn import l2norm
from deltainv.kernels.index import chunk_table

NAMES = ("A_ab", "A_qk", "A_ak", "A_qb", "qg", "kg", "ag", "bg", "w", "u", "A_ab_inv")


def _inputs(seed, T=150, H=2, K=32, V=16, cu=(0, 37, 150), gate=(-0.6065, 0.0), dtype=torch.float32):
    """RWKV-7-shaped ``q, k, v, a, b`` and a per-channel log-decay ``gk`` uniform in ``gate``."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, T, H, K, generator=g)
    k = 0.5 * torch.randn(1, T, H, K, generator=g)
    v = torch.randn(1, T, H, V, generator=g)
    kk = l2norm(torch.randn(1, T, H, K, generator=g))
    a, b = -kk, kk * torch.rand(1, T, H, K, generator=g)
    lo, hi = gate
    gk = lo + (hi - lo) * torch.rand(1, T, H, K, generator=g)
    cu = torch.tensor(cu, dtype=torch.int32)
    return [x.to(dtype) for x in (q, k, v, a, b)], gk, cu


def _cumsum(gk, BT, cu, log2=False):
    """fla's ``chunk_rwkv6_fwd_cumsum``: in-chunk inclusive and exclusive cumulative gates."""
    B, T = gk.shape[:2]
    table = chunk_table(B, T, BT, cu, None, "cpu")
    g = gather(gk, table)
    Gi = torch.cumsum(g, dim=1)
    unit = 1 / math.log(2) if log2 else 1.0
    return scatter(Gi * unit, table, B, T, torch.float32), scatter((Gi - g) * unit, table, B, T, torch.float32)


def _poisoned(B, T, H, K, V, BT, dtype, vdtype):
    nan = float("nan")
    mat, vec = (B, T, H, BT), (B, T, H, K)
    specs = ((mat, torch.float32), (mat, dtype), (mat, torch.float32), (mat, dtype), *((vec, dtype),) * 5,
             ((B, T, H, V), vdtype), (mat, torch.float32))
    return tuple(torch.full(s, nan, dtype=d, device=DEVICE) for s, d in specs)


@pytest.mark.parametrize(("BT", "method", "K", "dtype"), [
    (16, "substitution", 32, torch.float32),
    (32, "blocked", 32, torch.float32),
    (64, "substitution", 64, torch.float32),
    (64, "mxr_refine", 32, torch.float32),
    (64, "substitution", 32, torch.bfloat16),
])
def test_matches_reference_ragged_varlen_poisoned_outputs(BT, method, K, dtype, seed):
    (q, k, v, a, b), gk, cu = _inputs(seed, K=K, dtype=dtype)
    gi, ge = _cumsum(gk, BT, cu)
    args = [x.to(DEVICE) for x in (q, k, v, a, b, gi, ge)]
    out = _poisoned(*k.shape, v.shape[-1], BT, dtype, dtype)
    got = fused(*args, 0.7, BT, cu.to(DEVICE), gate_log2=False, method=method, out=out)
    assert all(g is o for g, o in zip(got, out))
    ref = reference(q, k, v, a, b, gi, ge, 0.7, BT, cu, gate_log2=False, method=method)
    exact = reference(*(x.float() for x in (q, k, v, a, b)), gi, ge, 0.7, BT, cu, gate_log2=False, method="torch",
                      wu_precision="fp32")
    tol = 2e-5 if dtype == torch.float32 else 2e-2
    for name, x, r, t in zip(NAMES, got, ref, exact):
        assert x.dtype == r.dtype and x.shape == r.shape, name
        scale = max(1.0, r.float().abs().max().item())
        assert_kernel_close(x.float(), r.float(), t, atol=tol * scale, rtol=tol, msg=name)


def test_gate_units_and_store_a_off(seed):
    (q, k, v, a, b), gk, cu = _inputs(seed, T=70, cu=(0, 70))
    args = [x.to(DEVICE) for x in (q, k, v, a, b)]
    ln = fused(*args, *(x.to(DEVICE) for x in _cumsum(gk, 32, cu)), None, 32, cu.to(DEVICE), gate_log2=False)
    l2 = fused(*args, *(x.to(DEVICE) for x in _cumsum(gk, 32, cu, log2=True)), None, 32, cu.to(DEVICE))
    for name, x, y in zip(NAMES, ln, l2):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5, msg=name)
    off = fused(*args, *(x.to(DEVICE) for x in _cumsum(gk, 32, cu, log2=True)), None, 32, cu.to(DEVICE),
                store_a=False)
    assert off[0] is None and off[-1] is None
    for name, x, y in zip(NAMES[1:-1], off[1:-1], l2[1:-1]):
        assert torch.equal(x, y), name


def _relerr(x, truth):
    return ((x.double().cpu() - truth).norm() / truth.norm()).item()


@pytest.mark.parametrize("case", ["typical", "identical_tokens", "strong_decay"])
def test_chunked_forward_on_triton_matches_float64(case, seed):
    """``chunk_rwkv7(backend="triton")`` (fused intra + PyTorch recurrence) against the float64
    recurrence: ragged varlen with partial last chunks, an initial state, adversarial inputs."""
    g = torch.Generator().manual_seed(seed)
    cu = torch.tensor([0, 37, 100, 150], dtype=torch.int32)
    r, w, k, v, a, b = (x.reshape(1, -1, *x.shape[2:]) for x in rwkv7_inputs(seed, B=1, T=150, H=2, K=32, V=16))
    if case == "identical_tokens":       # one token repeated 60 times, no decay (FlashKDA's NaN case)
        for x in (r, k, v, a, b):
            x[:, 40:100] = x[:, 40:41]
        w[:, 40:100] = -1e-6
    elif case == "strong_decay":         # down to exp(-60) per token: factorising over a chunk overflows fp32
        w = -60 * torch.rand(w.shape, generator=g)
    h0 = 0.5 * torch.randn(3, 2, 32, 16, generator=g)
    o, S = chunk_rwkv7(*(x.to(DEVICE) for x in (r, w, k, v, a, b)), initial_state=h0.to(DEVICE),
                       output_final_state=True, cu_seqlens=cu.to(DEVICE), backend="triton")
    ro, rS = recurrent_dplr_delta_rule(r, k, v, a, b, w, 1.0, h0, cu)
    to, tS = chunk_rwkv7(r, w, k, v, a, b, initial_state=h0, output_final_state=True, cu_seqlens=cu,
                         backend="torch")
    assert torch.isfinite(o).all() and torch.isfinite(S).all()
    # as accurate as the PyTorch path (both fp32 throughout: a few 1e-6)
    for x, t, truth in ((o, to, ro), (S, tS, rS)):
        assert _relerr(x, truth) <= 2 * _relerr(t, truth) + 2e-6, (_relerr(x, truth), _relerr(t, truth))
    torch.testing.assert_close(o.cpu(), to, rtol=1e-4, atol=1e-5 * to.abs().max().item())


def test_padded_rows_and_huge_gates_stay_finite(seed):
    """A partial last chunk whose gates (and those past its end) are extreme: every output finite,
    the strictly upper parts zero, the reference matched."""
    (q, k, v, a, b), gk, cu = _inputs(seed, T=40, cu=(0, 40), gate=(-200.0, -50.0))
    gi, ge = _cumsum(gk, 64, cu)
    got = fused(*(x.to(DEVICE) for x in (q, k, v, a, b, gi, ge)), None, 64, cu.to(DEVICE), gate_log2=False)
    ref = reference(q, k, v, a, b, gi, ge, None, 64, cu, gate_log2=False)
    for name, x, r in zip(NAMES, got, ref):
        assert torch.isfinite(x).all(), name
        torch.testing.assert_close(x.cpu(), r, rtol=2e-5, atol=2e-5 * max(1.0, r.abs().max().item()), msg=name)
    A_ab = got[0].cpu()[0, :, 0]                                       # [T, BT]
    assert torch.equal(A_ab.triu(), torch.zeros_like(A_ab))


def test_matches_fla_intra_and_wy_kernels(seed, monkeypatch):
    """fla 0.6.0's ``chunk_dplr_fwd_intra`` (exact per-column kernel) and ``prepare_wy_repr_fwd``, fp32,
    on the same log2 gates from fla's own cumsum: same 11 tensors (ragged varlen). fla's W/U dots are
    tf32 (Triton's default for fp32), so ours run with ``wu_precision="tf32"`` here."""
    A_fwd = pytest.importorskip("fla.ops.generalized_delta_rule.dplr.chunk_A_fwd")
    wy = pytest.importorskip("fla.ops.generalized_delta_rule.dplr.wy_fast_fwd")
    from fla.ops.rwkv6.chunk import chunk_rwkv6_fwd_cumsum
    from fla.ops.utils import prepare_chunk_indices
    from fla.ops.utils.constant import RCP_LN2

    if INTERPRETED:   # fla's row gather (tl.gather) does not run in the interpreter; its fallback does
        monkeypatch.setattr(A_fwd, "IS_GATHER_SUPPORTED", False)
    BT = 32
    (q, k, v, a, b), gk, cu = _inputs(seed, T=80, cu=(0, 45, 80))
    dev = [x.to(DEVICE) for x in (q, k, v, a, b, gk)]
    cul = cu.long().to(DEVICE)
    ci = prepare_chunk_indices(cul, BT)
    gi, ge = chunk_rwkv6_fwd_cumsum(dev[5], BT, scale=RCP_LN2, cu_seqlens=cul, chunk_indices=ci)
    A_ab, A_qk, A_ak, A_qb, qg, kg, ag, bg = A_fwd.chunk_dplr_fwd_intra(
        q=dev[0], k=dev[1], a=dev[3], b=dev[4], gi=gi, ge=ge, scale=0.5, chunk_size=BT, safe_gate=False,
        cu_seqlens=cul, chunk_indices=ci)
    w, u, Ai = wy.prepare_wy_repr_fwd(ag=ag, v=dev[2], A_ak=A_ak, A_ab=A_ab, cu_seqlens=cul, chunk_size=BT,
                                      chunk_indices=ci, safe_gate=False)
    theirs = (A_ab, A_qk, A_ak, A_qb, qg, kg, ag, bg, w, u, Ai)
    ours = fused(*dev[:5], gi, ge, 0.5, BT, cu.to(DEVICE), method="substitution", precision="fp32",
                 wu_precision="tf32")
    # fla writes a partial chunk's A rows only up to its last real column: compare the real columns.
    table = chunk_table(1, 80, BT, cu, None, "cpu")
    cols = torch.zeros(80, BT, dtype=torch.bool)
    cols[table.rows[table.valid]] = table.valid[table.valid.nonzero()[:, 0]]
    for name, x, y in zip(NAMES, ours, theirs):
        x, y = x.cpu().float(), y.cpu().float()
        if x.shape[-1] == BT:
            x, y = x * cols[None, :, None], y * cols[None, :, None]
        # fla's A products are fp32 element-wise, ours tf32x3. W/U are tf32 products on both sides, of
        # inverses equal to fp32 rounding: a tf32 rounding flipped by that moves an entry by 2^-11
        tol = 2e-5 if name not in ("w", "u") else 3e-3
        torch.testing.assert_close(x, y, rtol=tol, atol=tol * max(1.0, y.abs().max().item()), msg=name)


def test_backend_choice_and_bad_arguments():
    (q, k, v, a, b), gk, cu = _inputs(0, T=20, cu=(0, 20))
    gi, ge = _cumsum(gk, 64, cu)
    with pytest.raises(ValueError, match="no fused Triton DPLR kernel"):
        fused(q, k, v, a, b, gi, ge, None, 64, method="newton_schulz")
    with pytest.raises(ValueError, match="chunk sizes up to 64"):
        fused(q, k, v, a, b, gi, ge, None, 128)
    with pytest.raises(ValueError, match="ge must have"):
        fused(q, k, v, a, b, gi, ge[..., :4], None, 64)
    with pytest.raises(ValueError, match="out\\[0\\] must be"):
        fused(q, k, v, a, b, gi, ge, None, 64, out=_poisoned(1, 20, 2, 32, 16, 32, torch.float32, torch.float32))
    from deltainv.kernels.dplr import fla_fp16_inverse

    with pytest.raises(ValueError, match="study hook"):
        chunk_rwkv7(q, gk, k, v, a, b, inverse=fla_fp16_inverse, backend="triton")


def test_dropin_picks_the_fused_kernel_for_triton(seed):
    """``dropin.dplr_fwd_intra``: fla's call shape; ``backend="triton"`` runs the fused kernel (here under
    the interpreter), ``"torch"`` the reference, with the same numbers."""
    from deltainv.kernels import dropin

    (q, k, v, a, b), gk, cu = _inputs(seed, T=40, cu=(0, 40))
    gi, ge = _cumsum(gk, 32, cu, log2=True)
    args = [x.to(DEVICE) for x in (q, k, v, a, b, gi, ge)]
    tri = dropin.dplr_fwd_intra("mxr_refine", backend="triton")
    ref = dropin.dplr_fwd_intra("mxr_refine", backend="torch")
    assert tri.deltainv["backend"] == "triton" and tri.recipe.name == "mxr_refine"
    for name, x, y in zip(NAMES, tri(*args, 0.5, 32, cu.to(DEVICE)), ref(*(x.cpu() for x in args), 0.5, 32, cu)):
        torch.testing.assert_close(x.cpu(), y, rtol=2e-5, atol=2e-5, msg=name)
