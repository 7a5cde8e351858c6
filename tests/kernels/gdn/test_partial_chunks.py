"""Partial last chunks with strongly negative in-chunk gate sums (issue 13 item 6).

The engines' intra contract hands over the *already cumulated* gate. Rows past a partial chunk's
end are padding; if they carry G = 0, ``exp(0 - G_j)`` overflows once ``G_j < -88.7`` (ln) or
``-128`` (log2) and ``0 * inf = NaN`` spreads through the inverse into real tokens. Every
registry method on the PyTorch backend, and every method ``backend="triton"`` runs (the
interpreter on a CPU), must stay finite and match a float64 computation.
"""

from __future__ import annotations

import math

import pytest
import torch
from support.device import DEVICE

from deltainv.kernels import METHODS, dropin
from deltainv.kernels.backend import BackendError, triton_methods
from deltainv.kernels.gdn import chunk_gated_delta_rule, chunk_local_cumsum, chunk_scaled_dot_kkt, l2norm
from deltainv.kernels.gdn import naive_recurrent_gated_delta_rule
from deltainv.kernels.kda import chunk_kda, naive_recurrent_kda

BT = 64
#: Two sequences whose last chunks are partial (70 = 64 + 6, 45 < 64): 45 real rows at -4 per
#: token reach G = -180, past both overflow thresholds (-88.7 ln, -128 log2).
CU = [0, 70, 115]
PER_TOKEN = -4.0


def _inputs(seed: int, gate_log2: bool):
    g = torch.Generator().manual_seed(seed)
    T, H, HV, K, V = CU[-1], 1, 2, 16, 8
    k = l2norm(torch.randn(1, T, H, K, generator=g))
    v = torch.randn(1, T, HV, V, generator=g)
    beta = torch.rand(1, T, HV, generator=g)
    gate = PER_TOKEN * (0.75 + 0.5 * torch.rand(1, T, HV, generator=g))  # per token, -3 .. -5
    cu = torch.tensor(CU, dtype=torch.int32)
    G = chunk_local_cumsum(gate, BT, cu)
    if gate_log2:
        G = G / math.log(2)
    assert G.min() < (-128 if gate_log2 else -88.7), "the test must reach the overflow range"
    return k, v, G, beta, cu


def _intra_float64(k, v, G, beta, cu, gate_log2):
    """w, u per chunk in float64, written out row by row (no shared helper)."""
    k, v, G, beta = (x[0].double() for x in (k, v, G, beta))
    HV = v.shape[1]
    k = k.repeat_interleave(HV // k.shape[1], 1)
    w, u = torch.zeros(*v.shape[:2], k.shape[-1], dtype=torch.float64), torch.zeros_like(v)
    base = 2.0 if gate_log2 else math.e
    for s, e in zip(cu.tolist(), cu.tolist()[1:]):
        for c0 in range(s, e, BT):
            rows = slice(c0, min(c0 + BT, e))
            n = rows.stop - rows.start
            for h in range(HV):
                kh, gh, bh = k[rows, h], G[rows, h], beta[rows, h]
                A = torch.zeros(n, n, dtype=torch.float64)
                for i in range(n):
                    for j in range(i):
                        A[i, j] = bh[i] * (kh[i] @ kh[j]) * base ** (gh[i] - gh[j])
                Ti = torch.linalg.inv(torch.eye(n, dtype=torch.float64) + A)
                w[rows, h] = Ti @ (kh * (bh * base**gh)[:, None])
                u[rows, h] = Ti @ (v[rows, h] * bh[:, None])
    return w, u


def _check(out, ref, msg):
    w, u, Ai = out
    for name, x in (("w", w), ("u", u), ("A", Ai)):
        assert torch.isfinite(x).all(), f"{msg}: {name} has {int((~torch.isfinite(x)).sum())} non-finite values"
    for name, x, r in (("w", w, ref[0]), ("u", u, ref[1])):
        err = float((x[0].cpu().double() - r).norm() / r.norm())
        assert err < 1e-3, f"{msg}: {name} relative error {err:.2e} against float64"


def _factory(gate_log2):
    return dropin.fla_gdn_fwd_intra if gate_log2 else dropin.sglang_gdn_fwd_intra


@pytest.mark.parametrize("gate_log2", [False, True], ids=["ln", "log2"])
@pytest.mark.parametrize("method", list(METHODS))
def test_torch_backend_stays_finite(method, gate_log2, seed):
    k, v, G, beta, cu = _inputs(seed, gate_log2)
    fn = _factory(gate_log2)(method, backend="torch")
    _check(fn(k, v, G, beta, cu, BT), _intra_float64(k, v, G, beta, cu, gate_log2), f"{method}/torch")


@pytest.mark.parametrize("gate_log2", [False, True], ids=["ln", "log2"])
@pytest.mark.parametrize("method", triton_methods())
def test_triton_backend_stays_finite(method, gate_log2, seed):
    k, v, G, beta, cu = _inputs(seed, gate_log2)
    fn = _factory(gate_log2)(method, backend="triton")
    out = fn(*(x.to(DEVICE) for x in (k, v, G, beta, cu)), BT)
    _check(out, _intra_float64(k, v, G, beta, cu, gate_log2), f"{method}/triton")


@pytest.mark.parametrize("method", [m for m in METHODS if m not in triton_methods()])
def test_triton_backend_refuses_methods_without_a_kernel(method):
    with pytest.raises(BackendError, match=f"method '{method}' has no 'triton' implementation; methods with one: "
                                           f"{', '.join(triton_methods())}"):
        dropin.sglang_gdn_fwd_intra(method, backend="triton")


@pytest.mark.parametrize("gate_log2", [False, True], ids=["ln", "log2"])
def test_kkt_padding_rows_are_zero_and_finite(gate_log2, seed):
    k, v, G, beta, cu = _inputs(seed, gate_log2)
    A = chunk_scaled_dot_kkt(k, beta, G, BT, cu, gate_log2=gate_log2)
    assert torch.isfinite(A).all()
    # the last row of the first sequence's partial chunk (token 69, row 5) has zeros past column 4
    assert torch.equal(A[0, 69, :, 5:], torch.zeros_like(A[0, 69, :, 5:]))


@pytest.mark.parametrize("gate_log2", [False, True], ids=["ln", "log2"])
def test_whole_forwards_gdn_and_kda_stay_finite(gate_log2, seed):
    """The whole forwards cumulate the gate in chunk space; with the same strongly decaying gates
    they stay finite and match the float64 token recurrence."""
    g = torch.Generator().manual_seed(seed)
    T, H, HV, K, V = CU[-1], 1, 2, 16, 8
    q, k = l2norm(torch.randn(1, T, H, K, generator=g)), l2norm(torch.randn(1, T, H, K, generator=g))
    v, beta = torch.randn(1, T, HV, V, generator=g), torch.rand(1, T, HV, generator=g)
    cu = torch.tensor(CU, dtype=torch.int32)
    unit = 1 / math.log(2) if gate_log2 else 1.0
    gate = PER_TOKEN * unit * (0.75 + 0.5 * torch.rand(1, T, HV, generator=g))
    o, S = chunk_gated_delta_rule(q, k, v, gate, beta, cu_seqlens=cu, output_final_state=True, gate_log2=gate_log2)
    ro, rS = naive_recurrent_gated_delta_rule(q, k, v, gate, beta, cu_seqlens=cu, gate_log2=gate_log2)
    assert torch.isfinite(o).all() and torch.isfinite(S).all()
    torch.testing.assert_close(o.double(), ro, atol=1e-5, rtol=1e-4)
    gk = gate[..., None].expand(1, T, HV, K) * (0.5 + torch.rand(1, T, HV, K, generator=g))
    o, S = chunk_kda(q, k, v, gk, beta, cu_seqlens=cu, output_final_state=True, gate_log2=gate_log2)
    ro, rS = naive_recurrent_kda(q, k, v, gk, beta, cu_seqlens=cu, gate_log2=gate_log2)
    assert torch.isfinite(o).all() and torch.isfinite(S).all()
    torch.testing.assert_close(o.double(), ro, atol=1e-5, rtol=1e-4)
