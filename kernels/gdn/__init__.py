"""Gated DeltaNet (GDN) chunked forward: PyTorch reference with any registry inversion method."""

from .pytorch import (
    chunk_gated_delta_rule,
    chunk_gated_delta_rule_fwd_intra,
    chunk_local_cumsum,
    chunk_scaled_dot_kkt,
    l2norm,
    naive_recurrent_gated_delta_rule,
)

__all__ = [
    "chunk_gated_delta_rule",
    "chunk_gated_delta_rule_fwd_intra",
    "chunk_local_cumsum",
    "chunk_scaled_dot_kkt",
    "l2norm",
    "naive_recurrent_gated_delta_rule",
]
