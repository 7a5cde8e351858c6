"""Drop-ins keep the engines' exact signatures and return contracts."""

import inspect

import pytest
import torch

from deltainv.kernels import dropin, solve_tril
from deltainv.kernels.gdn import chunk_gated_delta_rule_fwd_intra, l2norm
from deltainv.kernels.gdn import naive_recurrent_gated_delta_rule as naive_recurrent
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


def test_vllm_cpu_gdn_updates_the_state_pool_in_place(seed):
    g = torch.Generator().manual_seed(seed)
    T, H, HV, K, V = 150, 2, 4, 32, 16
    q, k = torch.randn(1, T, H, K, generator=g), torch.randn(1, T, H, K, generator=g)
    v = torch.randn(1, T, HV, V, generator=g)
    gate, beta = -0.3 * torch.rand(1, T, HV, generator=g), torch.rand(1, T, HV, generator=g)
    cu = torch.tensor([0, 70, 150], dtype=torch.int32)
    slots = torch.tensor([3, 1], dtype=torch.int32)
    pool = torch.randn(5, HV, K, V, generator=g)
    before = pool.clone()
    fn = dropin.vllm_cpu_gdn("substitution")
    assert list(inspect.signature(fn).parameters) == [
        "query", "key", "value", "g", "beta", "initial_state", "output_final_state", "cu_seqlens", "head_first",
        "use_qk_l2norm_in_kernel", "initial_state_indices", "eps"]
    o, ret = fn(q.bfloat16(), k.bfloat16(), v.bfloat16(), gate, beta, pool, False, cu, False, True, slots)
    assert ret is pool and o.dtype == torch.bfloat16 and o.shape == (1, T, HV, V)
    ro, rS = naive_recurrent(l2norm(q.bfloat16(), 1e-5), l2norm(k.bfloat16(), 1e-5), v.bfloat16(), gate, beta,
                             initial_state=before[slots.long()], cu_seqlens=cu)
    torch.testing.assert_close(o.double(), ro, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(pool[slots.long()].double(), rS, atol=1e-4, rtol=1e-4)
    untouched = [0, 2, 4]
    assert torch.equal(pool[untouched], before[untouched])
    with pytest.raises(ValueError, match="head_first"):
        fn(q, k, v, gate, beta, pool, True, cu, True, True, slots)


@pytest.mark.parametrize("model", ["qwen3_next", "qwen3_5"])
def test_transformers_gdn_matches_transformers_own_torch_function(model, seed):
    modeling = pytest.importorskip(f"transformers.models.{model}.modeling_{model}")
    theirs = inspect.unwrap(modeling.torch_chunk_gated_delta_rule)
    ours = dropin.transformers_gdn("mxr_refine")
    assert list(inspect.signature(ours).parameters) == list(inspect.signature(theirs).parameters)
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 100, 2, 32, generator=g), torch.randn(2, 100, 2, 32, generator=g)
    v = torch.randn(2, 100, 4, 16, generator=g)
    gate, beta = -torch.rand(2, 100, 4, generator=g), torch.rand(2, 100, 4, generator=g)
    h0 = torch.randn(2, 4, 32, 16, generator=g)
    kw = dict(g=gate, beta=beta, initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=True)
    o1, s1 = ours(q, k, v, **kw, unrelated_kwarg=1)
    o2, s2 = theirs(q, k, v, **kw)
    torch.testing.assert_close(o1, o2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s1, s2, atol=1e-5, rtol=1e-5)


def test_transformers_kda_matches_transformers_own_torch_function(seed):
    modeling = pytest.importorskip("transformers.models.kimi_linear.modeling_kimi_linear")
    theirs = inspect.unwrap(modeling.chunk_kimi_delta_attention)
    ours = dropin.transformers_kda("mxr_refine")
    assert list(inspect.signature(ours).parameters) == list(inspect.signature(theirs).parameters)
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, 100, 2, 16, generator=g) for _ in range(3))
    gate, beta = -torch.rand(1, 100, 2, 16, generator=g), torch.rand(1, 100, 2, generator=g)
    kw = dict(g=gate, beta=beta, output_final_state=True, use_qk_l2norm_in_kernel=True)
    o1, s1 = ours(q, k, v, **kw)
    o2, s2 = theirs(q, k, v, **kw)
    torch.testing.assert_close(o1, o2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s1, s2, atol=1e-5, rtol=1e-5)


def _kda_raw(seed, T, H=2, D=16):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, T, H, D, generator=g) for _ in range(3))
    raw_g, raw_beta = torch.randn(1, T, H, D, generator=g), torch.randn(1, T, H, generator=g)
    A_log, dt_bias = torch.randn(H, generator=g) * 0.5, torch.randn(H * D, generator=g)
    return q, k, v, raw_g, raw_beta, A_log, dt_bias


def test_vllm_kda_fused_gate_is_kimi_linear_prefill_with_value_major_states(seed):
    """vLLM's Kimi prefill contract: raw gate/beta, A_log, bias, q/k L2-normalised, states [N, H, V, K]."""
    from deltainv.kernels.kda import kda_beta, kda_gate, naive_recurrent_kda

    q, k, v, raw_g, raw_beta, A_log, dt_bias = _kda_raw(seed, 150)
    cu = torch.tensor([0, 90, 150], dtype=torch.int32)
    h0 = torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(seed + 1))   # [N, H, V, K]
    fn = dropin.vllm_kda_fused_gate("mxr_refine")
    out = torch.empty_like(v)
    o, final = fn(q, k, v, raw_g, raw_beta, A_log, dt_bias, initial_state=h0, output_final_state=True,
                  use_qk_l2norm_in_kernel=True, cu_seqlens=cu, out=out)
    assert o.data_ptr() == out.data_ptr() and final.shape == h0.shape
    ro, rS = naive_recurrent_kda(l2norm(q), l2norm(k), v, kda_gate(raw_g, A_log, dt_bias), kda_beta(raw_beta),
                                 initial_state=h0.mT, cu_seqlens=cu)
    torch.testing.assert_close(o.double(), ro, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(final.double(), rS.mT, atol=2e-5, rtol=2e-5)
    with_bound, _ = fn(q, k, v, raw_g, raw_beta, A_log, dt_bias, lower_bound=-5.0, cu_seqlens=cu)
    assert not torch.allclose(with_bound, o)   # the safe gate is a different gate


def test_vllm_kda_packed_decode_advances_live_slots_in_place(seed):
    """One decode token per sequence from packed post-conv q|k|v; slot 0 (vLLM's null block) is padding."""
    from deltainv.kernels.kda import kda_beta, kda_gate, naive_recurrent_kda

    q, k, v, raw_g, raw_beta, A_log, dt_bias = _kda_raw(seed, 3)
    pool = torch.randn(5, 2, 16, 16, generator=torch.Generator().manual_seed(seed + 2))    # [slots, H, V, K]
    before = pool.clone()
    slots = torch.tensor([3, 0, 1])
    mixed = torch.cat([q[0].flatten(1), k[0].flatten(1), v[0].flatten(1)], dim=-1)     # [B, 2HK + HV]
    o, returned = dropin.vllm_kda_packed_decode()(mixed, raw_g, raw_beta, A_log, dt_bias, None, pool, slots)
    assert returned is pool and o.shape == (1, 3, 2, 16)
    assert (o[0, 1] == 0).all() and torch.equal(pool[[0, 2, 4]], before[[0, 2, 4]])
    for row, slot in ((0, 3), (2, 1)):
        t = slice(row, row + 1)
        ro, rS = naive_recurrent_kda(l2norm(q[:, t]), l2norm(k[:, t]), v[:, t],
                                     kda_gate(raw_g[:, t], A_log, dt_bias), kda_beta(raw_beta[:, t]),
                                     initial_state=before[slot:slot + 1].mT)
        torch.testing.assert_close(o[0, row].double(), ro[0, 0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pool[slot].double(), rS[0].mT, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="do not match a state pool"):
        dropin.vllm_kda_packed_decode()(mixed[:, :-1], raw_g, raw_beta, A_log, dt_bias, None, pool, slots)
