"""RWKV-7 in plain PyTorch with fla's Hugging Face format (parameter names, shapes, config).

Module tree and parameter names are fla 0.6.0's ``fla.models.rwkv7`` (``model.embeddings``,
``model.layers.N.{pre_norm,attn_norm,attn,ffn_norm,ffn}``, ``model.norm``, ``lm_head``; in ``attn``:
``x_{r,w,k,v,a,g}``, ``k_k``, ``k_a``, ``r_k``, ``{r,k,v,o}_proj``, ``{w,v,a,g}_lora.lora.{0,2}``,
``g_norm``), so an fla-hub checkpoint loads with no missing or unexpected keys. The math is fla's
layer (``fla.layers.rwkv7.RWKV7Attention`` with its PyTorch references) with the time mixing done by
:mod:`deltainv.kernels.dplr`:

- prefill (more than one new token): the chunked DPLR forward at chunk 64, whose intra-chunk inverse
  is the registry's method (``DELTAINV_METHOD`` / ``DELTAINV_PRECISION`` / ``DELTAINV_OPTIONS`` when
  set, else the registry's default recipe), or fla's fp16 recipe when
  ``config.deltainv_inverse == "fla_fp16"`` (a study arm);
- decode (one new token): the token-by-token recurrence in fp32.

State between calls lives in :class:`RWKV7State` (``past_key_values``): per layer the ``[N, H, K, V]``
fp32 recurrent state and the last hidden vector of each token shift. Packed varlen batches
(``cu_seqlens``, batch 1) run every sequence independently. Everything runs on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from deltainv.kernels.dplr import RWKV7_LOWER_BOUND, chunk_rwkv7, fla_fp16_inverse, recurrent_dplr_delta_rule
from deltainv.kernels.registry import Recipe, resolve

from .configuration import RWKV7Config

#: fla's RWKV-7 chunk size.
CHUNK_SIZE = 64


@dataclass(frozen=True)
class Inversion:
    """How the prefill inverts: a registry :class:`~deltainv.kernels.registry.Recipe`, or fla's fp16
    recipe (``recipe=None``, a study arm), and who runs the intra-chunk step (``backend``, as
    :func:`deltainv.kernels.backend.choose`: ``auto`` is the fused Triton DPLR kernel on CUDA)."""

    recipe: Recipe | None = field(default_factory=resolve)
    backend: str = "auto"

    @property
    def fla_fp16(self) -> bool:
        return self.recipe is None

    @classmethod
    def from_env(cls, config: RWKV7Config) -> Inversion:
        if config.deltainv_inverse == "fla_fp16":
            return cls(None)
        from deltainv.plugin.settings import Settings

        s = Settings.from_env()
        recipe = resolve(s.method, s.precision, **s.method_options) if s.active else resolve()
        return cls(recipe, s.backend)  # DELTAINV_BACKEND=torch keeps the PyTorch intra on CUDA too

    def kwargs(self) -> dict:
        return {"inverse": fla_fp16_inverse} if self.recipe is None else {"method": self.recipe,
                                                                           "backend": self.backend}

    def describe(self) -> str:
        return "fla 0.6.0 fp16 product16 + fp16 merges (emulated)" if self.recipe is None else self.recipe.describe()


@dataclass
class RWKV7State:
    """``past_key_values`` of :class:`RWKV7ForCausalLM`: per layer, per sequence.

    ``recurrent[i]``: ``[N, H, K, V]`` fp32; ``attn_shift[i]`` / ``ffn_shift[i]``: ``[N, D]``, the
    last hidden vector each token shift saw. ``seen``: tokens consumed per sequence.
    """

    recurrent: list[torch.Tensor | None] = field(default_factory=list)
    attn_shift: list[torch.Tensor | None] = field(default_factory=list)
    ffn_shift: list[torch.Tensor | None] = field(default_factory=list)
    seen: int = 0

    @classmethod
    def empty(cls, num_layers: int) -> RWKV7State:
        return cls([None] * num_layers, [None] * num_layers, [None] * num_layers, 0)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    def __len__(self) -> int:
        return len(self.recurrent)


def _seq_bounds(B: int, T: int, cu_seqlens: torch.Tensor | None) -> list[tuple[int, int, int]]:
    """``(row, start, end)`` of each sequence in a ``[B, T, ...]`` batch (packed with ``cu_seqlens``)."""
    if cu_seqlens is None:
        return [(b, 0, T) for b in range(B)]
    bounds = cu_seqlens.tolist()
    return [(0, s, e) for s, e in zip(bounds, bounds[1:])]


def token_shift(x: torch.Tensor, seqs, cache: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``delta = x_{t-1} - x_t`` per sequence (``x_{-1}`` from ``cache [N, D]``, else 0) and the new cache."""
    prev = torch.zeros_like(x)
    prev[:, 1:] = x[:, :-1]
    last = []
    for n, (b, s, e) in enumerate(seqs):
        prev[b, s] = cache[n].to(x.dtype) if cache is not None else 0.0
        last.append(x[b, e - 1] if e > s else (cache[n] if cache is not None else torch.zeros_like(x[b, 0])))
    return prev - x, torch.stack(last)


class LoRA(nn.Module):
    """fla's ``LoRA``: ``Linear(in, r, bias=False) -> activation -> Linear(r, out, bias)`` as ``lora.{0,1,2}``."""

    def __init__(self, input_dim: int, output_dim: int, low_rank_dim: int, bias: bool = True,
                 activation: str | None = "tanh"):
        super().__init__()
        act = {None: nn.Identity(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "relu": nn.ReLU()}[activation]
        self.lora = nn.Sequential(nn.Linear(input_dim, low_rank_dim, bias=False), act,
                                  nn.Linear(low_rank_dim, output_dim, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora(x)


class RWKV7Attention(nn.Module):
    """RWKV-7 time mixing (fla's ``RWKV7Attention``), with the DPLR rule from :mod:`deltainv.kernels.dplr`."""

    def __init__(self, config: RWKV7Config, layer_idx: int):
        super().__init__()
        D = config.hidden_size
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = D // config.head_dim
        self.value_dim = config.value_dim[layer_idx]
        self.head_v_dim = self.value_dim // self.num_heads
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            setattr(self, name, nn.Parameter(torch.zeros(1, 1, D)))
        self.k_k = nn.Parameter(torch.zeros(D))
        self.k_a = nn.Parameter(torch.zeros(D))
        self.r_k = nn.Parameter(torch.zeros(self.num_heads, self.head_dim))
        self.r_proj = nn.Linear(D, D, bias=False)
        self.k_proj = nn.Linear(D, D, bias=False)
        self.v_proj = nn.Linear(D, self.value_dim, bias=False)
        self.o_proj = nn.Linear(self.value_dim, D, bias=False)
        self.w_lora = LoRA(D, D, config.decay_low_rank_dim, activation="tanh")
        if layer_idx != 0:
            self.v_lora = LoRA(D, self.value_dim, config.v_low_rank_dim, activation=None)
        self.a_lora = LoRA(D, D, config.a_low_rank_dim, activation=None)
        self.g_lora = LoRA(D, self.value_dim, config.gate_low_rank_dim, activation="sigmoid", bias=False)
        self.g_norm = nn.GroupNorm(self.num_heads, self.value_dim, eps=self.head_dim * config.norm_eps, affine=True)

    def forward(self, x, v_first, state: RWKV7State | None, seqs, cu_seqlens, inversion: Inversion,
                attention_mask=None):
        B, T, D = x.shape
        H, K = self.num_heads, self.head_dim
        if attention_mask is not None:
            am = attention_mask[:, -T:, None].to(x.dtype)
            x = x * am
        cache = state.attn_shift[self.layer_idx] if state is not None else None
        delta, shift_out = token_shift(x, seqs, cache)
        xr, xw, xk, xv, xa, xg = (torch.addcmul(x, delta, p) for p in
                                  (self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g))
        r = self.r_proj(xr)
        w = RWKV7_LOWER_BOUND * torch.sigmoid(self.w_lora(xw))
        k = self.k_proj(xk)
        v = self.v_proj(xv)
        if self.layer_idx == 0:
            v_first = v
        else:
            v = torch.lerp(v, v_first, torch.sigmoid(self.v_lora(xv)))
        a = torch.sigmoid(self.a_lora(xa))
        g = self.g_lora(xg)
        kk = F.normalize((k * self.k_k).view(B, T, H, K), dim=-1, p=2.0)
        k = k.addcmul(k * (a - 1), self.k_a)
        if attention_mask is not None:
            v = v * am
        r, w, k, a = (t.view(B, T, H, K) for t in (r, w, k, a))
        v = v.view(B, T, H, self.head_v_dim)
        h0 = state.recurrent[self.layer_idx] if state is not None else None
        if T == 1:
            # The decode step runs in fp32 (float64 for a float64 model: the oracle of the tests).
            dt = torch.float64 if x.dtype == torch.float64 else torch.float32
            o, S = recurrent_dplr_delta_rule(r, k, v, -kk, kk * a, w, 1.0, h0, cu_seqlens, dtype=dt)
        else:
            o, S = chunk_rwkv7(r, w, k, v, -kk, kk * a, 1.0, h0, True, cu_seqlens, chunk_size=CHUNK_SIZE,
                               **inversion.kwargs())
        if state is not None:
            state.recurrent[self.layer_idx] = S if x.dtype == torch.float64 else S.float()
            state.attn_shift[self.layer_idx] = shift_out
        o = self.g_norm(o.to(x.dtype).reshape(B * T, self.value_dim)).view(B, T, self.value_dim)
        o = (o + ((r * k * self.r_k).sum(-1, keepdim=True) * v).view(B, T, self.value_dim)) * g
        return self.o_proj(o), v_first


class RWKV7FeedForward(nn.Module):
    """RWKV-7 channel mixing (fla's ``RWKV7FeedForward``): ``value(relu(key(x + delta * x_k))^2)``."""

    def __init__(self, config: RWKV7Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.x_k = nn.Parameter(torch.zeros(config.hidden_size))
        self.key = nn.Linear(config.hidden_size, config.ffn_dim, bias=False)
        self.value = nn.Linear(config.ffn_dim, config.hidden_size, bias=False)

    def forward(self, x, state: RWKV7State | None, seqs, attention_mask=None):
        if attention_mask is not None:
            x = x * attention_mask[:, -x.shape[1]:, None].to(x.dtype)
        cache = state.ffn_shift[self.layer_idx] if state is not None else None
        delta, shift_out = token_shift(x, seqs, cache)
        if state is not None:
            state.ffn_shift[self.layer_idx] = shift_out
        return self.value(torch.relu(self.key(x.addcmul(delta, self.x_k))).square())


class RWKV7Block(nn.Module):
    def __init__(self, config: RWKV7Config, layer_idx: int):
        super().__init__()
        D, bias, eps = config.hidden_size, config.norm_bias, config.norm_eps
        if layer_idx == 0:
            self.pre_norm = nn.LayerNorm(D, eps=eps, bias=bias)
        self.attn_norm = nn.LayerNorm(D, eps=eps, bias=bias)
        self.attn = RWKV7Attention(config, layer_idx)
        self.ffn_norm = nn.LayerNorm(D, eps=eps, bias=bias)
        self.ffn = RWKV7FeedForward(config, layer_idx)

    def forward(self, x, v_first, state, seqs, cu_seqlens, inversion, attention_mask=None):
        residual = self.pre_norm(x) if hasattr(self, "pre_norm") else x
        h, v_first = self.attn(self.attn_norm(residual), v_first, state, seqs, cu_seqlens, inversion, attention_mask)
        residual = residual + h
        residual = residual + self.ffn(self.ffn_norm(residual), state, seqs, attention_mask)
        return residual, v_first


class RWKV7PreTrainedModel(PreTrainedModel):
    config_class = RWKV7Config
    base_model_prefix = "model"
    _no_split_modules = ["RWKV7Block"]
    _is_stateful = True
    _supports_cache_class = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.uniform_(module.weight, -1e-4, 1e-4)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, RWKV7Attention):
            n = module.x_r.shape[-1]
            ramp = torch.arange(n, dtype=torch.float32) / n
            for p in (module.x_r, module.x_w, module.x_k, module.x_v, module.x_a, module.x_g):
                p.copy_((1.0 - ramp.pow(0.5)).view_as(p))
            nn.init.constant_(module.k_k, 0.85)
            nn.init.constant_(module.k_a, 1.0)
            nn.init.constant_(module.r_k, -0.04)
        elif isinstance(module, RWKV7FeedForward):
            n = module.x_k.shape[-1]
            module.x_k.copy_(1.0 - (torch.arange(n, dtype=torch.float32) / n).pow(0.5))


class RWKV7Model(RWKV7PreTrainedModel):
    def __init__(self, config: RWKV7Config):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList([RWKV7Block(config, i) for i in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self.inversion = Inversion.from_env(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, value):
        self.embeddings = value

    def forward(self, input_ids=None, inputs_embeds=None, state: RWKV7State | None = None,
                cu_seqlens: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        B, T, _ = x.shape
        if cu_seqlens is not None:
            if B != 1:
                raise ValueError(f"cu_seqlens needs batch size 1 (packed sequences); got batch size {B}")
            if int(cu_seqlens[0]) != 0 or int(cu_seqlens[-1]) != T:
                raise ValueError(f"cu_seqlens must run from 0 to the {T} packed tokens; got {cu_seqlens.tolist()}")
        seqs = _seq_bounds(B, T, cu_seqlens)
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        v_first = torch.zeros_like(x)
        for layer in self.layers:
            x, v_first = layer(x, v_first, state, seqs, cu_seqlens, self.inversion, attention_mask)
        if state is not None:
            state.seen += T
        return self.norm(x)


class RWKV7ForCausalLM(RWKV7PreTrainedModel, GenerationMixin):
    """RWKV-7 causal LM in fla's Hugging Face format, runnable on a CPU (see the module docstring)."""

    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}

    def __init__(self, config: RWKV7Config):
        super().__init__(config)
        self.model = RWKV7Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' loader, after checking a local checkpoint's tensor names and shapes against its
        config (a clear error naming the config field instead of a partly random model)."""
        import os

        path = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(path):
            config = kwargs.get("config")
            if not isinstance(config, RWKV7Config):
                config = RWKV7Config.from_pretrained(path)
            shapes = _safetensors_shapes(path)
            if shapes is not None:
                check_checkpoint(config, shapes)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def get_input_embeddings(self):
        return self.model.embeddings

    def set_input_embeddings(self, value):
        self.model.embeddings = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new):
        self.lm_head = new

    @property
    def inversion(self) -> Inversion:
        return self.model.inversion

    def set_inversion(self, method: str | None = None, precision: str | None = None, *, fla_fp16: bool = False,
                      **options) -> None:
        """Choose the prefill's inversion: a registry method (validated here), or fla's fp16 recipe."""
        self.model.inversion = Inversion(None if fla_fp16 else resolve(method, precision, **options))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_key_values: RWKV7State | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        cu_seqlens: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if past_key_values is not None and not isinstance(past_key_values, RWKV7State):
            if isinstance(past_key_values, (tuple, list)) and not past_key_values:
                past_key_values = None
            elif hasattr(past_key_values, "get_seq_length") and past_key_values.get_seq_length() == 0:
                past_key_values = None  # an empty transformers cache handed in by generate()
            else:
                raise TypeError(f"past_key_values must be an RWKV7State from a previous call; "
                                f"got {type(past_key_values).__name__}")
        state = past_key_values
        if state is None and use_cache:
            state = RWKV7State.empty(self.config.num_hidden_layers)
        hidden = self.model(input_ids, inputs_embeds, state, cu_seqlens, attention_mask)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=state if use_cache else None)

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None,
                                      inputs_embeds=None, use_cache=True, **kwargs):
        if isinstance(past_key_values, RWKV7State) and past_key_values.seen:
            input_ids = input_ids[:, -1:]
            attention_mask = None
            inputs_embeds = None
        if inputs_embeds is not None and not isinstance(past_key_values, RWKV7State):
            return {"inputs_embeds": inputs_embeds, "past_key_values": None, "use_cache": use_cache,
                    "attention_mask": attention_mask}
        return {"input_ids": input_ids, "past_key_values": past_key_values, "use_cache": use_cache,
                "attention_mask": attention_mask}

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, is_encoder_decoder=False, num_new_tokens=1):
        model_kwargs["past_key_values"] = outputs.past_key_values
        if model_kwargs.get("attention_mask") is not None:
            am = model_kwargs["attention_mask"]
            model_kwargs["attention_mask"] = torch.cat([am, am.new_ones((am.shape[0], 1))], dim=-1)
        return model_kwargs


def _safetensors_shapes(path: str) -> dict[str, tuple[int, ...]] | None:
    """Tensor shapes of a local checkpoint's safetensors files (headers only), or None if there are none."""
    import glob
    import json
    import os
    import struct

    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        return None
    shapes = {}
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        shapes.update({k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"})
    return shapes


_LORA_FIELDS = {"w_lora": "decay_low_rank_dim", "a_lora": "a_low_rank_dim", "v_lora": "v_low_rank_dim",
                "g_lora": "gate_low_rank_dim"}


def _fields_for(key: str) -> str:
    """The config fields that size parameter ``key`` (for error messages)."""
    parts = key.split(".")
    if "embeddings" in parts or key == "lm_head.weight":
        return "vocab_size, hidden_size"
    for lora, name in _LORA_FIELDS.items():
        if lora in parts:
            return f"{name}, hidden_size" + (", value_dim" if lora in ("v_lora", "g_lora") else "")
    if "r_k" in parts:
        return "head_dim, num_heads"
    if "ffn" in parts and parts[-2] in ("key", "value"):
        return "intermediate_size (or hidden_ratio), hidden_size"
    if parts[-2:-1] in (["v_proj"], ["o_proj"], ["g_norm"]):
        return "value_dim, hidden_size"
    return "hidden_size"


def check_checkpoint(config: RWKV7Config, shapes: dict[str, tuple[int, ...]]) -> None:
    """Raise ``ValueError`` naming the config fields if a checkpoint's tensors do not fit ``config``.

    ``shapes``: parameter name -> shape, as stored (fla's names, ``model.`` prefix).
    """
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in RWKV7ForCausalLM(config).state_dict().items()}
    if config.tie_word_embeddings:
        shapes = {**shapes}
        shapes.setdefault("lm_head.weight", shapes.get("model.embeddings.weight"))
    problems = []
    for key, shape in sorted(shapes.items()):
        if key not in expected:
            layer = key.split(".")[2] if key.startswith("model.layers.") else None
            hint = (f"num_hidden_layers={config.num_hidden_layers}" if layer is not None and layer.isdigit()
                    and int(layer) >= config.num_hidden_layers else "not an fla RWKV-7 parameter name")
            problems.append(f"unexpected tensor {key} {list(shape)} ({hint})")
        elif tuple(shape) != expected[key]:
            problems.append(f"{key}: checkpoint {list(shape)} vs config {list(expected[key])} "
                            f"(check config fields {_fields_for(key)})")
    for key in sorted(set(expected) - set(shapes)):
        if key == "lm_head.weight" and config.tie_word_embeddings:
            continue
        problems.append(f"missing tensor {key} (config fields {_fields_for(key)}, num_hidden_layers)")
    if problems:
        more = f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""
        raise ValueError("checkpoint does not match its RWKV-7 config: " + "; ".join(problems[:8]) + more)


def num_parameters_mb(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) * 4 / 2**20


__all__ = [
    "CHUNK_SIZE",
    "Inversion",
    "RWKV7Attention",
    "RWKV7Block",
    "RWKV7FeedForward",
    "RWKV7ForCausalLM",
    "RWKV7Model",
    "RWKV7PreTrainedModel",
    "RWKV7State",
    "check_checkpoint",
    "num_parameters_mb",
]
