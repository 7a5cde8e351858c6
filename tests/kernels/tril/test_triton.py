"""Triton inversion kernels against the PyTorch reference and fla 0.6.0's own kernels.

On a CPU machine these run under the Triton interpreter (tests/conftest.py); on CUDA, unchanged.
"""

from __future__ import annotations

import pytest
import torch
from support.device import DEVICE, assert_kernel_close

from deltainv.kernels import CHUNK_SIZES, invert, solve_tril
from deltainv.kernels.index import prepare_chunk_indices
from deltainv.kernels.inputs import chunk_matrices, engine_layout
from deltainv.kernels.tril.triton import TRITON_METHODS
from deltainv.kernels.tril.triton import solve_tril as triton_solve_tril

#: (precision, options) pairs per method: plain fp32 and the mixed GPU configuration.
CONFIGS = {
    "substitution": [("fp32", {}), ("tf32x3", {}), ("fp16", {})],
    "blocked": [("tf32x3", {}), ("bf16", {})],
    "mxr": [("fp32", {}), ("tf32", {"base_precision": "tf32x3"})],
    "mxr_refine": [("fp32", {}), ("tf32", {"base_precision": "tf32x3", "refine_precision": "tf32x3"}),
                   ("bf16", {})],
}
LENS = [1, 15, 64, 77, 200]  # ragged, partial chunks, a single token


def _varlen(kind, BT, dtype, seed, H=2):
    cu = torch.tensor([0, *torch.tensor(LENS).cumsum(0).tolist()], dtype=torch.int32)
    A = engine_layout(kind, 1, int(cu[-1]), H, BT, cu_seqlens=cu, seed=seed).to(dtype)
    return A.to(DEVICE), cu.to(DEVICE)


def truth(A, cu=None):
    """The float64 inverse in the same layout (what GPU runs are judged against)."""
    cu = None if cu is None else cu.cpu()
    return solve_tril(A.cpu().double(), cu, output_dtype=torch.float64, method="torch", backend="torch")


def _poisoned(A, dtype):
    return torch.full(A.shape, float("nan"), dtype=dtype, device=A.device)


@pytest.mark.parametrize("BT", CHUNK_SIZES)
@pytest.mark.parametrize("method", TRITON_METHODS)
def test_varlen_matches_pytorch_reference_and_writes_every_element(method, BT, seed):
    A, cu = _varlen("gdn_nogate", BT, torch.float32, seed)
    for precision, opts in CONFIGS[method]:
        out = _poisoned(A, torch.float32)
        got = triton_solve_tril(A, cu, None, torch.float32, method=method, precision=precision, out=out, **opts)
        assert got.data_ptr() == out.data_ptr()
        assert torch.isfinite(got).all(), f"{method}/{precision}: unwritten or non-finite elements"
        ref = solve_tril(A.cpu(), cu.cpu(), method=method, precision=precision, backend="torch", **opts)
        tol = 1e-6 if precision in ("fp32", "tf32x3") else 1e-4 if precision in ("tf32", "fp16") else 5e-3
        # Relative too: the batched tiles sum products in another order than the reference (32x32 masked
        # tiles at BT=128), which moves large inverse entries by a few ulp.
        assert_kernel_close(got, ref, truth(A, cu), atol=tol, rtol=10 * tol, msg=f"{method}/{precision}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", TRITON_METHODS)
def test_16_bit_inputs_and_output_dtypes(method, dtype, seed):
    A, _ = _varlen("kda", 64, dtype, seed)
    A = A.reshape(1, -1, 2, 64)[:, :256]
    for out_dtype in (torch.float32, torch.bfloat16, None):
        got = triton_solve_tril(A, output_dtype=out_dtype, method=method)
        assert got.dtype == (dtype if out_dtype is None else out_dtype)
        ref = solve_tril(A.cpu(), output_dtype=out_dtype, method=method, backend="torch")
        atol = 1e-6 if got.dtype == torch.float32 else 1e-2
        assert_kernel_close(got.float(), ref.float(), truth(A), atol=atol, msg=f"{method} {dtype} -> {out_dtype}")


def test_fixed_length_batches_chunk_table_and_padding_rows(seed):
    A = engine_layout("gdn", 3, 100, 2, 32, seed=seed).to(DEVICE)
    ref = solve_tril(A.cpu(), method="mxr_refine", backend="torch")
    assert_kernel_close(triton_solve_tril(A, method="mxr_refine"), ref, truth(A), atol=1e-6)
    A, cu = _varlen("dplr", 32, torch.float32, seed)
    ci = prepare_chunk_indices(cu, 32)
    padded = torch.cat([ci, torch.full((3, 2), -1, dtype=ci.dtype, device=ci.device)])
    plain = triton_solve_tril(A, cu, None, method="mxr")
    assert torch.equal(triton_solve_tril(A, cu, padded, method="mxr"), plain)


@pytest.mark.parametrize("method", TRITON_METHODS)
def test_invert_backend_triton(method, seed):
    A = chunk_matrices("correlated_keys", 3, 64, seed=seed).to(DEVICE)
    got = invert(A, method, backend="triton")
    exact = invert(A.cpu().double(), "torch")
    ref = invert(A.cpu(), method)
    # Correlated keys make mxr's squarings cancel: entries near 1e-3 move by 1e-5 with the summation
    # order (the interpreter's numpy products vs torch's, even at fp32), while both results are equally
    # far from float64. So this dispatch test asks what the GPU tests ask: as accurate as the reference.
    err, err_ref = (float((x.double().cpu() - exact).norm() / exact.norm()) for x in (got, ref))
    assert torch.isfinite(got).all() and err <= 2 * err_ref + 1e-6, (method, err, err_ref)
    with pytest.raises(ValueError, match="no 'triton' implementation"):
        invert(A, "newton_schulz", backend="triton")


@pytest.mark.parametrize("BT", [16, 32, 64])
def test_substitution_is_fla_solve_tril_arithmetic(BT, seed):
    """fla 0.6.0's own kernel, same inputs: ieee merges give the same numbers."""
    fla = pytest.importorskip("fla.ops.utils.solve_tril")
    A, cu = _varlen("gdn_d64", BT, torch.float32, seed)
    theirs = fla.solve_tril(A, cu_seqlens=cu.long(), output_dtype=torch.float32)
    ours = triton_solve_tril(A, cu, None, torch.float32, method="substitution", precision="fp32")
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-7)
    # and ours in bf16, the engines' output dtype
    theirs = fla.solve_tril(A, cu_seqlens=cu.long(), output_dtype=torch.bfloat16)
    ours = triton_solve_tril(A, cu, None, torch.bfloat16, method="mxr_refine")
    assert (ours.float() - theirs.float()).abs().max() <= 8e-3


def test_chunk_counts_not_a_multiple_of_the_chunks_per_program(seed):
    """NC chunk-heads per program: 1, 3, 5 and 7 items leave the last program partly empty, and items of
    one program come from different heads and sequences; nothing past the end may be written."""
    for H, lens in ((1, [16]), (3, [16]), (1, [5, 33, 16, 40]), (7, [20])):
        cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
        A = engine_layout("gdn", 1, int(cu[-1]), H, 16, cu_seqlens=cu, seed=seed).to(DEVICE)
        canary = torch.full((1, int(cu[-1]) + 16, H, 16), float("nan"), device=DEVICE)
        out = canary[:, : int(cu[-1])]  # B = 1: a contiguous view; the 16 rows after it must stay NaN
        got = triton_solve_tril(A, cu.to(DEVICE), None, torch.float32, out=out)
        assert got.data_ptr() == canary.data_ptr() and torch.isfinite(got).all()
        assert torch.isnan(canary[:, int(cu[-1]):]).all()
        assert_kernel_close(got, solve_tril(A.cpu(), cu, backend="torch"), truth(A, cu), atol=1e-6)


def test_unsupported_method_and_bad_arguments():
    A = torch.zeros(1, 32, 1, 32, device=DEVICE)
    with pytest.raises(ValueError, match="has no Triton kernel"):
        triton_solve_tril(A, method="newton_schulz")
    with pytest.raises(ValueError, match="out must be"):
        triton_solve_tril(A, out=torch.empty(1, 32, 1, 16, device=DEVICE))
    with pytest.raises(ValueError, match="C=48"):
        triton_solve_tril(torch.zeros(1, 48, 1, 48, device=DEVICE))
