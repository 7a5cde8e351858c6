"""``deltainv.kernels.backend``: the one place that picks torch or Triton for a recipe and a device."""

from __future__ import annotations

import pytest
import torch

from deltainv.kernels import METHODS, invert, resolve, solve_tril
from deltainv.kernels.backend import BackendError, BackendUnavailable, choose, triton_available, triton_methods
from deltainv.kernels.inputs import chunk_matrices, engine_layout

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")


def test_triton_methods_are_the_registry_entries_with_a_triton_implementation():
    assert triton_methods() == tuple(n for n, m in METHODS.items() if "triton" in m.impls)
    assert {"substitution", "mxr", "mxr_refine"} <= set(triton_methods()) < set(METHODS)


@pytest.mark.parametrize("method", list(METHODS))
def test_torch_is_torch_and_auto_off_cuda_is_torch(method):
    recipe = resolve(method, "fp32")
    assert choose(recipe, "cpu", "torch") == "torch"
    assert choose(recipe, "cpu", "auto") == "torch"


@no_gpu
@pytest.mark.parametrize("method", list(METHODS))
def test_auto_on_cuda_without_a_driver_is_torch(method):
    assert not triton_available()
    assert choose(resolve(method, "fp32"), "cuda", "auto") == "torch"


@pytest.mark.parametrize("method", [m for m in METHODS if "triton" not in METHODS[m].impls])
def test_explicit_triton_refuses_methods_without_a_kernel(method):
    with pytest.raises(BackendError, match=f"method '{method}' has no 'triton' implementation; methods with one: "
                                           f"{', '.join(triton_methods())}"):
        choose(resolve(method, "fp32"), "cpu", "triton")


@no_gpu
def test_explicit_triton_without_a_gpu_names_the_problem_and_the_fix(monkeypatch):
    """Issue 17: not Triton's internal '0 active drivers', but what is wrong and what to do."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    recipe = resolve("mxr")
    with pytest.raises(BackendUnavailable, match=r"needs a CUDA tensor; this one is on cpu.*backend='torch' "
                                                 r"\(or 'auto'\).*TRITON_INTERPRET=1"):
        choose(recipe, "cpu", "triton")
    with pytest.raises(BackendUnavailable, match=r"Triton has no active GPU driver.*Use backend='torch' \(or 'auto'\)"):
        choose(recipe, "cuda", "triton")
    with pytest.raises(RuntimeError, match="needs a CUDA tensor"):
        invert(chunk_matrices("gdn", 2, 16, seed=0), "mxr", backend="triton")
    with pytest.raises(RuntimeError, match="needs a CUDA tensor"):
        solve_tril(engine_layout("gdn", 1, 32, 1, 16, seed=0), backend="triton")


def test_the_interpreter_counts_as_a_device(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert choose(resolve("mxr_refine"), "cpu", "triton") == "triton"
    assert choose(resolve("mxr_refine"), "cpu", "auto") == "torch"  # auto never picks the interpreter


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'cuda'; choose auto, torch, triton"):
        choose(resolve("mxr"), "cpu", "cuda")


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.complex64])
def test_output_dtype_must_be_floating(dtype):
    """Issue 17: an integer out_dtype used to round the inverse to integers silently."""
    with pytest.raises(TypeError, match=f"out_dtype must be None or float16, bfloat16, float32 or float64, got {dtype}"):
        invert(chunk_matrices("gdn", 2, 16, seed=0), "mxr", out_dtype=dtype)
    with pytest.raises(TypeError, match=f"output_dtype must be None or float16.*got {dtype}"):
        solve_tril(engine_layout("gdn", 1, 32, 1, 16, seed=0), output_dtype=dtype, backend="torch")
    with pytest.raises(TypeError, match="out_dtype must be None or float16.*got float32"):
        invert(chunk_matrices("gdn", 2, 16, seed=0), out_dtype="float32")


def test_a_recipe_is_passed_down_unchanged():
    A = chunk_matrices("gdn", 3, 32, seed=1)
    recipe = resolve("mxr_refine", "tf32", refine_precision="tf32x3")
    assert torch.equal(invert(A, recipe), invert(A, "mxr_refine", "tf32", refine_precision="tf32x3"))
    with pytest.raises(TypeError, match="Recipe together with precision/options"):
        invert(A, recipe, "fp32")
