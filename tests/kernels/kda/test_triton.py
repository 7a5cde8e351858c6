"""Fused KDA intra Triton kernel against the PyTorch reference, float64, and fla 0.6.0's own
``chunk_kda_fwd_intra`` (both run under the Triton CPU interpreter here, on CUDA on a GPU machine).

Inputs: grouped heads (2 key heads, 4 value heads), packed varlen batches with partial last chunks,
gates in log2 units (the engines' convention), among them strongly negative ones whose in-chunk
cumulative sum reaches thousands, where any ``exp(G_i) exp(-G_j)`` factorisation overflows.
Outputs are pre-filled with NaN, so an element the kernel fails to write shows.
"""

from __future__ import annotations

import pytest
import torch
from support.device import DEVICE, assert_kernel_close

from deltainv.kernels import dropin
from deltainv.kernels.gdn.pytorch import l2norm
from deltainv.kernels.kda.pytorch import chunk_kda_fwd_intra as reference
from deltainv.kernels.kda.triton import chunk_kda_fwd_intra as fused

NAMES = ("w", "u", "qg", "kg", "Aqk", "Akk")


def _inputs(seed, dtype=torch.float32, BT=64, T=150, H=2, HV=4, K=32, V=16, cu=(0, 37, 150), gate=0.7):
    """``gate``: the largest per-token, per-channel decay in log2 units (uniform in ``[-gate, 0]``)."""
    g = torch.Generator().manual_seed(seed)
    q = l2norm(torch.randn(1, T, H, K, generator=g)).to(dtype)
    k = l2norm(torch.randn(1, T, H, K, generator=g)).to(dtype)
    v = torch.randn(1, T, HV, V, generator=g).to(dtype)
    beta = torch.rand(1, T, HV, generator=g).to(dtype)
    graw = -gate * torch.rand(1, T, HV, K, generator=g)
    gk = torch.zeros_like(graw)
    bounds = list(cu)
    for s, e in zip(bounds, bounds[1:]):
        for c in range(s, e, BT):
            gk[:, c:min(c + BT, e)] = graw[:, c:min(c + BT, e)].cumsum(1)
    cu = torch.tensor(cu, dtype=torch.int32)
    return [x.to(DEVICE) for x in (q, k, v, gk, beta, cu)]


def _poison(q, v, BT):
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    shapes = {"w": (B, T, HV, K), "u": (B, T, HV, V), "qg": (B, T, HV, K), "kg": (B, T, HV, K),
              "Aqk": (B, T, HV, BT), "Akk": (B, T, HV, BT)}
    return {n: torch.full(s, float("nan"), dtype=v.dtype if n == "u" else q.dtype, device=q.device)
            for n, s in shapes.items()}


def _float64(q, k, v, gk, beta, cu, BT, scale):
    """Chunk by chunk in float64, straight from the formulas (exp of each exact pairwise exponent)."""
    q, k, v, gk, beta = (x[0].cpu().double() for x in (q, k, v, gk, beta))
    T, H, K = k.shape
    HV = gk.shape[1]
    out = {n: torch.zeros(T, HV, d, dtype=torch.float64)
           for n, d in (("w", K), ("u", v.shape[-1]), ("qg", K), ("kg", K), ("Aqk", BT), ("Akk", BT))}
    bounds = cu.tolist()
    for s, e in zip(bounds, bounds[1:]):
        for c in range(s, e, BT):
            r = slice(c, min(c + BT, e))
            n = r.stop - r.start
            for h in range(HV):
                kk, qq, G, b = k[r, h * H // HV], q[r, h * H // HV], gk[r, h] * torch.log(torch.tensor(2.0)), beta[r, h]
                D = G[:, None, :] - G[None, :, :]
                low = torch.ones(n, n, dtype=torch.bool).tril()
                D = torch.where(low[..., None], D, 0.0)
                pair = torch.einsum("ic,jc,ijc->ij", kk, kk, torch.exp(D))
                A = b[:, None] * pair.tril(-1)
                Tinv = torch.linalg.inv(torch.eye(n, dtype=torch.float64) + A)
                out["Akk"][r, h, :n] = Tinv
                out["Aqk"][r, h, :n] = scale * torch.einsum("ic,jc,ijc->ij", qq, kk, torch.exp(D)).tril()
                out["w"][r, h] = Tinv @ (b[:, None] * torch.exp(G) * kk)
                out["u"][r, h] = Tinv @ (b[:, None] * v[r, h])
                out["qg"][r, h] = qq * torch.exp(G)
                out["kg"][r, h] = kk * torch.exp(G[-1] - G)
    return tuple(out[n][None] for n in NAMES)


@pytest.mark.parametrize("BT, dtype, method, gate", [
    (64, torch.float32, "substitution", 0.7),
    (32, torch.float32, "mxr_refine", 30.0),   # strongly negative: cumulative gates reach ~ -1000 (log2)
    (64, torch.bfloat16, "blocked", 3.0),
])
def test_matches_reference_and_float64(BT, dtype, method, gate, seed):
    q, k, v, gk, beta, cu = _inputs(seed, dtype, BT, gate=gate)
    opts = {"base_precision": "tf32x3", "refine_precision": "tf32x3"} if method == "mxr_refine" else {}
    got = fused(q, k, v, gk, beta, 0.3, cu, BT, with_qg=True, method=method, precision="tf32x3",
                wu_precision="tf32x3", out=_poison(q, v, BT), **opts)
    ref = reference(*(x.cpu() for x in (q, k, v, gk, beta)), 0.3, cu.cpu(), BT, with_qg=True, method=method,
                    precision="tf32x3", wu_precision="tf32x3", **opts)
    exact = _float64(q, k, v, gk, beta, cu, BT, 0.3)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for name, a, b, t in zip(NAMES, got, ref, exact):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert_kernel_close(a.float(), b.float(), t, atol=tol, rtol=tol, msg=name)
        if dtype == torch.float32:  # and the reference itself is float64-grade on these inputs
            torch.testing.assert_close(b.double(), t, atol=1e-4, rtol=1e-4, msg=f"reference {name}")


def test_padded_rows_never_overflow(seed):
    """A partial chunk whose last real tokens carry huge decays: rows past its end must read the last
    real gate (edge padding), never 0, or ``exp(0 - G_j)`` would be inf and ``0 * inf`` NaN."""
    q, k, v, gk, beta, cu = _inputs(seed, BT=64, T=150, cu=(0, 37, 150), gate=0.5)
    gk[:, 130:150] -= 5000.0  # the last chunk holds rows 128..149: its rows 2.. decay by 2^-5000
    gk[:, 20:37] -= 5000.0    # and the first sequence's only, partial chunk
    got = fused(q, k, v, gk, beta, None, cu, 64, method="substitution", out=_poison(q, v, 64))
    exact = _float64(q, k, v, gk, beta, cu, 64, 32 ** -0.5)
    for name, a, t in zip(NAMES, got, exact):
        if a is None:
            assert name == "qg"
            continue
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a.cpu().double(), t, atol=1e-4, rtol=1e-4, msg=name)


def test_store_a_off_no_v_and_gate_units(seed):
    q, k, v, gk, beta, cu = _inputs(seed, BT=32, T=70, H=1, HV=2, cu=(0, 20, 70), gate=2.0)
    full = fused(q, k, v, gk, beta, None, cu, 32)
    w, u, qg, kg, Aqk, Akk = fused(q, k, v, gk, beta, None, cu, 32, store_a=False)
    assert Akk is None and qg is None
    for a, b in zip((w, u, kg, Aqk), (full[0], full[1], full[3], full[4])):
        assert torch.equal(a, b)
    # vLLM's contract: no v, only (Aqk, Akk)
    w, u, qg, kg, Aqk, Akk = fused(q, k, None, gk, beta, None, cu, 32)
    assert w is None and u is None and kg is None and torch.equal(Aqk, full[4]) and torch.equal(Akk, full[5])
    # natural-log gates give the same numbers
    ln = fused(q, k, v, gk * torch.log(torch.tensor(2.0)), beta, None, cu, 32, gate_log2=False)
    for name, a, b in zip(NAMES, ln, full):
        if b is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)


def test_matches_fla_chunk_kda_fwd_intra(seed):
    """fla 0.6.0's own kernel (token-parallel diagonal, tf32 off-diagonal products and merges; fp32
    inputs, since the interpreter's bf16 math is not the GPU's) against ours."""
    fla_intra = pytest.importorskip("fla.ops.kda.chunk_intra")
    BT = 64
    q, k, v, gk, beta, cu = _inputs(seed, T=100, H=1, HV=2, cu=(0, 45, 100), gate=1.0)
    theirs = fla_intra.chunk_kda_fwd_intra(q, k, v, gk, beta, scale=0.2, cu_seqlens=cu.long(), chunk_size=BT,
                                           disable_recompute=True)
    ours = fused(q, k, v, gk, beta, 0.2, cu, BT, with_qg=True, method="substitution", precision="fp32",
                 out=_poison(q, v, BT))
    pos = torch.cat([torch.arange(e - s) % BT for s, e in zip(cu.tolist(), cu.tolist()[1:])])
    lower = (torch.arange(BT)[None, :] <= pos[:, None])[None, :, None, :].to(DEVICE)
    assert torch.equal(ours[4], torch.where(lower, ours[4], 0.0))  # zeros above the diagonal, written
    theirs = theirs[:4] + (torch.where(lower, theirs[4], 0.0), theirs[5])
    for name, a, b in zip(NAMES, ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        torch.testing.assert_close(a, b, atol=3e-3, rtol=3e-3, msg=name)


def test_dropins_dispatch_to_the_fused_kernel(seed, monkeypatch):
    """The engines' drop-ins (the functions the plugin installs) run the fused kernel when the backend
    is Triton, with each contract's outputs; Akk is not even computed where SGLang discards it."""
    import deltainv.kernels.kda.triton as kda_triton

    calls = []
    real = kda_triton.chunk_kda_fwd_intra

    def spy(*args, **kwargs):
        calls.append(kwargs["store_a"])
        return real(*args, **kwargs)

    monkeypatch.setattr(kda_triton, "chunk_kda_fwd_intra", spy)
    q, k, v, gk, beta, cu = _inputs(seed, BT=64, T=80, H=1, HV=2, cu=(0, 80))
    want = real(q, k, v, gk, beta, 0.25, cu, 64, with_qg=True)
    fla = dropin.fla_kda_fwd_intra(backend="triton")(q, k, v, gk, beta, 0.25, cu, 64, disable_recompute=True)
    assert fla[0].device == q.device and all(torch.equal(a, b) for a, b in zip(fla, want))
    sg = dropin.sglang_kda_fwd_intra(backend="triton")(q, k, v, gk, beta, 0.25, cu, 64, fuse_recompute=True)
    assert sg[2] is None and sg[5] is None and torch.equal(sg[0], want[0]) and torch.equal(sg[4], want[4])
    vl = dropin.vllm_kda_fwd_intra(backend="triton")(q, k, gk, beta, 0.25, cu, 64)
    assert len(vl) == 2 and torch.equal(vl[0], want[4]) and torch.equal(vl[1], want[5])
    assert calls == [True, False, True]
    # backend="torch" is the PyTorch reference (the plugin's guard recompute)
    torch_out = dropin.fla_kda_fwd_intra(backend="torch")(q.cpu(), k.cpu(), v.cpu(), gk.cpu(), beta.cpu(), 0.25,
                                                          cu.cpu(), 64)
    assert len(calls) == 3 and torch.allclose(torch_out[5], want[5].cpu(), atol=1e-4)


def test_bad_arguments():
    from deltainv.kernels.kda.triton import default_a_precision

    # the decayed products' default follows the output dtype (tf32 for bf16, as fla; tf32x3 for fp32)
    assert default_a_precision(torch.bfloat16) == "tf32" and default_a_precision(torch.float32) == "tf32x3"
    q, k, v, gk, beta, cu = _inputs(0, T=40, cu=(0, 40))
    with pytest.raises(ValueError, match="gk must have rank 4"):
        fused(q, k, v, gk[..., 0], beta, None, cu, 64)
    with pytest.raises(ValueError, match="not a multiple of the 2 key heads"):
        fused(q, k, v[:, :, :3], gk[:, :, :3], beta[:, :, :3], None, cu, 64)
    with pytest.raises(ValueError, match="no fused Triton KDA kernel"):
        fused(q, k, v, gk, beta, None, cu, 64, method="newton_schulz")
    with pytest.raises(ValueError, match="chunk sizes up to 64"):
        fused(q, k, v, gk, beta, None, cu, 128)
    with pytest.raises(ValueError, match="a_precision"):
        fused(q, k, v, gk, beta, None, cu, 64, a_precision="bf16")
    with pytest.raises(ValueError, match="a_precision"):
        dropin.fla_kda_fwd_intra(a_precision="fp8")
