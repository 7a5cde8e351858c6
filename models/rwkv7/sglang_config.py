"""The config class SGLang 0.5.23 builds for ``model_type: rwkv7`` when deltainv registers its RWKV-7.

:class:`RWKV7SGLangConfig` is deltainv's :class:`~deltainv.models.rwkv7.configuration.RWKV7Config`
(same fields, same checks, so every fla-format ``config.json`` loads) plus what SGLang's hybrid
state machinery reads from a linear-attention model's config, as its in-tree Mamba / GDN configs
give it (``sglang/srt/configs/mamba.py``, ``qwen3_next.py``):

- ``full_attention_layer_ids``: none (RWKV-7 has no softmax attention; no KV cache is sized);
- ``mamba2_cache_params``: the per-layer state of every layer, which SGLang's ``MambaPool``
  allocates once per request slot: ``conv = [(2, D)]``, the two token-shift vectors, and
  ``temporal = (H, K, V)``, the DPLR state (:func:`deltainv.models.rwkv7.serving.state_shapes`).

Dtypes: the token shifts are kept in fp32 (lossless for any model dtype; ``2 D`` numbers per layer
against ``H K V = D K`` for the DPLR state, i.e. 3% more state at ``K = 64``) unless
``SGLANG_MAMBA_CONV_DTYPE`` is set; the DPLR state is fp32 unless ``SGLANG_MAMBA_SSM_DTYPE`` says
otherwise (SGLang's own rule, :func:`sglang.srt.configs.mamba_utils.mamba2_state_dtype`).

Only this module and :mod:`sglang.srt.configs.mamba_utils` are imported when SGLang parses the
config (in the launching process too); the model (:mod:`deltainv.models.rwkv7.sglang`) is
imported only when SGLang builds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from sglang.srt.configs.mamba_utils import BaseLinearStateParams, Mamba2StateDType, mamba2_state_dtype

from . import serving
from .configuration import RWKV7Config

ENGINE = "SGLang"


@dataclass(kw_only=True, frozen=True)
class RWKV7StateShape:
    """Per-layer, per-slot state shapes in SGLang's ``Mamba2StateShape`` vocabulary.

    ``conv``: ``[(2, D)]`` token shifts (time mixing, channel mixing); ``temporal``: ``(H, K, V)``.
    RWKV-7 has no convolution: the ``conv`` slot is only where SGLang's pool keeps small per-slot
    state in its own dtype. Speculative decoding (which would read ``conv_kernel`` windows) is
    refused at start-up.
    """

    conv: list[tuple[int, int]]
    temporal: tuple[int, int, int]
    num_heads: int
    head_dim: int
    head_v_dim: int
    conv_kernel: int = 1
    disable_conv_window_dedup: bool = True
    num_k_heads_per_tp: int = 1


@dataclass(kw_only=True, frozen=True)
class RWKV7CacheParams(BaseLinearStateParams):
    """What SGLang's ``MambaPool`` allocates for deltainv's RWKV-7 (every layer is a state layer)."""

    shape: RWKV7StateShape
    dtype: Mamba2StateDType = field(default_factory=lambda: state_dtypes(None))


def state_dtypes(config) -> Mamba2StateDType:
    """``conv`` (token shifts): fp32 unless ``SGLANG_MAMBA_CONV_DTYPE``; ``temporal`` (DPLR state):
    SGLang's ``mamba2_state_dtype`` rule (fp32 unless ``SGLANG_MAMBA_SSM_DTYPE``)."""
    from sglang.srt.environ import envs

    sglang_rule = mamba2_state_dtype(config)
    conv = sglang_rule.conv if envs.SGLANG_MAMBA_CONV_DTYPE.is_set() else torch.float32
    return Mamba2StateDType(conv=conv, temporal=sglang_rule.temporal)


def tp_size() -> int:
    """SGLang's tensor-parallel size in this process (1 before SGLang has published its parallel setup)."""
    from sglang.srt.runtime_context import get_parallel

    try:
        parallel = get_parallel()
        return int(parallel.tp_size) if parallel else 1
    except Exception:  # not published yet (config parsing in the launching process)
        return 1


def check_tp(size: int) -> None:
    """``ValueError`` unless ``size == 1``: deltainv's SGLang RWKV-7 does not shard heads."""
    if size != 1:
        raise ValueError(f"deltainv's SGLang {serving.ARCH} runs with tensor parallel size 1 (got --tp-size {size}); "
                         "use data parallelism (--dp-size) to spread replicas over GPUs")


class RWKV7SGLangConfig(RWKV7Config):
    """deltainv's :class:`RWKV7Config` with SGLang's hybrid-state properties (see the module docstring)."""

    @property
    def full_attention_layer_ids(self) -> list[int]:
        return []

    @property
    def linear_layer_ids(self) -> list[int]:
        return list(range(self.num_hidden_layers))

    @property
    def mamba2_cache_params(self) -> RWKV7CacheParams:
        check_tp(tp_size())
        shift, wkv = serving.state_shapes(self, ENGINE)
        H, K, V = wkv
        return RWKV7CacheParams(shape=RWKV7StateShape(conv=[shift], temporal=wkv, num_heads=H, head_dim=K, head_v_dim=V),
                                dtype=state_dtypes(self), layers=self.linear_layer_ids)


__all__ = ["ENGINE", "RWKV7CacheParams", "RWKV7SGLangConfig", "RWKV7StateShape", "check_tp", "state_dtypes",
           "tp_size"]
