"""Drop-ins keep the engines' exact signatures and return contracts."""

import inspect

import pytest
import torch

from deltainv.kernels import dropin, solve_tril
from deltainv.kernels.gdn import chunk_gated_delta_rule_fwd_intra, l2norm
from deltainv.kernels.inputs import engine_layout


def test_signatures_match_the_engines():
    fla = pytest.importorskip("fla.ops.utils.solve_tril")
    theirs = inspect.signature(inspect.unwrap(fla.solve_tril))
    ours = inspect.signature(dropin.solve_tril("mxr"))
    assert list(ours.parameters) == list(theirs.parameters) == ["A", "cu_seqlens", "chunk_indices", "output_dtype"]
    assert ours.parameters["output_dtype"].default == torch.float
    intra = inspect.signature(dropin.sglang_gdn_fwd_intra("mxr"))
    assert list(intra.parameters) == ["k", "v", "g", "beta", "cu_seqlens", "chunk_size", "chunk_indices"]
    fla_intra = pytest.importorskip("fla.ops.gated_delta_rule.chunk_fwd")
    theirs = inspect.signature(inspect.unwrap(fla_intra.chunk_gated_delta_rule_fwd_intra))
    assert set(intra.parameters) == set(theirs.parameters)


def test_solve_tril_dropin_is_solve_tril_with_the_chosen_method(seed):
    A = engine_layout("gdn", 1, 200, 2, 64, seed=seed)
    fn = dropin.solve_tril("mxr_refine", "tf32", refine_precision="tf32x3")
    assert fn.deltainv["method"] == "mxr_refine" and fn.deltainv["refine_precision"] == "tf32x3"
    assert torch.equal(fn(A), solve_tril(A, method="mxr_refine", precision="tf32", refine_precision="tf32x3"))
    assert fn(A, output_dtype=None).dtype == torch.float32
    with pytest.raises(ValueError, match="unknown method"):
        dropin.solve_tril("nope")


def test_gdn_intra_dropins_differ_only_in_gate_units(seed):
    g = torch.Generator().manual_seed(seed)
    k = l2norm(torch.randn(1, 100, 2, 16, generator=g))
    v = torch.randn(1, 100, 4, 8, generator=g)
    beta = torch.rand(1, 100, 4, generator=g)
    gc = torch.cumsum(-0.1 * torch.rand(1, 100, 4, generator=g), 1)
    sgl = dropin.sglang_gdn_fwd_intra("substitution")(k, v, gc, beta, chunk_size=32)
    fla = dropin.fla_gdn_fwd_intra("substitution")(k, v, gc / torch.log(torch.tensor(2.0)), beta, None, 32)
    ref = chunk_gated_delta_rule_fwd_intra(k, v, gc, beta, chunk_size=32, method="substitution")
    for a, b, c in zip(sgl, fla, ref):
        torch.testing.assert_close(a, c, rtol=0, atol=0)
        torch.testing.assert_close(b, c, rtol=1e-5, atol=1e-6)
