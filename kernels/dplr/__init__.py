"""The DPLR delta rule of RWKV-7: chunked PyTorch forward with the registry's inversion, the
token-by-token recurrence (float64 oracle, fp32 decode step) and fla's fp16 inverse emulated.

- :func:`chunk_dplr_delta_rule`, :func:`chunk_rwkv7`: fla 0.6.0's contracts, any registry method.
- :func:`chunk_dplr_fwd_intra`: the intra-chunk step alone (fla's ``chunk_dplr_fwd_intra`` +
  ``prepare_wy_repr_fwd``); its fused Triton kernel is :mod:`deltainv.kernels.dplr.triton`.
- :func:`recurrent_dplr_delta_rule`: the recurrence (``dtype=float64`` is the oracle).
- :func:`fla_fp16_inverse`: fla's safe-gate inverse (fp16 product form on 16x16 blocks + fp16
  merges), for studies only.
"""

from .fla_recipe import FLA_CHUNK_SIZES, fla_fp16_inverse
from .pytorch import (
    RWKV7_LOWER_BOUND,
    check_dplr_inputs,
    chunk_dplr_delta_rule,
    chunk_dplr_fwd_intra,
    chunk_rwkv7,
    recurrent_dplr_delta_rule,
)

__all__ = [
    "FLA_CHUNK_SIZES",
    "RWKV7_LOWER_BOUND",
    "check_dplr_inputs",
    "chunk_dplr_delta_rule",
    "chunk_dplr_fwd_intra",
    "chunk_rwkv7",
    "fla_fp16_inverse",
    "recurrent_dplr_delta_rule",
]
