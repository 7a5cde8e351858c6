"""``solve_tril`` in the engines' ``[B, T, H, BT]`` layout, fixed-length and varlen."""

import pytest
import torch

from deltainv.kernels import CHUNK_SIZES, invert, solve_tril
from deltainv.kernels.index import prepare_chunk_indices
from deltainv.kernels.inputs import engine_layout


def _chunks_by_hand(A, starts_ends, method, precision):
    """Invert each chunk on its own: the definition solve_tril must match."""
    out = torch.zeros_like(A, dtype=torch.float32)
    BT = A.shape[-1]
    for b, s, e in starts_ends:
        n = e - s
        M = torch.zeros(A.shape[2], BT, BT)
        M[:, :n, :] = A[b, s:e].transpose(0, 1).float()
        X = invert(M, method, precision)
        out[b, s:e] = X[:, :n, :].transpose(0, 1)
    return out


@pytest.mark.parametrize("BT", CHUNK_SIZES)
@pytest.mark.parametrize("T", [1, 15, 100, 256])
def test_fixed_length_matches_per_chunk_inversion(BT, T, seed):
    B, H = 2, 3
    A = engine_layout("gdn", B, T, H, BT, seed=seed)
    spans = [(b, s, min(s + BT, T)) for b in range(B) for s in range(0, T, BT)]
    for method, precision in [("substitution", "fp32"), ("mxr_refine", "tf32")]:
        got = solve_tril(A, method=method, precision=precision)
        assert got.shape == A.shape and got.dtype == torch.float32
        torch.testing.assert_close(got, _chunks_by_hand(A, spans, method, precision), rtol=0, atol=1e-6)


@pytest.mark.parametrize("BT", CHUNK_SIZES)
def test_varlen_equals_per_sequence_runs(BT, seed):
    lens = [1, 15, BT, BT + 1, 3 * BT - 5, 17]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)
    T, H = int(cu[-1]), 2
    A = engine_layout("kda", 1, T, H, BT, cu_seqlens=cu, seed=seed)
    got = solve_tril(A, cu_seqlens=cu, method="mxr")
    for n in range(len(lens)):
        s, e = int(cu[n]), int(cu[n + 1])
        alone = solve_tril(A[:, s:e], method="mxr")
        torch.testing.assert_close(got[:, s:e], alone, rtol=0, atol=1e-6)
    # The same call with the engines' precomputed chunk table, and with graph-capture padding rows.
    ci = prepare_chunk_indices(cu, BT)
    assert torch.equal(solve_tril(A, cu_seqlens=cu, chunk_indices=ci, method="mxr"), got)
    padded = torch.cat([ci, torch.tensor([[-1, 0], [-1, 0]], dtype=ci.dtype)])
    assert torch.equal(solve_tril(A, cu_seqlens=cu, chunk_indices=padded, method="mxr"), got)


def test_rows_are_unit_lower_within_each_chunk(seed):
    BT, T = 64, 150
    A = engine_layout("dplr", 1, T, 2, BT, seed=seed)
    X = solve_tril(A)
    for s in range(0, T, BT):
        n = min(BT, T - s)
        blk = X[0, s:s + n].transpose(0, 1)  # [H, n, BT]
        assert torch.all(blk[:, torch.arange(n), torch.arange(n)] == 1)
        assert torch.count_nonzero(torch.triu(blk, 1)) == 0


def test_output_dtype_contract(seed):
    A = engine_layout("gdn", 1, 64, 1, 32, seed=seed).to(torch.bfloat16)
    assert solve_tril(A).dtype == torch.float32
    assert solve_tril(A, output_dtype=None).dtype == torch.bfloat16
    assert solve_tril(A, output_dtype=torch.float16).dtype == torch.float16


@pytest.mark.parametrize(
    "cu, match",
    [
        ([1, 10, 20], "must start at 0"),
        ([0, 12, 8, 20], "non-decreasing"),
        ([0, 10, 19], "ends at 19 but the tensor holds T = 20"),
        ([0, 10, 21], "ends at 21"),
        ([20], r"\[N \+ 1\] with N >= 1"),
    ],
)
def test_mismatched_cu_seqlens_are_rejected(cu, match):
    A = torch.zeros(1, 20, 2, 16)
    with pytest.raises(ValueError, match=match):
        solve_tril(A, cu_seqlens=torch.tensor(cu))


def test_bad_varlen_arguments_are_rejected():
    A = torch.zeros(2, 20, 2, 16)
    cu = torch.tensor([0, 20])
    with pytest.raises(ValueError, match="B = 1"):
        solve_tril(A, cu_seqlens=cu)
    with pytest.raises(ValueError, match="int32/int64"):
        solve_tril(A[:1], cu_seqlens=cu.float())
    with pytest.raises(TypeError, match="torch.Tensor"):
        solve_tril(A[:1], cu_seqlens=[0, 20])
    with pytest.raises(ValueError, match="chunk_indices do not match"):
        solve_tril(A[:1], cu_seqlens=cu, chunk_indices=torch.tensor([[0, 0]]))
    with pytest.raises(ValueError, match=r"\[NT, 2\]"):
        solve_tril(A[:1], cu_seqlens=cu, chunk_indices=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="only meaningful together with cu_seqlens"):
        solve_tril(A, chunk_indices=torch.tensor([[0, 0]]))


@pytest.mark.parametrize(
    "shape, dtype, exc, match",
    [
        ((2, 64, 64), torch.float32, ValueError, r"\[B, T, H, BT\]"),
        ((1, 64, 2, 48), torch.float32, ValueError, "C=48"),
        ((1, 64, 2, 64), torch.int32, TypeError, "float16, bfloat16"),
    ],
)
def test_bad_layouts_are_named(shape, dtype, exc, match):
    with pytest.raises(exc, match=match):
        solve_tril(torch.zeros(shape, dtype=dtype))


def test_check_finite_is_off_on_the_hot_path_and_available(seed):
    A = engine_layout("gdn", 1, 128, 2, 64, seed=seed)
    A[0, 70, 1, 3] = float("nan")
    X = solve_tril(A)
    assert torch.isnan(X[0, 64:128, 1]).any(), "NaN must reach its own chunk"
    assert torch.isfinite(X[0, :64]).all() and torch.isfinite(X[0, :, 0]).all(), "and nothing else"
    with pytest.raises(ValueError, match="non-finite"):
        solve_tril(A, check_finite=True)
