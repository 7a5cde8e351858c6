"""Varlen bookkeeping shared by every engine-layout kernel: ``cu_seqlens`` and ``chunk_indices``.

Layout conventions (identical to fla / vLLM / SGLang):

- ``cu_seqlens``: ``[N + 1]`` integer, ``cu_seqlens[0] == 0``, non-decreasing, last entry = total
  tokens T of the packed ``[1, T, ...]`` batch. Sequence n owns tokens ``cu_seqlens[n]`` to
  ``cu_seqlens[n+1] - 1``.
- ``chunk_indices``: ``[NT, 2]`` integer, one row ``(n, c)`` per chunk: sequence n, chunk c of it
  (tokens ``cu_seqlens[n] + c*BT`` onwards, at most BT of them, so the last chunk of a sequence
  may be partial). Rows with ``n < 0`` are padding (graph-capture tables) and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_INT_DTYPES = (torch.int32, torch.int64)


def check_cu_seqlens(cu_seqlens: torch.Tensor, total_tokens: int, batch: int) -> list[int]:
    """Validate ``cu_seqlens`` against a packed ``[batch, total_tokens, ...]`` tensor; return it as a list."""
    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"cu_seqlens must be a torch.Tensor, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype not in _INT_DTYPES or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(
            f"cu_seqlens must be a 1-D int32/int64 tensor [N + 1] with N >= 1; "
            f"got dtype {cu_seqlens.dtype}, shape {list(cu_seqlens.shape)}"
        )
    if batch != 1:
        raise ValueError(f"with cu_seqlens the batch must be packed as B = 1; got B = {batch}")
    cu = cu_seqlens.tolist()
    if cu[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0; got {cu[0]}")
    if any(b > e for b, e in zip(cu, cu[1:])):
        raise ValueError(f"cu_seqlens must be non-decreasing; got {cu}")
    if cu[-1] != total_tokens:
        raise ValueError(f"cu_seqlens ends at {cu[-1]} but the tensor holds T = {total_tokens} tokens")
    return cu


def prepare_chunk_indices(cu_seqlens: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``[NT, 2]`` rows ``(sequence, chunk)`` for every chunk of every sequence, in order.

    Same values and dtype (that of ``cu_seqlens``) as fla's ``prepare_chunk_indices``.
    """
    lens = cu_seqlens[1:] - cu_seqlens[:-1]
    counts = (lens + chunk_size - 1).div(chunk_size, rounding_mode="floor").to(torch.int64)
    seq = torch.repeat_interleave(torch.arange(len(counts), device=cu_seqlens.device), counts)
    first = torch.cumsum(counts, 0) - counts
    chunk = torch.arange(int(counts.sum()), device=cu_seqlens.device) - first[seq]
    return torch.stack([seq, chunk], 1).to(cu_seqlens.dtype)


def varlen_chunk_indices(cu_seqlens: torch.Tensor, chunk_indices: torch.Tensor | None, T: int, B: int,
                         chunk_size: int) -> torch.Tensor:
    """The ``[NT, 2]`` chunk table a varlen kernel launch uses: ``chunk_indices`` as given (no
    device-to-host sync; the batch must then be packed, B = 1), else built from a checked ``cu_seqlens``."""
    if chunk_indices is None:
        check_cu_seqlens(cu_seqlens, T, B)
        return prepare_chunk_indices(cu_seqlens, chunk_size)
    if B != 1:
        raise ValueError(f"with cu_seqlens the batch must be packed as B = 1; got B = {B}")
    return chunk_indices


def launch_chunks(cu_seqlens: torch.Tensor | None, chunk_indices: torch.Tensor | None, T: int, B: int,
                  chunk_size: int) -> tuple[torch.Tensor | None, int]:
    """``(chunk_indices, n_chunks)`` of a chunked kernel launch: the varlen chunk table
    (:func:`varlen_chunk_indices`) and its length, or ``(None, B * ceil(T / chunk_size))`` for
    fixed-length batches, where ``chunk_indices`` without ``cu_seqlens`` is an error."""
    if cu_seqlens is not None:
        chunk_indices = varlen_chunk_indices(cu_seqlens, chunk_indices, T, B, chunk_size)
        return chunk_indices, chunk_indices.shape[0]
    if chunk_indices is not None:
        raise ValueError("chunk_indices is only meaningful together with cu_seqlens")
    return None, B * -(-T // chunk_size)


def prepare_chunk_offsets(cu_seqlens: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``[N + 1]``: index of the first chunk of each sequence in the flattened chunk list."""
    lens = cu_seqlens[1:] - cu_seqlens[:-1]
    counts = (lens + chunk_size - 1).div(chunk_size, rounding_mode="floor")
    return torch.nn.functional.pad(counts.cumsum(0), (1, 0)).to(cu_seqlens.dtype)


def chunk_spans(
    cu_seqlens: torch.Tensor,
    chunk_size: int,
    chunk_indices: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """First token and end (exclusive) of every chunk: two ``[NT]`` int64 tensors.

    If ``chunk_indices`` is given it must describe exactly the chunks of ``cu_seqlens``
    (padding rows with a negative sequence id are dropped first); a table that does not is
    rejected, since silently trusting it would read or write the wrong tokens.
    """
    expected = prepare_chunk_indices(cu_seqlens, chunk_size).to(torch.int64)
    if chunk_indices is not None:
        if (
            not isinstance(chunk_indices, torch.Tensor)
            or chunk_indices.dtype not in _INT_DTYPES
            or chunk_indices.dim() != 2
            or chunk_indices.shape[1] != 2
        ):
            raise ValueError(
                "chunk_indices must be an int32/int64 tensor of shape [NT, 2]; got "
                f"{getattr(chunk_indices, 'dtype', type(chunk_indices).__name__)} "
                f"{list(getattr(chunk_indices, 'shape', []))}"
            )
        given = chunk_indices.to(device=cu_seqlens.device, dtype=torch.int64)
        given = given[given[:, 0] >= 0]
        if given.shape != expected.shape or not torch.equal(given, expected):
            raise ValueError(
                f"chunk_indices do not match cu_seqlens for chunk size {chunk_size}: expected "
                f"{expected.shape[0]} chunks {expected.tolist()[:8]}..., got {given.tolist()[:8]}..."
            )
    cu = cu_seqlens.to(torch.int64)
    seq, chunk = expected[:, 0], expected[:, 1]
    starts = cu[seq] + chunk * chunk_size
    ends = torch.minimum(starts + chunk_size, cu[seq + 1])
    return starts, ends


@dataclass(frozen=True)
class ChunkTable:
    """Where every chunk of an engine-layout batch lives, as flat token indices into ``B * T``.

    Attributes:
        rows: ``[NT, BT]`` int64, the flat token index of each row of each chunk (rows past a
            partial chunk's end are clamped to a valid index; mask them with ``valid``).
        valid: ``[NT, BT]`` bool, whether that row is a real token.
        seq: ``[NT]`` int64, the sequence each chunk belongs to (``b`` for fixed-length batches).
        chunk: ``[NT]`` int64, the chunk's position within its sequence.
        num_seqs: number of sequences (``B``, or ``N`` for varlen).
        max_chunks: largest number of chunks of any sequence.
    """

    rows: torch.Tensor
    valid: torch.Tensor
    seq: torch.Tensor
    chunk: torch.Tensor
    num_seqs: int
    max_chunks: int


def chunk_table(
    B: int,
    T: int,
    chunk_size: int,
    cu_seqlens: torch.Tensor | None = None,
    chunk_indices: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> ChunkTable:
    """Build the :class:`ChunkTable` of a ``[B, T, ...]`` batch (packed varlen when ``cu_seqlens``)."""
    if cu_seqlens is None:
        if chunk_indices is not None:
            raise ValueError("chunk_indices is only meaningful together with cu_seqlens")
        cu = torch.arange(B + 1, dtype=torch.int64) * T
    else:
        check_cu_seqlens(cu_seqlens, T, B)
        cu = cu_seqlens.to("cpu", torch.int64)
    starts, ends = chunk_spans(cu, chunk_size, None if cu_seqlens is None else chunk_indices)
    table = prepare_chunk_indices(cu, chunk_size).to(torch.int64)
    offs = torch.arange(chunk_size)
    rows = starts[:, None] + offs
    valid = rows < ends[:, None]
    rows = torch.where(valid, rows, starts[:, None]).clamp(max=max(B * T - 1, 0))
    num_seqs = len(cu) - 1
    max_chunks = int(table[:, 1].max()) + 1 if table.numel() else 0
    return ChunkTable(rows.to(device), valid.to(device), table[:, 0].to(device), table[:, 1].to(device),
                      num_seqs, max_chunks)
