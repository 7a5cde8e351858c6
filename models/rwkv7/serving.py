"""Engine-neutral pieces of serving RWKV-7 from an engine's per-sequence state slots.

Used by deltainv's vLLM (:mod:`deltainv.models.rwkv7.vllm`) and SGLang
(:mod:`deltainv.models.rwkv7.sglang`) models, which hold engine glue only. Nothing here imports an
engine. The math stays :mod:`deltainv.models.rwkv7.modeling`'s; this module decides how one engine
step is cut into calls of an :class:`~deltainv.models.rwkv7.modeling.RWKV7Block` and where each
call's state comes from and goes to.

State slots (one per running sequence, per layer), as both engines allocate them:

- ``shift``: ``[slots, 2, D]`` (model dtype): the last hidden vector each token shift saw (row 0:
  time mixing, row 1: channel mixing);
- ``wkv``: ``[slots, H, K, V]`` (fp32 by default): the DPLR recurrent state
  ``S_t = S_{t-1} (diag(w_t) + a_t b_t^T) + v_t k_t^T`` (stored transposed as ``[K, V]`` per head).

A step is a flat ``[num_tokens, D]`` batch of requests, each a contiguous run of tokens
(``starts``: the engine's ``query_start_loc``). :func:`plan_groups` cuts it into maximal runs of
one-token requests (decodes: one ``[N, 1, D]`` batch through the fp32 recurrent step) and of
longer ones (prefills and continued prefill chunks: packed ``[1, T, D]`` with ``cu_seqlens``
through the chunked DPLR forward). :func:`forward_step` runs one block over those groups, reading
each request's entering state from its slot (zero where the request is ``fresh``) and writing its
final state back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .configuration import RWKV7Config
from .modeling import Inversion, RWKV7Block, RWKV7State

#: The architecture name deltainv serves (``config.json``'s ``architectures``).
ARCH = "RWKV7ForCausalLM"


def rwkv7_config(hf_config, engine: str) -> RWKV7Config:
    """``hf_config`` as deltainv's :class:`RWKV7Config`; ``ValueError`` if it is not RWKV-7.

    The engine hands over whatever its config loader built: deltainv's class (or a subclass),
    or a remote-code class of the same format; anything whose ``model_type`` is not ``rwkv7`` is
    refused, so deltainv's model never claims another architecture's checkpoint.
    """
    model_type = getattr(hf_config, "model_type", None)
    if model_type != RWKV7Config.model_type:
        raise ValueError(f"deltainv's {engine} {ARCH} serves fla-format RWKV-7 checkpoints (config.json model_type "
                         f"'rwkv7'); this model's config has model_type={model_type!r}")
    if isinstance(hf_config, RWKV7Config):
        return hf_config
    fields = {k: v for k, v in hf_config.to_dict().items() if k not in ("model_type", "transformers_version")}
    return RWKV7Config(**fields)


def state_shapes(config: RWKV7Config, engine: str) -> tuple[tuple[int, int], tuple[int, int, int]]:
    """``(shift [2, D], wkv [H, K, V])`` of every layer; ``ValueError`` if layers differ in ``value_dim``
    (the engines' state pools hold one shape for every layer)."""
    if len(set(config.value_dim)) != 1:
        raise ValueError(f"deltainv's {engine} {ARCH} needs one value_dim for every layer; config.value_dim="
                         f"{config.value_dim}")
    H = config.hidden_size // config.head_dim
    return (2, config.hidden_size), (H, config.head_dim, config.value_dim[0] // H)


@dataclass(frozen=True)
class Group:
    """Requests of one step that run as one call of the block.

    ``rows``: their tokens in the step's flattened batch; ``shape``: ``(B, T)`` the rows are viewed as;
    ``seqs``: ``(row, start, end)`` of each request in that view; ``cu_seqlens``: packed bounds (None
    for a decode batch); ``slots``: ``[N]`` int64 state slots; ``fresh``: ``[N, 1]`` bool, requests
    whose entering state is zero whatever their slot holds.
    """

    rows: slice
    shape: tuple[int, int]
    seqs: list[tuple[int, int, int]]
    cu_seqlens: torch.Tensor | None
    slots: torch.Tensor
    fresh: torch.Tensor

    @property
    def is_decode(self) -> bool:
        return self.cu_seqlens is None


def plan_groups(starts: list[int], slots: torch.Tensor, fresh: list[bool] | None = None) -> list[Group]:
    """Cut a step into groups, in batch order.

    ``starts``: ``N + 1`` token offsets of the step's ``N`` requests (host ints); ``slots``: ``[N]``
    their state slots; ``fresh``: per request, start from zero state (default: none; an engine that
    zeroes a new request's slot itself passes nothing). Requests with no tokens are left out (their
    slots are neither read nor written). Each maximal run of one-token requests becomes a decode
    group, each maximal run of longer ones a packed prefill group.
    """
    n = len(starts) - 1
    if slots.shape[0] < n:
        raise ValueError(f"{n} requests but {slots.shape[0]} state slots")
    fresh = [False] * n if fresh is None else list(fresh)
    slots = slots[:n].long()
    dev = slots.device
    groups: list[Group] = []
    i = 0
    while i < n:
        count = starts[i + 1] - starts[i]
        if count == 0:
            i += 1
            continue
        decode = count == 1
        j = i
        while j < n and (starts[j + 1] - starts[j] == 1) == decode and starts[j + 1] > starts[j]:
            j += 1
        idx = torch.arange(i, j, device=dev)
        fr = torch.tensor(fresh[i:j], dtype=torch.bool, device=dev)[:, None]
        base = starts[i]
        if decode:
            groups.append(Group(slice(base, starts[j]), (j - i, 1), [(b, 0, 1) for b in range(j - i)], None,
                                slots[idx], fr))
        else:
            bounds = [s - base for s in starts[i:j + 1]]
            groups.append(Group(slice(base, starts[j]), (1, bounds[-1]), [(0, s, e) for s, e in zip(bounds, bounds[1:])],
                                torch.tensor(bounds, dtype=torch.int64, device=dev), slots[idx], fr))
        i = j
    return groups


def read_state(layer_idx: int, num_layers: int, shift: torch.Tensor, wkv: torch.Tensor, group: Group) -> RWKV7State:
    """Layer ``layer_idx``'s entering state of ``group``'s requests (zero for fresh ones), as the block
    takes it (``recurrent`` in fp32). ``shift``: ``[slots, 2, D]``, ``wkv``: ``[slots, H, K, V]``."""
    state = RWKV7State.empty(num_layers)
    prev = shift[group.slots]
    prev = torch.where(group.fresh[:, :, None], torch.zeros_like(prev), prev)
    state.attn_shift[layer_idx], state.ffn_shift[layer_idx] = prev[:, 0], prev[:, 1]
    S = wkv[group.slots].float()
    state.recurrent[layer_idx] = torch.where(group.fresh[:, :, None, None], torch.zeros_like(S), S)
    return state


def write_state(layer_idx: int, shift: torch.Tensor, wkv: torch.Tensor, group: Group, state: RWKV7State) -> None:
    """Store layer ``layer_idx``'s final state of ``group``'s requests into their slots (slot dtypes)."""
    wkv[group.slots] = state.recurrent[layer_idx].to(wkv.dtype)
    shift[group.slots] = torch.stack((state.attn_shift[layer_idx], state.ffn_shift[layer_idx]), dim=1).to(shift.dtype)


def forward_step(block: RWKV7Block, layer_idx: int, num_layers: int, inversion: Inversion, x: torch.Tensor,
                 v_first: torch.Tensor, groups: list[Group], shift: torch.Tensor, wkv: torch.Tensor):
    """One block over one step. ``x``, ``v_first``: ``[num_tokens, D]``; returns the block's
    ``(x, v_first)``, same shapes (rows of no group are passed through). Reads and writes the slots."""
    out, vf = x.clone(), v_first.clone()
    D = x.shape[-1]
    for g in groups:
        state = read_state(layer_idx, num_layers, shift, wkv, g)
        # The block's own forward: engine layers subclass RWKV7Block and override forward.
        h, v = RWKV7Block.forward(block, x[g.rows].reshape(*g.shape, D), v_first[g.rows].reshape(*g.shape, D), state,
                                  g.seqs, g.cu_seqlens, inversion)
        write_state(layer_idx, shift, wkv, g, state)
        out[g.rows], vf[g.rows] = h.reshape(-1, D), v.reshape(-1, D)
    return out, vf


def forward_stateless(block: RWKV7Block, inversion: Inversion, x: torch.Tensor, v_first: torch.Tensor):
    """One block over ``[T, D]`` tokens as a single sequence from zero state, nothing stored (the
    engines' profiling / dummy runs, which bind no state)."""
    T, D = x.shape
    out, vf = RWKV7Block.forward(block, x.view(1, T, D), v_first.view(1, T, D), None, [(0, 0, T)], None, inversion)
    return out.view(T, D), vf.view(T, D)


def load_weights(model: torch.nn.Module, weights, config: RWKV7Config, default_loader) -> set[str]:
    """Load fla's tensors into ``model`` (fla's module tree: ``model.*`` + ``lm_head``), one name to one
    parameter; an unknown name or a wrong shape raises ``ValueError`` naming it. A tied ``lm_head`` is
    skipped. Parameters with an engine ``weight_loader`` use it, the others ``default_loader``."""
    params = dict(model.named_parameters())
    loaded = set()
    for name, tensor in weights:
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        param = params.get(name)
        if param is None:
            raise ValueError(f"checkpoint tensor {name} {list(tensor.shape)} is not a parameter of fla's "
                             f"RWKV-7 with this config (num_hidden_layers={config.num_hidden_layers})")
        loader = getattr(param, "weight_loader", None)
        if loader is None:
            if tuple(param.shape) != tuple(tensor.shape):
                raise ValueError(f"checkpoint tensor {name}: shape {list(tensor.shape)}, config gives "
                                 f"{list(param.shape)}")
            loader = default_loader
        loader(param, tensor)
        loaded.add(name)
    return loaded


__all__ = ["ARCH", "Group", "forward_stateless", "forward_step", "load_weights", "plan_groups", "read_state",
           "rwkv7_config", "state_shapes", "write_state"]
