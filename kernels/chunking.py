"""Chunking helpers shared by the chunked delta-rule references (GDN, KDA, DPLR / RWKV-7).

Every chunked forward moves tokens between the engines' layout and chunk space, and passes a
``K x V`` state from chunk to chunk. These are the pieces they share; each family's module keeps
only its own math (how ``A`` is built, how the gate decays the state).

Layouts (fla / vLLM / SGLang):

- engine layout: ``[B, T, ...]`` (``q, k``: ``[B, T, H, K]``; ``v``: ``[B, T, HV, V]``; ``beta``:
  ``[B, T, HV]``; gates ``[B, T, HV]`` (GDN) or ``[B, T, HV, K]`` (KDA)); packed varlen batches
  have B = 1 and ``cu_seqlens``. HV is a multiple of H: value head ``h`` reads key head
  ``h // (HV // H)`` (grouped heads, as in Qwen3-Next).
- chunk space: ``[NT, BT, ...]``, one row block per chunk of :class:`~deltainv.kernels.index.ChunkTable`
  (``NT`` chunks of ``BT`` rows; the last chunk of a sequence may be partial: its rows past the
  end are *padding*).
- heads first: ``[NT, HV, BT, ...]``, what the per-chunk matrix products want.

Padding rows never hold a real token, but they go through the same arithmetic as real rows, and
a NaN or inf born there spreads into real rows through every matrix product (``0 * inf = NaN``).
So: data (``k``, ``v``, ``beta``, ``q``) is padded with zeros, and an *already cumulated* gate
is padded with the chunk's last real value (``pad="edge"``), so ``exp(G_pad - G_j)`` is a decay
like any other, never ``exp(0 - G_j)``, which overflows once ``G_j < -88.7`` (ln units) or
``-128`` (log2 units). Gates that are cumulated in chunk space after a zero-padded gather get the
same edge values for free.
"""

from __future__ import annotations

import torch

from .index import ChunkTable

#: Operand precision of the ``W = T (beta exp(G) K)`` and ``U = T (beta V)`` products when the caller
#: names none, by the dtype ``W``/``U`` are stored in: the cheapest operand format whose rounding is
#: no coarser than that storage. bf16 models store ``W``/``U`` in bf16, so bf16 operands (fla's and the
#: engines' recipe: ``T`` rounded to bf16) cost one more rounding of the same size and take the
#: tensor cores' bf16 path; fp16 storage gets tf32 (fp16's mantissa, fp32's range: ``T`` can exceed
#: 65504); fp32 (and float64) storage gets tf32x3. README "Numerics" has the measured cost.
WU_PRECISION_BY_DTYPE: dict[torch.dtype, str] = {torch.bfloat16: "bf16", torch.float16: "tf32"}
FULL_WU_PRECISION = "tf32x3"


def default_wu_precision(dtype: torch.dtype, wu_precision: str | None = None) -> str:
    """``wu_precision`` if given, else the default for ``W``/``U`` stored in ``dtype`` (see
    :data:`WU_PRECISION_BY_DTYPE`); the caller validates the name."""
    if wu_precision is not None:
        return wu_precision
    return WU_PRECISION_BY_DTYPE.get(dtype, FULL_WU_PRECISION)


def check_inputs(
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    *,
    q: torch.Tensor | None = None,
    gate_per_channel: bool = False,
) -> tuple[int, int]:
    """Validate the engine-layout inputs of a chunked delta rule; return ``(H, HV)``.

    ``k``: ``[B, T, H, K]``; ``v``: ``[B, T, HV, V]`` with HV a multiple of H; ``beta``:
    ``[B, T, HV]``; ``q`` (optional): ``k``'s shape; ``g`` (optional): ``[B, T, HV]``, or
    ``[B, T, HV, K]`` with ``gate_per_channel`` (KDA). Raises ``ValueError`` naming the tensor.
    """
    if k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"k must be [B, T, H, K] and v [B, T, HV, V]; got {list(k.shape)} and {list(v.shape)}")
    B, T, H, K = k.shape
    HV = v.shape[2]
    if q is not None and q.shape != k.shape:
        raise ValueError(f"q must have k's shape {list(k.shape)}; got {list(q.shape)}")
    if v.shape[:2] != (B, T) or HV % H:
        raise ValueError(f"v {list(v.shape)} does not match k {list(k.shape)} (HV must be a multiple of H)")
    if beta.shape != (B, T, HV):
        raise ValueError(f"beta must be [B, T, HV] = {[B, T, HV]}; got {list(beta.shape)}")
    if g is not None:
        want = (B, T, HV, K) if gate_per_channel else (B, T, HV)
        if g.shape != want:
            what = " (one gate per channel)" if gate_per_channel else ""
            raise ValueError(f"g must be [B, T, HV{', K' if gate_per_channel else ''}] = {list(want)}{what}; "
                             f"got {list(g.shape)}")
    return H, HV


def last_rows(table: ChunkTable) -> torch.Tensor:
    """``[NT]`` int64: the flat token index of each chunk's last real row."""
    count = table.valid.sum(1, keepdim=True).clamp_min(1)
    return table.rows.gather(1, count - 1)[:, 0]


def gather(x: torch.Tensor, table: ChunkTable, pad: str = "zero") -> torch.Tensor:
    """Engine layout to chunk space: ``[B, T, ...] -> [NT, BT, ...]`` float32.

    ``pad``: what rows past a partial chunk's end hold: ``"zero"`` (data, per-token gates) or
    ``"edge"`` (the chunk's last real row; for gates that are already cumulated, see the
    module docstring).
    """
    flat = x.reshape(-1, *x.shape[2:]).float()
    if pad == "edge":
        rows = torch.where(table.valid, table.rows, last_rows(table)[:, None])
        return flat[rows]
    if pad != "zero":
        raise ValueError(f"pad must be 'zero' or 'edge', got {pad!r}")
    out = flat[table.rows]
    return torch.where(row_mask(table, out.dim()), out, torch.zeros((), dtype=out.dtype, device=out.device))


def scatter(y: torch.Tensor, table: ChunkTable, B: int, T: int, dtype: torch.dtype) -> torch.Tensor:
    """Chunk space to engine layout: ``[NT, BT, ...] -> [B, T, ...]`` in ``dtype``; padding rows are dropped."""
    out = torch.zeros(B * T, *y.shape[2:], dtype=dtype, device=y.device)
    out[table.rows[table.valid]] = y[table.valid].to(dtype)
    return out.reshape(B, T, *y.shape[2:])


def row_mask(table: ChunkTable, dim: int) -> torch.Tensor:
    """``table.valid`` (``[NT, BT]``) reshaped to broadcast against a chunk-space tensor of rank ``dim``."""
    return table.valid.reshape(*table.valid.shape, *([1] * (dim - 2)))


def heads_first(x: torch.Tensor, repeat: int = 1) -> torch.Tensor:
    """``[NT, BT, H, ...] -> [NT, H * repeat, BT, ...]``: heads before rows, each head repeated
    ``repeat`` times in place (key heads expanded to the value heads that share them)."""
    x = x.movedim(2, 1)
    return x.repeat_interleave(repeat, dim=1) if repeat > 1 else x


def valid_heads_first(table: ChunkTable) -> torch.Tensor:
    """``[NT, 1, BT]`` bool: which rows of a heads-first chunk tensor are real tokens."""
    return table.valid[:, None, :]


def gate_exp(x: torch.Tensor, log2: bool) -> torch.Tensor:
    """``2^x`` for gates in log2 units (fla 0.6.0), ``e^x`` for natural-log gates (vLLM, SGLang)."""
    return torch.exp2(x) if log2 else torch.exp(x)


def pairwise_decay(G: torch.Tensor, log2: bool, strict: bool) -> torch.Tensor:
    """``D_ij = exp(G_i - G_j)`` on the lower triangle (``i > j``, or ``i >= j`` unless ``strict``), 0 elsewhere.

    ``G``: ``[..., BT]`` cumulative gate -> ``[..., BT, BT]``. The exponent is masked before the
    exponential: above the diagonal ``G_i - G_j >= 0`` and can overflow.
    """
    BT = G.shape[-1]
    mask = torch.ones(BT, BT, dtype=torch.bool, device=G.device).tril(-1 if strict else 0)
    zero = torch.zeros((), dtype=G.dtype, device=G.device)
    diff = torch.where(mask, G[..., :, None] - G[..., None, :], zero)
    return torch.where(mask, gate_exp(diff, log2), zero)


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / sqrt(sum(x^2) + eps)`` over the last dim, float32 (fla's and transformers' l2norm)."""
    x = x.float()
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def chunk_recurrence(
    w: torch.Tensor,
    u: torch.Tensor,
    q_decay: torch.Tensor,
    qk: torch.Tensor,
    k_decay: torch.Tensor,
    state_decay: torch.Tensor,
    table: ChunkTable,
    initial_state: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The state passed from chunk to chunk, every sequence at once.

    Per chunk, with ``S`` the ``K x V`` state entering it::

        V' = U - W S
        O  = scale (Q_decay S + QK V')
        S <- state_decay * S + K_decay^T V'

    Args:
        w, q_decay, k_decay: ``[NT, HV, BT, K]`` float32. u: ``[NT, HV, BT, V]``.
        qk: ``[NT, HV, BT, BT]`` (the decayed, causally masked ``Q K^T``).
        state_decay: broadcasts against ``[NT, HV, K, V]`` (one factor per head for GDN,
            ``[NT, HV, K, 1]`` per key channel for KDA).
        table: the chunks (sequence and position of each).
        initial_state: ``[N, HV, K, V]`` or None (zeros); N = number of sequences.
        scale: query scale.

    Returns:
        ``(O [NT, HV, BT, V], final state [N, HV, K, V])``, both float32.
    """
    N, HV, K, Vd = table.num_seqs, u.shape[1], w.shape[-1], u.shape[-1]
    dev = u.device
    if initial_state is None:
        S = torch.zeros(N, HV, K, Vd, dtype=torch.float32, device=dev)
    else:
        if initial_state.shape != (N, HV, K, Vd):
            raise ValueError(f"initial_state must be [N, HV, K, V] = {[N, HV, K, Vd]}; got {list(initial_state.shape)}")
        S = initial_state.float().clone()
    by_pos = torch.full((N, max(table.max_chunks, 1)), -1, dtype=torch.int64, device=dev)
    by_pos[table.seq, table.chunk] = torch.arange(table.seq.numel(), device=dev)
    o = torch.zeros(u.shape[0], HV, u.shape[2], Vd, dtype=torch.float32, device=dev)
    for c in range(table.max_chunks):
        ids = by_pos[:, c]
        has = ids >= 0
        idx, seqs = ids[has], has.nonzero()[:, 0]
        Sc = S[seqs]
        v_new = u[idx] - w[idx] @ Sc
        o[idx] = scale * (q_decay[idx] @ Sc + qk[idx] @ v_new)
        S[seqs] = state_decay[idx] * Sc + k_decay[idx].mT @ v_new
    return o, S


__all__ = [
    "FULL_WU_PRECISION",
    "WU_PRECISION_BY_DTYPE",
    "default_wu_precision",
    "check_inputs",
    "chunk_recurrence",
    "gate_exp",
    "gather",
    "heads_first",
    "l2norm",
    "last_rows",
    "pairwise_decay",
    "row_mask",
    "scatter",
    "valid_heads_first",
]
