"""fla 0.6: ``fla.ops.utils.solve_tril`` and the GDN intra path (gates in log2)."""

from __future__ import annotations

import torch

from deltainv.kernels import dropin

from . import chunk_size_reason, itself, kernel, last


def _solve_tril_accepts(A, cu_seqlens=None, chunk_indices=None, output_dtype=torch.float):
    if not isinstance(A, torch.Tensor) or A.dim() != 4:
        return "A is not a [B, T, H, BT] tensor"
    if not A.is_floating_point():
        return f"A has dtype {A.dtype}"
    return chunk_size_reason(A.shape[-1])


def _intra_accepts(k, v, g=None, beta=None, cu_seqlens=None, chunk_size=64, chunk_indices=None):
    if beta is None or not isinstance(k, torch.Tensor) or k.dim() != 4:
        return "inputs are not [B, T, H, K] tensors with beta"
    return chunk_size_reason(chunk_size)


def solve_tril(settings, original, target):
    return kernel(dropin.solve_tril, settings, pick=itself, accepts=_solve_tril_accepts, with_backend=True)


def gdn_intra(settings, original, target):
    return kernel(dropin.fla_gdn_fwd_intra, settings, pick=last, accepts=_intra_accepts, with_backend=True)
