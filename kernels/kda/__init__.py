"""Kimi Delta Attention (KDA) chunked forward: PyTorch reference with any registry inversion method."""

from .gate import kda_beta, kda_gate
from .pytorch import chunk_kda, naive_recurrent_kda, recurrent_kda_step

__all__ = ["chunk_kda", "kda_beta", "kda_gate", "naive_recurrent_kda", "recurrent_kda_step"]
