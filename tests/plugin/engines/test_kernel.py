"""``deltainv.plugin.engines.kernel``: the settings reach the drop-ins an engine target is built from."""

from __future__ import annotations

import pytest
import torch

from deltainv.kernels import dropin
from deltainv.kernels.gdn import chunk_local_cumsum, l2norm
from deltainv.kernels.gdn.pytorch import chunk_gated_delta_rule_fwd_intra as reference
from deltainv.plugin.engines import kernel, last
from deltainv.plugin.settings import Settings


def _bf16_inputs(seed: int, T: int = 96, H: int = 1, HV: int = 2, K: int = 32, V: int = 32):
    g = torch.Generator().manual_seed(seed)
    k = l2norm(torch.randn(1, T, H, K, generator=g)).bfloat16()
    v = torch.randn(1, T, HV, V, generator=g).bfloat16()
    beta = torch.rand(1, T, HV, generator=g).bfloat16()
    gc = chunk_local_cumsum(-0.1 * torch.rand(1, T, HV, generator=g), 64) / torch.log(torch.tensor(2.0))
    return k, v, gc, beta


@pytest.mark.parametrize("wu", ["auto", "tf32x3", "fp32"])
def test_wu_precision_setting_reaches_the_intra_dropin(wu, seed):
    """DELTAINV_WU_PRECISION picks the W/U operand rounding of the GDN intra drop-in; ``auto`` is
    bf16 for bf16 tensors (fla's recipe), any other value is used as named."""
    built = kernel(dropin.fla_gdn_fwd_intra, Settings(method="substitution", wu_precision=wu, backend="torch"),
                   pick=last, with_backend=True)
    k, v, gc, beta = _bf16_inputs(seed)
    w, u, _ = built.fast(k, v, gc, beta, None, 64)
    want = "bf16" if wu == "auto" else wu
    assert built.info["wu_precision"] == (None if wu == "auto" else wu)
    for name, prec in (("want", want), ("other", "bf16" if want != "bf16" else "tf32x3")):
        rw, ru, _ = reference(k, v, gc, beta, None, 64, gate_log2=True, method="substitution", wu_precision=prec)
        same = torch.equal(w, rw) and torch.equal(u, ru)
        assert same == (name == "want"), (wu, prec)
