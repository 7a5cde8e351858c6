"""Kimi Delta Attention (KDA) chunked forward: PyTorch reference with any registry inversion method."""

from .pytorch import chunk_kda, naive_recurrent_kda

__all__ = ["chunk_kda", "naive_recurrent_kda"]
