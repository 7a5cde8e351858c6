"""``invert``: the contract around the math (validation, dtypes, masking, non-finite input)."""

import pytest
import torch

from deltainv.kernels import DEFAULT_METHOD, DEFAULT_PRECISION, METHODS, get_method, invert
from deltainv.kernels.inputs import chunk_matrices


@pytest.fixture
def A(seed):
    return chunk_matrices("gdn", 4, 32, seed=seed)


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        ([[0.0]], TypeError, "torch.Tensor"),
        (torch.zeros(16, 16, dtype=torch.int64), TypeError, "float16, bfloat16, float32 or float64"),
        (torch.zeros(16, 16, dtype=torch.bool), TypeError, "got torch.bool"),
        (torch.zeros(16, 16, dtype=torch.complex64), TypeError, "complex64"),
        (torch.zeros(16), ValueError, r"rank 1"),
        (torch.zeros(2, 16, 32), ValueError, "square"),
        (torch.zeros(2, 48, 48), ValueError, "C=48 is not supported; use one of 16, 32, 64, 128"),
        (torch.zeros(8, 8), ValueError, "C=8"),
        (torch.zeros(256, 256), ValueError, "C=256"),
    ],
)
def test_bad_shapes_and_dtypes_are_named(bad, exc, match):
    with pytest.raises(exc, match=match):
        invert(bad)


def test_unknown_method_precision_option_and_backend(A):
    with pytest.raises(ValueError, match="unknown method 'cholesky'; choose one of substitution"):
        invert(A, "cholesky")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        invert(A, "mxr", "fp8")
    with pytest.raises(ValueError, match="method 'torch' does not take precision 'fp16'; it takes fp32"):
        invert(A, "torch", "fp16")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['iters'\]"):
        invert(A, "mxr", iters=3)
    with pytest.raises(ValueError, match="unknown backend"):
        invert(A, "mxr", backend="cuda")
    with pytest.raises(ValueError, match="no 'triton' implementation"):
        get_method("torch").implementation("triton")


def test_non_finite_input_raises_or_propagates(A):
    bad = A.clone()
    bad[1, 20, 3] = float("nan")
    bad[2, 31, 0] = float("inf")
    with pytest.raises(ValueError, match="2 non-finite value"):
        invert(bad, "mxr")
    X = invert(bad, "mxr", check_finite=False)
    assert torch.isnan(X[1]).any() and not torch.isfinite(X[2]).all()
    assert torch.isfinite(X[0]).all() and torch.isfinite(X[3]).all(), "non-finite input leaked across matrices"


@pytest.mark.parametrize("method", list(METHODS))
def test_diagonal_and_upper_triangle_are_ignored(A, method):
    junk = A + torch.triu(torch.full_like(A, float("nan")))
    assert torch.equal(invert(junk, method), invert(A, method))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_input_dtypes_and_output_dtype(A, dtype):
    Ad = A.to(dtype)
    X = invert(Ad, "substitution")
    assert X.dtype == torch.float32
    ref = invert(Ad.to(torch.float32), "substitution")
    assert torch.equal(X, ref), "inputs are converted to fp32 exactly, then inverted"
    assert invert(Ad, "substitution", out_dtype=None).dtype == dtype
    assert invert(Ad, "substitution", out_dtype=torch.bfloat16).dtype == torch.bfloat16


def test_any_leading_shape_and_batch_independence(seed):
    A = chunk_matrices("kda", 6, 16, seed=seed).reshape(2, 3, 16, 16)
    for m in METHODS:
        X = invert(A, m)
        assert X.shape == (2, 3, 16, 16)
        single = torch.stack([invert(A[i, j], m) for i in range(2) for j in range(3)]).reshape_as(X)
        torch.testing.assert_close(X, single, rtol=0, atol=1e-6)
    assert invert(torch.zeros(0, 64, 64)).shape == (0, 64, 64)


def test_defaults_are_registered():
    assert DEFAULT_METHOD in METHODS and METHODS[DEFAULT_METHOD].stable
    assert DEFAULT_PRECISION in METHODS[DEFAULT_METHOD].precisions


def test_registry_describes_every_method():
    assert list(METHODS) == ["substitution", "blocked", "product", "mxr", "mxr_refine", "newton_schulz", "torch"]
    assert [m for m, s in METHODS.items() if not s.stable] == ["product"]
    for spec in METHODS.values():
        assert callable(spec.implementation("torch")) and spec.summary


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.complex64])
def test_out_dtype_must_be_floating(dtype):
    """An integer out_dtype would round the inverse to integers without a word: refused."""
    from deltainv.kernels import solve_tril

    A = torch.randn(2, 16, 16).tril(-1) * 0.1
    with pytest.raises(TypeError, match="out_dtype must be None or float16"):
        invert(A, "substitution", out_dtype=dtype)
    with pytest.raises(TypeError, match="output_dtype must be None or float16"):
        solve_tril(torch.randn(1, 16, 1, 16), output_dtype=dtype, backend="torch")


def test_triton_backend_without_a_gpu_names_the_problem_and_the_fix(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    A = torch.randn(2, 16, 16).tril(-1) * 0.1
    with pytest.raises(RuntimeError, match=r"needs a CUDA tensor; this one is on cpu.*backend='torch'.*TRITON_INTERPRET=1"):
        invert(A, "substitution", backend="triton")
