"""RWKV-7 (fla's Hugging Face format) as a vLLM 0.32/0.33 model, registered out of tree by deltainv's
``vllm.general_plugins`` entry point (:mod:`deltainv.plugin.engines.vllm_models`).

The math is :mod:`deltainv.models.rwkv7.modeling`'s, unchanged: every decoder layer *is* a
:class:`~deltainv.models.rwkv7.modeling.RWKV7Block` (so fla's parameter names load 1:1) that is
also a vLLM ``MambaBase`` layer. What this module adds is the engine glue: where each sequence's
recurrent state lives between steps, and how one vLLM step is cut into calls of the block.

State (vLLM's Mamba-style state cache, one slot per running sequence, ``mamba_type`` LINEAR so
vLLM's ``LinearAttentionMetadataBuilder`` supplies the metadata), per layer:

- ``shift``: ``[2, D]`` in the model dtype, the last hidden vector each token shift saw (row 0:
  time mixing, row 1: channel mixing);
- ``wkv``: ``[H, K, V]`` fp32 (``--mamba-ssm-cache-dtype`` other than ``auto`` overrides it), the
  DPLR recurrent state.

One vLLM step holds decodes first, then prefills (vLLM reorders the batch; a "decode" is any
request with one new token). Per layer:

- the decodes run as a ``[N_d, 1, D]`` batch: the block's recurrent step (fp32);
- the prefills, first chunks and continued chunks of chunked prefill alike, run packed
  (``[1, T_p, D]`` with ``cu_seqlens``): the chunked DPLR forward at chunk 64 with the inversion
  of :class:`~deltainv.models.rwkv7.modeling.Inversion` (``DELTAINV_*`` when set, else the
  registry's default recipe).

A sequence with no computed tokens yet starts from zero state (its slot may hold a finished
sequence's state); every other one reads its slot. Both groups write their final states back.

Supported: tensor and pipeline parallel size 1 (larger sizes are refused before workers start),
no prefix caching, no speculative decoding, eager execution (CUDA graphs are switched off on
GPUs); see ``docs/rwkv7.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from vllm.config import VllmConfig, get_current_vllm_config
from vllm.forward_context import get_forward_context
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.mamba.abstract import MambaBase
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from vllm.model_executor.model_loader.weight_utils import default_weight_loader
from vllm.model_executor.models.interfaces import HasInnerState, IsAttentionFree
from vllm.utils.torch_utils import STR_DTYPE_TO_TORCH_DTYPE
from vllm.v1.attention.backends.registry import MambaAttentionBackendEnum

from .configuration import RWKV7Config
from .modeling import Inversion, RWKV7Block, RWKV7State

#: The architecture name this model serves (``config.json``'s ``architectures``).
ARCH = "RWKV7ForCausalLM"


def rwkv7_config(hf_config) -> RWKV7Config:
    """The model's config as deltainv's :class:`RWKV7Config`; ``ValueError`` if it is not RWKV-7.

    vLLM hands over whatever ``AutoConfig`` built: deltainv's class (registered by ``import
    deltainv``), or a remote-code class of the same format; anything whose ``model_type`` is not
    ``rwkv7`` is refused, so this model never claims another architecture's checkpoint.
    """
    model_type = getattr(hf_config, "model_type", None)
    if model_type != RWKV7Config.model_type:
        raise ValueError(f"deltainv's vLLM {ARCH} serves fla-format RWKV-7 checkpoints (config.json model_type "
                         f"'rwkv7'); this model's config has model_type={model_type!r}")
    if isinstance(hf_config, RWKV7Config):
        return hf_config
    fields = {k: v for k, v in hf_config.to_dict().items() if k not in ("model_type", "transformers_version")}
    return RWKV7Config(**fields)


def state_shapes(config: RWKV7Config) -> tuple[tuple[int, int], tuple[int, int, int]]:
    """``(shift [2, D], wkv [H, K, V])`` of every layer; ``ValueError`` if layers differ in ``value_dim``
    (vLLM's state cache holds one page size per model)."""
    if len(set(config.value_dim)) != 1:
        raise ValueError(f"deltainv's vLLM {ARCH} needs one value_dim for every layer; config.value_dim="
                         f"{config.value_dim}")
    H = config.hidden_size // config.head_dim
    return (2, config.hidden_size), (H, config.head_dim, config.value_dim[0] // H)


def state_dtypes(vllm_config: VllmConfig) -> tuple[torch.dtype, torch.dtype]:
    """``(shift, wkv)``: the model dtype (or ``--mamba-cache-dtype``) and fp32 (or ``--mamba-ssm-cache-dtype``)."""
    cache = vllm_config.cache_config
    model_dtype = vllm_config.model_config.dtype
    shift = model_dtype if cache.mamba_cache_dtype == "auto" else STR_DTYPE_TO_TORCH_DTYPE[cache.mamba_cache_dtype]
    wkv = torch.float32 if cache.mamba_ssm_cache_dtype == "auto" else STR_DTYPE_TO_TORCH_DTYPE[
        cache.mamba_ssm_cache_dtype]
    return shift, wkv


@dataclass(frozen=True)
class Group:
    """Requests of one step that run as one call of the block.

    ``rows``: their tokens in the step's flattened batch; ``shape``: ``(B, T)`` the rows are viewed as;
    ``seqs``: ``(row, start, end)`` of each request in that view; ``cu_seqlens``: packed bounds (None
    for the decode batch); ``slots``: ``[N]`` state-cache slots; ``fresh``: ``[N, 1]`` bool, requests
    with no computed tokens (zero initial state).
    """

    rows: slice
    shape: tuple[int, int]
    seqs: list[tuple[int, int, int]]
    cu_seqlens: torch.Tensor | None
    slots: torch.Tensor
    fresh: torch.Tensor


def plan_step(metadata) -> list[Group]:
    """Cut one step (vLLM's ``LinearAttentionMetadata``: decodes first, then prefills) into the decode
    batch and the packed prefills."""
    nd, npf = metadata.num_decodes, metadata.num_prefills
    n = nd + npf
    starts = metadata.query_start_loc[: n + 1].tolist()
    seq_lens = metadata.seq_lens[:n].tolist()
    slots = metadata.state_indices_tensor[:n].long()
    fresh = [seq_lens[i] == starts[i + 1] - starts[i] for i in range(n)]  # nothing computed before this step
    dev = slots.device
    groups = []
    if nd:
        groups.append(Group(slice(0, starts[nd]), (nd, 1), [(b, 0, 1) for b in range(nd)], None, slots[:nd],
                            torch.tensor(fresh[:nd], device=dev)[:, None]))
    if npf:
        base = starts[nd]
        bounds = [s - base for s in starts[nd:]]
        groups.append(Group(slice(base, starts[n]), (1, bounds[-1]), [(0, s, e) for s, e in zip(bounds, bounds[1:])],
                            torch.tensor(bounds, dtype=torch.int64, device=dev), slots[nd:],
                            torch.tensor(fresh[nd:], device=dev)[:, None]))
    return groups


class RWKV7DecoderLayer(RWKV7Block, MambaBase):
    """deltainv's :class:`RWKV7Block` with its recurrent state in vLLM's state cache (one slot per request).

    ``kv_cache``: ``(shift [slots, 2, D], wkv [slots, H, K, V])``, bound by vLLM.
    """

    def __init__(self, config: RWKV7Config, layer_idx: int, inversion: Inversion, prefix: str):
        RWKV7Block.__init__(self, config, layer_idx)
        self.layer_idx = layer_idx
        vllm_config = get_current_vllm_config()
        self.prefix = prefix
        self.num_layers = config.num_hidden_layers
        self.inversion = inversion
        self._shapes = state_shapes(config)
        self._dtypes = state_dtypes(vllm_config)
        self.kv_cache = (torch.tensor([]), torch.tensor([]))
        context = vllm_config.compilation_config.static_forward_context
        if prefix in context:
            raise ValueError(f"Duplicate layer name: {prefix}")
        context[prefix] = self

    # MambaBase
    @property
    def mamba_type(self) -> MambaAttentionBackendEnum:
        return MambaAttentionBackendEnum.LINEAR

    def get_state_shape(self) -> tuple[tuple[int, int], tuple[int, int, int]]:
        return self._shapes

    def get_state_dtype(self) -> tuple[torch.dtype, torch.dtype]:
        return self._dtypes

    def _read(self, group: Group) -> RWKV7State:
        """This layer's entering state of ``group``'s requests (zero for fresh ones), as the block takes it."""
        shift, wkv = self.kv_cache
        state = RWKV7State.empty(self.num_layers)
        i = self.layer_idx
        prev = shift[group.slots]
        prev = torch.where(group.fresh[:, :, None], torch.zeros_like(prev), prev)
        state.attn_shift[i], state.ffn_shift[i] = prev[:, 0], prev[:, 1]
        S = wkv[group.slots].float()
        state.recurrent[i] = torch.where(group.fresh[:, :, None, None], torch.zeros_like(S), S)
        return state

    def _write(self, group: Group, state: RWKV7State) -> None:
        shift, wkv = self.kv_cache
        i = self.layer_idx
        wkv[group.slots] = state.recurrent[i].to(wkv.dtype)
        shift[group.slots] = torch.stack((state.attn_shift[i], state.ffn_shift[i]), dim=1).to(shift.dtype)

    def forward(self, x: torch.Tensor, v_first: torch.Tensor, groups: list[Group] | None):
        """``x``, ``v_first``: ``[num_tokens, D]`` (the step's tokens); ``groups``: :func:`plan_step`'s, or
        None for vLLM's profiling run (no state). Returns the block's ``(x, v_first)``, same shapes."""
        if groups is None:
            T, D = x.shape
            out, vf = RWKV7Block.forward(self, x.view(1, T, D), v_first.view(1, T, D), None, [(0, 0, T)], None,
                                         self.inversion)
            return out.view(T, D), vf.view(T, D)
        out, vf = x.clone(), v_first.clone()
        D = x.shape[-1]
        for g in groups:
            state = self._read(g)
            h, v = RWKV7Block.forward(self, x[g.rows].view(*g.shape, D), v_first[g.rows].view(*g.shape, D), state,
                                      g.seqs, g.cu_seqlens, self.inversion)
            self._write(g, state)
            out[g.rows], vf[g.rows] = h.reshape(-1, D), v.reshape(-1, D)
        return out, vf


class RWKV7Model(nn.Module):
    """fla's ``model.*``: ``embeddings``, ``layers.N`` (:class:`RWKV7DecoderLayer`), ``norm``."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "model"):
        super().__init__()
        config = rwkv7_config(vllm_config.model_config.hf_config)
        self.config = config
        self.inversion = Inversion.from_env(config)
        self.embeddings = VocabParallelEmbedding(config.vocab_size, config.hidden_size, prefix=f"{prefix}.embeddings")
        self.layers = nn.ModuleList([RWKV7DecoderLayer(config, i, self.inversion, f"{prefix}.layers.{i}")
                                     for i in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embeddings(input_ids)

    def forward(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed_input_ids(input_ids) if inputs_embeds is None else inputs_embeds
        metadata = get_forward_context().attn_metadata
        if metadata is None:  # vLLM's profiling / dummy run: no state cache bound to this step
            groups, n = None, x.shape[0]
        else:
            md = metadata[self.layers[0].prefix]
            groups, n = plan_step(md), md.num_decode_tokens + md.num_prefill_tokens
            _note_firsts(md, groups)
        h, v_first = x[:n], torch.zeros_like(x[:n])
        for layer in self.layers:
            h, v_first = layer(h, v_first, groups)
        out = torch.zeros_like(x)
        out[:n] = self.norm(h)
        return out


def _note_firsts(md, groups: list[Group]) -> None:
    """Log (once per process) the first step that mixes decodes with prefills and the first prefill that
    continues from a saved state (chunked prefill): the paths continuous batching takes."""
    from deltainv.plugin.log import info_once

    if md.num_decodes and md.num_prefills:
        info_once("vllm-rwkv7-mixed", f"vLLM {ARCH}: first step mixing {md.num_decodes} decodes (recurrent step) "
                  f"with {md.num_prefills} prefills (chunked DPLR), {md.num_prefill_tokens} prefill tokens")
    prefill = groups[-1] if md.num_prefills else None
    if prefill is not None and not bool(prefill.fresh.all()):
        info_once("vllm-rwkv7-continued", f"vLLM {ARCH}: first prefill continuing from a saved state "
                  "(chunked prefill)")


class RWKV7ForCausalLM(nn.Module, HasInnerState, IsAttentionFree):
    """vLLM model class of fla's ``RWKV7ForCausalLM`` (``model.*`` + ``lm_head``), deltainv's DPLR inside."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        check_parallel(vllm_config)
        self.model = RWKV7Model(vllm_config=vllm_config, prefix="model")
        config = self.config = self.model.config
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, prefix="lm_head")
        if config.tie_word_embeddings:
            self.lm_head = self.lm_head.tie_weights(self.model.embeddings)
        self.logits_processor = LogitsProcessor(config.vocab_size)
        from deltainv.plugin.log import configure, info_once
        from deltainv.plugin.settings import Settings

        configure(Settings.from_env().log_level)
        info_once("vllm-rwkv7", f"vLLM {ARCH}: deltainv's RWKV-7 (fla format), {config.num_hidden_layers} layers; "
                  f"prefill: chunked DPLR, inversion {self.model.inversion.describe()}; decode: recurrent step")

    @classmethod
    def get_mamba_state_shape_from_config(cls, vllm_config: VllmConfig):
        return state_shapes(rwkv7_config(vllm_config.model_config.hf_config))

    @classmethod
    def get_mamba_state_dtype_from_config(cls, vllm_config: VllmConfig):
        return state_dtypes(vllm_config)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_input_ids(input_ids)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor, intermediate_tensors=None,
                inputs_embeds: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return self.model(input_ids, inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.logits_processor(self.lm_head, hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """fla's tensor names, one to one; an unknown name or a wrong shape raises ``ValueError`` naming it."""
        params = dict(self.named_parameters())
        loaded = set()
        for name, tensor in weights:
            if name == "lm_head.weight" and self.config.tie_word_embeddings:
                continue
            param = params.get(name)
            if param is None:
                raise ValueError(f"checkpoint tensor {name} {list(tensor.shape)} is not a parameter of fla's "
                                 f"RWKV-7 with this config (num_hidden_layers={self.config.num_hidden_layers})")
            loader = getattr(param, "weight_loader", None)
            if loader is None:
                if tuple(param.shape) != tuple(tensor.shape):
                    raise ValueError(f"checkpoint tensor {name}: shape {list(tensor.shape)}, config gives "
                                     f"{list(param.shape)}")
                loader = default_weight_loader
            loader(param, tensor)
            loaded.add(name)
        return loaded


def check_parallel(vllm_config: VllmConfig) -> None:
    """``ValueError`` unless tensor, pipeline and data-context parallel sizes are 1."""
    p = vllm_config.parallel_config
    if p.tensor_parallel_size != 1 or p.pipeline_parallel_size != 1:
        raise ValueError(f"deltainv's vLLM {ARCH} runs with tensor_parallel_size=1 and pipeline_parallel_size=1 "
                         f"(got {p.tensor_parallel_size} and {p.pipeline_parallel_size}); use data parallelism "
                         "(--data-parallel-size) to use more GPUs")


__all__ = ["ARCH", "Group", "RWKV7DecoderLayer", "RWKV7ForCausalLM", "RWKV7Model", "check_parallel", "plan_step",
           "rwkv7_config", "state_dtypes", "state_shapes"]
