"""KDA intra step (``deltainv.kernels.kda.pytorch.chunk_kda_fwd_intra``) against fla 0.6.0's own
``chunk_kda_fwd_intra`` run under the Triton CPU interpreter, and against float64.

fla's contract: ``gk`` in-chunk cumulative, base 2; returns ``(w, u, qg, kg, Aqk, Akk)`` with
``Akk`` the inverse ``(I + A)^-1``. fp32 inputs (the interpreter's bf16 math is wrong); varlen
batches with a partial last chunk.
"""

import math

import pytest
import torch

from deltainv.kernels.kda.pytorch import chunk_kda_fwd_intra
from deltainv.kernels.gdn.pytorch import l2norm


def _inputs(seed, T=100, H=2, HV=2, K=32, V=16, cu=None):
    g = torch.Generator().manual_seed(seed)
    q = l2norm(torch.randn(1, T, H, K, generator=g))
    k = l2norm(torch.randn(1, T, H, K, generator=g))
    v = torch.randn(1, T, HV, V, generator=g)
    beta = torch.rand(1, T, HV, generator=g)
    graw = -torch.rand(1, T, HV, K, generator=g) * 0.5 / math.log(2)  # log2 units
    return q, k, v, graw, beta


def _local_cumsum(graw, BT, cu):
    out = torch.zeros_like(graw)
    bounds = cu.tolist()
    for s, e in zip(bounds, bounds[1:]):
        for c in range(s, e, BT):
            out[:, c:min(c + BT, e)] = graw[:, c:min(c + BT, e)].cumsum(1)
    return out


def _lower_mask(T, BT, cu):
    """``[1, T, 1, BT]``: entry (t, j) is inside its chunk's lower triangle (fla leaves Aqk's upper part unset)."""
    pos = torch.zeros(T, dtype=torch.long)
    bounds = cu.tolist()
    for s, e in zip(bounds, bounds[1:]):
        pos[s:e] = torch.arange(e - s) % BT
    return (torch.arange(BT)[None, :] <= pos[:, None])[None, :, None, :]


@pytest.mark.parametrize("BT", [64])
def test_matches_fla_chunk_kda_fwd_intra_under_the_interpreter(seed, BT):
    fla_intra = pytest.importorskip("fla.ops.kda.chunk_intra")
    cu = torch.tensor([0, 45, 100])
    q, k, v, graw, beta = _inputs(seed)
    gk = _local_cumsum(graw, BT, cu)
    theirs = fla_intra.chunk_kda_fwd_intra(q, k, v, gk, beta, scale=0.2, cu_seqlens=cu, chunk_size=BT,
                                           disable_recompute=True)
    ours = chunk_kda_fwd_intra(q, k, v, gk, beta, 0.2, cu, BT, with_qg=True, method="substitution",
                               precision="fp32", wu_precision="fp32")
    names = ("w", "u", "qg", "kg", "Aqk", "Akk")
    assert len(theirs) == len(ours) == 6
    lower = _lower_mask(q.shape[1], BT, cu)
    assert torch.equal(ours[4], torch.where(lower, ours[4], 0.0))
    theirs = theirs[:4] + (torch.where(lower, theirs[4], 0.0), theirs[5])
    for name, a, b in zip(names, ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype, (name, a.shape, b.shape, a.dtype, b.dtype)
        # fla's merges are tf32 dots (rounded as on the GPU by tests/support): compare loosely.
        torch.testing.assert_close(a, b, atol=3e-3, rtol=3e-3, msg=name)


def test_inverse_is_exact_against_float64(seed):
    BT = 64
    cu = torch.tensor([0, 100])
    q, k, v, graw, beta = _inputs(seed, T=100, H=1, HV=2)
    gk = _local_cumsum(graw, BT, cu)
    w, u, _, kg, Aqk, Akk = chunk_kda_fwd_intra(q, k, v, gk, beta, None, cu, BT, method="mxr_refine")
    # float64 truth for chunk 0, head 1 (HV = 2 value heads share key head 0)
    kk, G, b = k[0, :BT, 0].double(), gk[0, :BT, 1].double() * math.log(2), beta[0, :BT, 1].double()
    A = b[:, None] * torch.einsum("ic,jc,ijc->ij", kk, kk, torch.exp(G[:, None] - G[None, :])).tril(-1)
    T = torch.linalg.inv(torch.eye(BT, dtype=torch.float64) + A)
    assert (Akk[0, :BT, 1].double() - T).norm() / T.norm() < 1e-5
    W = T @ (b[:, None] * torch.exp(G) * kk)
    assert (w[0, :BT, 1].double() - W).norm() / W.norm() < 1e-5


@pytest.mark.parametrize("bad, match", [
    (lambda q, k, v, g, b: (q, k, v, g[..., 0], b), "gk must have rank 4"),
    (lambda q, k, v, g, b: (q, k, v, g[:, :, :1].expand(-1, -1, 1, -1).repeat(1, 1, 3, 1), b[:, :, :1].repeat(1, 1, 3)),
     "not a multiple of the 2 key heads"),
    (lambda q, k, v, g, b: (q, k, v, g, b[..., None]), "beta must have rank 3"),
])
def test_bad_input_names_the_argument(seed, bad, match):
    q, k, v, graw, beta = _inputs(seed, T=40)
    args = bad(q, k, v, graw, beta)
    with pytest.raises(ValueError, match=match):
        chunk_kda_fwd_intra(*args[:2], None, *args[3:], method="substitution")
