"""PyTorch chunked DPLR (RWKV-7) against the float64 token-by-token recurrence, every registry method."""

import pytest
import torch
from support.dplr import rwkv7_inputs

from deltainv.kernels import CHUNK_SIZES, METHODS
from deltainv.kernels.dplr import (
    chunk_dplr_delta_rule,
    chunk_rwkv7,
    fla_fp16_inverse,
    recurrent_dplr_delta_rule,
)
from deltainv.kernels.gdn import l2norm
from deltainv.kernels.inputs import chunk_matrices


def _close(a, b, tol):
    err = (a.double() - b.double()).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), err


def _oracle(r, w, k, v, a, b, **kw):
    return recurrent_dplr_delta_rule(r, k, v, a, b, w, **kw)


# Every method at the smallest chunk and fla's RWKV-7 chunk (64); every chunk size for the default.
CASES = [(m, C) for m in METHODS for C in (16, 64)] + [("mxr_refine", C) for C in CHUNK_SIZES if C not in (16, 64)]


@pytest.mark.parametrize(("method", "C"), CASES)
def test_every_method_matches_recurrence_with_state(method, C, seed):
    r, w, k, v, a, b = rwkv7_inputs(seed, T=80)
    h0 = torch.randn(2, 2, 32, 16, generator=torch.Generator().manual_seed(seed + 1))
    o, S = chunk_rwkv7(r, w, k, v, a, b, initial_state=h0, output_final_state=True, chunk_size=C, method=method)
    ro, rS = _oracle(r, w, k, v, a, b, scale=1.0, initial_state=h0)
    assert o.shape == v.shape and o.dtype == v.dtype and S.shape == h0.shape and S.dtype == torch.float32
    _close(o, ro, 2e-5)
    _close(S, rS, 2e-5)


def test_general_dplr_varlen_default_scale_and_precision(seed):
    # Not the RWKV-7 parametrisation: independent a and b, fla's default scale K^-0.5, packed sequences.
    g = torch.Generator().manual_seed(seed)
    T, H, K, V = 300, 2, 32, 16
    q, k = torch.randn(1, T, H, K, generator=g), 0.3 * torch.randn(1, T, H, K, generator=g)
    v = torch.randn(1, T, H, V, generator=g)
    a = -0.2 * l2norm(torch.randn(1, T, H, K, generator=g))
    b = 0.2 * l2norm(torch.randn(1, T, H, K, generator=g))
    gk = -3.0 * torch.rand(1, T, H, K, generator=g)          # strong decay: no overflow anywhere
    cu = torch.tensor([0, 1, 15, 64, 65, 200, 300], dtype=torch.int32)
    h0 = torch.randn(6, H, K, V, generator=g)
    o, S = chunk_dplr_delta_rule(q, k, v, a, b, gk, initial_state=h0, output_final_state=True, cu_seqlens=cu,
                                 method="mxr_refine", precision="tf32", refine_precision="tf32x3")
    ro, rS = recurrent_dplr_delta_rule(q, k, v, a, b, gk, initial_state=h0, cu_seqlens=cu)
    assert torch.isfinite(o).all()
    _close(o, ro, 2e-5)
    _close(S, rS, 2e-5)
    # Each packed sequence alone gives the same output and state.
    for n, (s, e) in enumerate(zip(cu.tolist(), cu.tolist()[1:])):
        on, Sn = chunk_dplr_delta_rule(*(x[:, s:e] for x in (q, k, v, a, b, gk)), initial_state=h0[n:n + 1],
                                       output_final_state=True)
        _close(on, o[:, s:e], 1e-5)
        _close(Sn, S[n:n + 1], 1e-5)


def test_fla_recipe_is_visible_on_a_run_of_identical_tokens(seed):
    # One key repeated over two chunks, slow decay, learning rate near 1: the delta rule's hard case.
    B, T, H, K, V = 1, 128, 1, 64, 16
    g = torch.Generator().manual_seed(seed)
    kk = l2norm(torch.randn(1, 1, 1, K, generator=g)).expand(B, T, H, K)
    lr = torch.full((B, T, H, K), 0.97)
    w = torch.full((B, T, H, K), -1e-3)
    r = torch.randn(B, T, H, K, generator=g)
    k = 0.5 * kk
    v = torch.randn(B, T, H, V, generator=g)
    ro, _ = _oracle(r, w, k, v, -kk, kk * lr, scale=1.0)
    good, _ = chunk_rwkv7(r, w, k, v, -kk, kk * lr)                     # the registry's default recipe
    fla, _ = chunk_rwkv7(r, w, k, v, -kk, kk * lr, inverse=fla_fp16_inverse)
    _close(good, ro, 1e-4)
    assert not torch.isfinite(fla).all() or (fla.double() - ro).abs().max() > 3e-2 * ro.abs().max()


def test_fla_fp16_inverse_is_the_product_recipe():
    # Accurate to fp16 level on typical DPLR matrices, exactly lower triangular, and C = 16 is the
    # plain product form of deltainv's registry in fp16 (same roundings).
    for C in (16, 32, 64):
        A = chunk_matrices("dplr", 32, C, seed=C).float()
        X = fla_fp16_inverse(A)
        ref = torch.linalg.inv(torch.eye(C, dtype=torch.float64) + A.double())
        rel = ((X.double() - ref).norm(dim=(-2, -1)) / ref.norm(dim=(-2, -1))).max()
        assert 1e-6 < rel < 1e-2
        assert torch.equal(X.triu(1), torch.zeros_like(X)) and torch.equal(X.diagonal(dim1=-2, dim2=-1),
                                                                           torch.ones(32, C))
    with pytest.raises(ValueError, match="C in"):
        fla_fp16_inverse(torch.zeros(2, 128, 128))


def test_bad_inputs_are_named():
    r, w, k, v, a, b = rwkv7_inputs(0, T=20)
    with pytest.raises(ValueError, match="gk must have"):
        chunk_dplr_delta_rule(r, k, v, a, b, w[..., :4])
    with pytest.raises(ValueError, match="initial_state"):
        chunk_rwkv7(r, w, k, v, a, b, initial_state=torch.zeros(1, 2, 32, 16))
    with pytest.raises(ValueError, match="lower_bound"):
        chunk_rwkv7(r, w, k, v, a, b, lower_bound=0.5)
    with pytest.raises(ValueError, match="not both"):
        chunk_rwkv7(r, w, k, v, a, b, method="mxr", inverse=fla_fp16_inverse)
    with pytest.raises(ValueError, match="unknown method"):
        chunk_rwkv7(r, w, k, v, a, b, method="nope")
