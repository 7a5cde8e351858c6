"""``solve_tril`` in the engines' layout: ``A`` is ``[B, T, H, BT]``, one BT x BT matrix per chunk.

Row ``t`` of ``A[b, :, h, :]`` is row ``t - chunk_start`` of its chunk's matrix; the chunks are
consecutive runs of BT tokens of each sequence (``cu_seqlens`` for packed varlen batches), and the
last chunk of a sequence may be partial. This is the contract of fla's and vLLM's ``solve_tril``.
"""

from __future__ import annotations

import torch

from ..index import chunk_table
from .invert import check_chunk_size, check_dtype, check_out_dtype, invert, resolve_backend


def check_engine_layout(A: torch.Tensor) -> tuple[int, int, int, int]:
    """Validate ``A`` as ``[B, T, H, BT]`` (floating, supported BT); return the four sizes."""
    check_dtype(A)
    if A.dim() != 4:
        raise ValueError(f"A must have shape [B, T, H, BT]; got shape {list(A.shape)} (rank {A.dim()})")
    B, T, H, BT = A.shape
    check_chunk_size(BT)
    return B, T, H, BT


def solve_tril(
    A: torch.Tensor,
    cu_seqlens: torch.Tensor | None = None,
    chunk_indices: torch.Tensor | None = None,
    output_dtype: torch.dtype | None = torch.float32,
    *,
    method: str | None = None,
    precision: str | None = None,
    backend: str = "auto",
    check_finite: bool = False,
    **options,
) -> torch.Tensor:
    """``(I + A)^-1`` for every chunk of an engine-layout ``A``; a drop-in for fla's ``solve_tril``.

    Args:
        A: ``[B, T, H, BT]``, BT in {16, 32, 64, 128}, strictly lower within each chunk (the
            diagonal and upper part of each chunk are ignored); fp16, bf16, fp32 or fp64.
        cu_seqlens: ``[N + 1]`` int32/int64 for a packed varlen batch (then B must be 1).
        chunk_indices: optional precomputed ``[NT, 2]`` ``(sequence, chunk)`` rows for
            ``cu_seqlens``; rows with a negative sequence id are padding and are skipped.
        output_dtype: dtype of the result; ``None`` keeps ``A.dtype`` (fla's convention).
        method, precision, options: as in :func:`deltainv.kernels.invert` (defaults: the
            registry's ``DEFAULT_METHOD`` / ``DEFAULT_PRECISION``).
        backend: ``auto`` (Triton on CUDA when available, else PyTorch), ``torch`` or ``triton``.
        check_finite: raise on NaN/inf in ``A``. Off by default: this sits on the engines'
            hot path, where the check would cost a device-to-host sync; non-finite input then
            propagates to the chunks it touches.

    Returns:
        ``[B, T, H, BT]`` in ``output_dtype``: row ``t`` holds row ``t - chunk_start`` of its
        chunk's inverse (unit diagonal, zeros above it and beyond a partial chunk's end).
    """
    B, T, H, BT = check_engine_layout(A)
    check_out_dtype(output_dtype, "output_dtype")
    out_dtype = A.dtype if output_dtype is None else output_dtype
    backend = resolve_backend(backend, A.device)
    if backend == "triton":
        from .triton import solve_tril as triton_solve_tril

        from ..registry import resolve

        return triton_solve_tril(A, cu_seqlens, chunk_indices, out_dtype,
                                 recipe=resolve(method, precision, **options), check_finite=check_finite)

    def _inv(chunks: torch.Tensor) -> torch.Tensor:
        return invert(
            chunks, method, precision, backend="torch", out_dtype=out_dtype,
            check_finite=check_finite, **options,
        )

    table = chunk_table(B, T, BT, cu_seqlens, chunk_indices, A.device)
    out = torch.zeros(B * T, H, BT, dtype=out_dtype, device=A.device)
    if table.rows.numel():
        chunks = A.reshape(B * T, H, BT)[table.rows]  # [NT, BT, H, BT]
        chunks = torch.where(table.valid[:, :, None, None], chunks, torch.zeros((), dtype=A.dtype, device=A.device))
        X = _inv(chunks.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        out[table.rows[table.valid]] = X[table.valid]
    return out.reshape(B, T, H, BT)
