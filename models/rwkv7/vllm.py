"""RWKV-7 (fla's Hugging Face format) as a vLLM 0.32/0.33 model, registered out of tree by deltainv's
``vllm.general_plugins`` entry point (:mod:`deltainv.plugin.engines.vllm_models`).

The math is :mod:`deltainv.models.rwkv7.modeling`'s, unchanged: every decoder layer *is* a
:class:`~deltainv.models.rwkv7.modeling.RWKV7Block` (so fla's parameter names load 1:1) that is
also a vLLM ``MambaBase`` layer. What this module adds is the engine glue: where each sequence's
recurrent state lives between steps, and how one vLLM step is described to the engine-neutral step
planning of :mod:`deltainv.models.rwkv7.serving` (shared with the SGLang model).

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

from . import serving
from .configuration import RWKV7Config
from .modeling import Inversion, RWKV7Block
from .serving import ARCH, Group

ENGINE = "vLLM"


def rwkv7_config(hf_config) -> RWKV7Config:
    """:func:`deltainv.models.rwkv7.serving.rwkv7_config` (``ValueError`` if the config is not RWKV-7)."""
    return serving.rwkv7_config(hf_config, ENGINE)


def state_shapes(config: RWKV7Config) -> tuple[tuple[int, int], tuple[int, int, int]]:
    """``(shift [2, D], wkv [H, K, V])`` of every layer (:func:`deltainv.models.rwkv7.serving.state_shapes`)."""
    return serving.state_shapes(config, ENGINE)


def state_dtypes(vllm_config: VllmConfig) -> tuple[torch.dtype, torch.dtype]:
    """``(shift, wkv)``: the model dtype (or ``--mamba-cache-dtype``) and fp32 (or ``--mamba-ssm-cache-dtype``)."""
    cache = vllm_config.cache_config
    model_dtype = vllm_config.model_config.dtype
    shift = model_dtype if cache.mamba_cache_dtype == "auto" else STR_DTYPE_TO_TORCH_DTYPE[cache.mamba_cache_dtype]
    wkv = torch.float32 if cache.mamba_ssm_cache_dtype == "auto" else STR_DTYPE_TO_TORCH_DTYPE[
        cache.mamba_ssm_cache_dtype]
    return shift, wkv


def plan_step(metadata) -> list[Group]:
    """Cut one step (vLLM's ``LinearAttentionMetadata``: decodes first, then prefills) into the decode
    batch and the packed prefills (:func:`deltainv.models.rwkv7.serving.plan_groups`). A request with
    no computed tokens before this step starts from zero state (its slot may hold a finished one's)."""
    n = metadata.num_decodes + metadata.num_prefills
    starts = metadata.query_start_loc[: n + 1].tolist()
    seq_lens = metadata.seq_lens[:n].tolist()
    fresh = [seq_lens[i] == starts[i + 1] - starts[i] for i in range(n)]
    return serving.plan_groups(starts, metadata.state_indices_tensor[:n], fresh)


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

    def forward(self, x: torch.Tensor, v_first: torch.Tensor, groups: list[Group] | None):
        """``x``, ``v_first``: ``[num_tokens, D]`` (the step's tokens); ``groups``: :func:`plan_step`'s, or
        None for vLLM's profiling run (no state). Returns the block's ``(x, v_first)``, same shapes."""
        if groups is None:
            return serving.forward_stateless(self, self.inversion, x, v_first)
        shift, wkv = self.kv_cache
        return serving.forward_step(self, self.layer_idx, self.num_layers, self.inversion, x, v_first, groups, shift,
                                    wkv)


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
    prefills = [g for g in groups if not g.is_decode]
    if any(not bool(g.fresh.all()) for g in prefills):
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
        return serving.load_weights(self, weights, self.config, default_weight_loader)


def check_parallel(vllm_config: VllmConfig) -> None:
    """``ValueError`` unless tensor, pipeline and data-context parallel sizes are 1."""
    p = vllm_config.parallel_config
    if p.tensor_parallel_size != 1 or p.pipeline_parallel_size != 1:
        raise ValueError(f"deltainv's vLLM {ARCH} runs with tensor_parallel_size=1 and pipeline_parallel_size=1 "
                         f"(got {p.tensor_parallel_size} and {p.pipeline_parallel_size}); use data parallelism "
                         "(--data-parallel-size) to use more GPUs")


__all__ = ["ARCH", "Group", "RWKV7DecoderLayer", "RWKV7ForCausalLM", "RWKV7Model", "check_parallel", "plan_step",
           "rwkv7_config", "state_dtypes", "state_shapes"]
