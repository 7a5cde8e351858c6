"""RWKV-7 (fla's Hugging Face format) as an SGLang 0.5.23 model, registered out of tree by deltainv's
``sglang.srt.plugins`` entry point (:mod:`deltainv.plugin.engines.sglang_models`), or through
``SGLANG_EXTERNAL_MODEL_PACKAGE=deltainv.models.sglang_models``.

The math is :mod:`deltainv.models.rwkv7.modeling`'s, unchanged: every decoder layer *is* a
:class:`~deltainv.models.rwkv7.modeling.RWKV7Block` (fla's parameter names load 1:1); the step
planning and the slot reads/writes are :mod:`deltainv.models.rwkv7.serving`'s, shared with the
vLLM model. What this module adds is SGLang glue:

- :class:`RWKV7AttnBackend`, a ``MambaAttnBackendBase`` (SGLang's linear-attention backend base,
  as its GDN and KDA backends): per step it takes SGLang's metadata (``query_start_loc`` and each
  request's slot in the Mamba state pool, ``mamba_cache_indices``) and plans the step once
  (:func:`~deltainv.models.rwkv7.serving.plan_groups`); per layer it hands the layer its slots of
  SGLang's pool (``mamba2_layer_cache(layer_id)``: ``conv[0] [slots, 2, D]`` token shifts,
  ``temporal [slots, H, K, V]`` DPLR state, shapes and dtypes from
  :class:`~deltainv.models.rwkv7.sglang_config.RWKV7SGLangConfig`);
- the model classes, SGLang's calling convention (``forward(input_ids, positions, forward_batch)``,
  ``LogitsProcessor``, ``load_weights``).

SGLang zeroes a request's slot when it allocates it (``mamba_needs_clear``), so every request
continues from its slot: a new one from zero, a continued prefill chunk or a decode from where the
last step left it. Decodes (one token) run as one ``[N, 1, D]`` batch through the fp32 recurrent
step; prefills, first chunks and continued chunks of chunked prefill alike, run packed through the
chunked DPLR forward at chunk 64 with the inversion of
:class:`~deltainv.models.rwkv7.modeling.Inversion` (``DELTAINV_*`` when set, else the registry's
default recipe). A mixed step (``--enable-mixed-chunk``) is cut into both.

Supported: tensor and pipeline parallel size 1 (larger sizes are refused), no radix (prefix)
cache, no speculative decoding, no CUDA graphs (the config-time override of
:mod:`deltainv.plugin.engines.sglang_models` switches both off); see ``docs/rwkv7.md``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from sglang.srt.layers.attention.hybrid_linear_attn_backend import MambaAttnBackendBase
from sglang.srt.layers.logits_processor import LogitsProcessor
from sglang.srt.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from sglang.srt.model_executor.forward_batch_info import ForwardBatch
from sglang.srt.model_executor.forward_context import get_attn_backend
from sglang.srt.model_loader.weight_utils import default_weight_loader

from . import serving
from .configuration import RWKV7Config
from .modeling import Inversion, RWKV7Block
from .serving import ARCH, Group
from .sglang_config import ENGINE, check_tp, tp_size


class RWKV7AttnBackend(MambaAttnBackendBase):
    """SGLang linear-attention backend of deltainv's RWKV-7: plans each step once, then gives every
    layer its slots of SGLang's Mamba state pool (see the module docstring)."""

    _plan: tuple[object, list[Group]] | None = None

    def groups(self, forward_batch: ForwardBatch) -> list[Group]:
        """This step's plan, made on the first layer's call from the step's metadata (SGLang builds a new
        ``forward_metadata`` object every step, whichever of its init paths ran, so a plan is never stale)."""
        md = self.forward_metadata
        if md is None:
            raise RuntimeError(f"{type(self).__name__}: forward before init_forward_metadata")
        if self._plan is None or self._plan[0] is not md:
            groups = [] if md.query_start_loc is None else serving.plan_groups(md.query_start_loc.tolist(),
                                                                               md.mamba_cache_indices)
            self._plan = (md, groups)
            _note_firsts(forward_batch, groups)
        return self._plan[1]

    def layer_state(self, layer_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(shift [slots, 2, D], wkv [slots, H, K, V])``: layer ``layer_id``'s views of the pool."""
        cache = self.req_to_token_pool.mamba2_layer_cache(layer_id)
        return cache.conv[0], cache.temporal

    def init_cuda_graph_state(self, max_bs: int, max_num_tokens: int):
        # The plan reads the batch layout on the host each step; a captured graph would replay a stale one.
        raise RuntimeError(f"deltainv's SGLang {ARCH} does not support CUDA graphs; they are switched off at "
                           "start-up unless something re-enabled them (--cuda-graph-backend-decode/-prefill)")

    def _run(self, layer: RWKV7DecoderLayer, forward_batch: ForwardBatch, x: torch.Tensor, v_first: torch.Tensor):
        shift, wkv = self.layer_state(layer.layer_id)
        return layer.step(x, v_first, self.groups(forward_batch), shift, wkv)

    # SGLang's HybridLinearAttnBackend calls these for every non-full-attention layer.
    def forward_decode(self, *, layer, forward_batch, mixed_qkv, v_first, **_):
        return self._run(layer, forward_batch, mixed_qkv, v_first)

    def forward_extend(self, *, layer, forward_batch, mixed_qkv, v_first, **_):
        return self._run(layer, forward_batch, mixed_qkv, v_first)


def _note_firsts(forward_batch: ForwardBatch, groups: list[Group]) -> None:
    """Log (once per process) the first step mixing decodes with prefills and the first prefill that
    continues from a saved state (chunked prefill or a continued request)."""
    from deltainv.plugin.log import info_once

    prefills = [g for g in groups if not g.is_decode]
    if prefills and len(prefills) != len(groups):
        info_once("sglang-rwkv7-mixed", f"SGLang {ARCH}: first step mixing decodes (recurrent step) with prefills "
                  "(chunked DPLR)")
    prefix = getattr(forward_batch, "extend_prefix_lens_cpu", None)
    if prefills and prefix is not None and any(int(p) > 0 for p in prefix):
        info_once("sglang-rwkv7-continued", f"SGLang {ARCH}: first prefill continuing from a saved state")


class RWKV7DecoderLayer(RWKV7Block):
    """deltainv's :class:`RWKV7Block` whose recurrent state lives in SGLang's Mamba state pool."""

    def __init__(self, config: RWKV7Config, layer_id: int, inversion: Inversion):
        super().__init__(config, layer_id)
        self.layer_id = layer_id
        self.num_layers = config.num_hidden_layers
        self.inversion = inversion

    def forward(self, x: torch.Tensor, v_first: torch.Tensor, forward_batch: ForwardBatch):
        """``x``, ``v_first``: ``[num_tokens, D]``; through SGLang's attention backend (which holds the
        step's plan and the pool) to :meth:`step`."""
        return get_attn_backend().forward(layer=self, forward_batch=forward_batch, mixed_qkv=x, v_first=v_first)

    def step(self, x: torch.Tensor, v_first: torch.Tensor, groups: list[Group], shift: torch.Tensor,
             wkv: torch.Tensor):
        """The block over one planned step, reading and writing this layer's slots."""
        return serving.forward_step(self, self.layer_id, self.num_layers, self.inversion, x, v_first, groups, shift,
                                    wkv)


class RWKV7Model(nn.Module):
    """fla's ``model.*``: ``embeddings``, ``layers.N`` (:class:`RWKV7DecoderLayer`), ``norm``."""

    def __init__(self, config: RWKV7Config, prefix: str = "model"):
        super().__init__()
        self.config = config
        self.inversion = Inversion.from_env(config)
        self.embeddings = VocabParallelEmbedding(config.vocab_size, config.hidden_size, prefix=f"{prefix}.embeddings")
        self.layers = nn.ModuleList([RWKV7DecoderLayer(config, i, self.inversion)
                                     for i in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)

    def forward(self, input_ids: torch.Tensor, forward_batch: ForwardBatch,
                input_embeds: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embeddings(input_ids) if input_embeds is None else input_embeds
        if forward_batch.forward_mode.is_idle() or x.shape[0] == 0:
            return self.norm(x)
        h, v_first = x, torch.zeros_like(x)
        for layer in self.layers:
            h, v_first = layer(h, v_first, forward_batch)
        return self.norm(h)


class RWKV7ForCausalLM(nn.Module):
    """SGLang model class of fla's ``RWKV7ForCausalLM`` (``model.*`` + ``lm_head``), deltainv's DPLR inside."""

    def __init__(self, config, quant_config=None, prefix: str = "", **_):
        super().__init__()
        config = serving.rwkv7_config(config, ENGINE)
        check_tp(tp_size())
        serving.state_shapes(config, ENGINE)  # one value_dim for every layer, else a clear error now
        if quant_config is not None:
            raise ValueError(f"deltainv's SGLang {ARCH} runs unquantized weights (got {type(quant_config).__name__})")
        self.config = config
        self.model = RWKV7Model(config, prefix="model")
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, prefix="lm_head")
        if config.tie_word_embeddings:
            self.lm_head = self.lm_head.tie_weights(self.model.embeddings)
        self.logits_processor = LogitsProcessor(config)
        from deltainv.plugin.log import configure, info_once
        from deltainv.plugin.settings import Settings

        configure(Settings.from_env().log_level)
        info_once("sglang-rwkv7", f"SGLang {ARCH}: deltainv's RWKV-7 (fla format), {config.num_hidden_layers} layers; "
                  f"prefill: chunked DPLR, inversion {self.model.inversion.describe()}; decode: recurrent step")

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embeddings

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, forward_batch: ForwardBatch,
                input_embeds: torch.Tensor | None = None, **_):
        hidden = self.model(input_ids, forward_batch, input_embeds)
        return self.logits_processor(input_ids, hidden, self.lm_head, forward_batch)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """fla's tensor names, one to one; an unknown name or a wrong shape raises ``ValueError`` naming it."""
        return serving.load_weights(self, weights, self.config, default_weight_loader)


EntryClass = RWKV7ForCausalLM

__all__ = ["ARCH", "EntryClass", "RWKV7AttnBackend", "RWKV7DecoderLayer", "RWKV7ForCausalLM", "RWKV7Model"]
