"""fla 0.6.0's DPLR Triton kernels (under the CPU interpreter, or on CUDA) against deltainv's DPLR path.

- fla's safe-gate inverse (``prepare_wy_repr_fwd_kernel_safe``) equals deltainv's emulation of it;
- fla's whole ``chunk_rwkv7`` (fp16, the RWKV-7 layer's call) and deltainv's chunked forward agree to
  fp16 level, with packed sequences and initial states: the same contract (gate units, scale, state
  layout, varlen).
"""

from __future__ import annotations

import pytest
import torch
from support.device import DEVICE
from support.dplr import rwkv7_inputs

from deltainv.kernels.dplr import RWKV7_LOWER_BOUND, chunk_rwkv7, fla_fp16_inverse, recurrent_dplr_delta_rule
from deltainv.kernels.inputs import chunk_matrices

pytest.importorskip("fla.ops.generalized_delta_rule.dplr.wy_fast_fwd")


@pytest.mark.parametrize("C", [16, 32, 64])
def test_fla_safe_gate_inverse_is_emulated_exactly(C):
    from fla.ops.generalized_delta_rule.dplr.wy_fast_fwd import prepare_wy_repr_fwd

    n, K, V = 3, 16, 16
    A = chunk_matrices("dplr", n, C, seed=C).float()                     # deltainv's convention
    A_ab = (-A).reshape(1, n * C, 1, C).contiguous()                     # fla's [B, T, H, BT] rows
    ag = torch.randn(1, n * C, 1, K).half()
    v = torch.randn(1, n * C, 1, V).half()
    _, _, inv = prepare_wy_repr_fwd(ag=ag.to(DEVICE), v=v.to(DEVICE), A_ak=torch.zeros_like(A_ab).to(DEVICE),
                                    A_ab=A_ab.to(DEVICE), cu_seqlens=None, chunk_size=C, safe_gate=True)
    got = inv.cpu().reshape(n, C, C)
    torch.testing.assert_close(got, fla_fp16_inverse(A), rtol=2e-6, atol=2e-6)


def test_fla_chunk_rwkv7_matches_contract(seed):
    from fla.ops.rwkv7 import chunk_rwkv7 as fla_chunk_rwkv7

    r, w, k, v, a, b = (x.reshape(1, -1, *x.shape[2:]) for x in rwkv7_inputs(seed, B=2, T=80, H=2, K=16, V=16))
    cu = torch.tensor([0, 30, 160], dtype=torch.int32)
    h0 = 0.5 * torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(seed))
    half = [x.half() for x in (r, w, k, v, a, b)]
    fo, fS = fla_chunk_rwkv7(*(x.to(DEVICE) for x in half), scale=1.0, initial_state=h0.to(DEVICE),
                             output_final_state=True, cu_seqlens=cu.long().to(DEVICE), safe_gate=True,
                             lower_bound=RWKV7_LOWER_BOUND, chunk_size=64)
    ins = [x.float() for x in half]
    o, S = chunk_rwkv7(*ins, initial_state=h0, output_final_state=True, cu_seqlens=cu, method="mxr_refine")
    ro, rS = recurrent_dplr_delta_rule(ins[0], ins[2], ins[3], ins[4], ins[5], ins[1], scale=1.0, initial_state=h0,
                                       cu_seqlens=cu)
    scale = ro.abs().max().item()
    assert (o.double() - ro).abs().max() <= 1e-5 * scale
    # fla keeps q*exp(G), k, v and the state products in fp16: agreement to fp16 level only.
    assert (fo.cpu().double() - ro).abs().max() <= 3e-3 * scale
    assert (fS.cpu().double() - rS).abs().max() <= 3e-3 * rS.abs().max()
