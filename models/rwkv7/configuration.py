"""``RWKV7Config``: fla's ``rwkv7`` Hugging Face configuration, field for field.

A ``config.json`` written by fla (the fla-hub RWKV-7 checkpoints, ``model_type: rwkv7``) loads
unchanged: the same field names, defaults and derived values (``num_heads`` from ``head_dim``,
``value_dim`` expanded to one entry per layer). fla-only fields that steer its Triton kernels
(``attn_mode``, ``fuse_norm``, ``fuse_cross_entropy``, ``use_l2warp`` ...) are kept so a checkpoint
round-trips, but they do not change what this model computes. Bad values raise ``ValueError``
naming the field.

One deltainv field, absent from fla's files: ``deltainv_inverse``, ``None`` (the registry's
inversion, chosen by ``DELTAINV_*``) or ``"fla_fp16"`` (fla 0.6.0's fp16 product recipe, emulated:
a study arm for the parity report, never a default).
"""

from __future__ import annotations

from transformers import PretrainedConfig

#: Values of ``deltainv_inverse``.
INVERSES = (None, "fla_fp16")


class RWKV7Config(PretrainedConfig):
    model_type = "rwkv7"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        attn_mode: str = "chunk",
        hidden_size: int = 2048,
        hidden_ratio: int | None = 4,
        intermediate_size: int | None = None,
        num_hidden_layers: int = 24,
        head_dim: int | None = 64,
        num_heads: int | None = None,
        decay_low_rank_dim: int = 64,
        gate_low_rank_dim: int = 128,
        a_low_rank_dim: int = 64,
        v_low_rank_dim: int = 16,
        hidden_act: str = "sqrelu",
        max_position_embeddings: int = 2048,
        norm_first: bool = True,
        norm_bias: bool = True,
        norm_eps: float = 1e-5,
        attn: dict | None = None,
        use_cache: bool = True,
        pad_token_id: int | None = None,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        tie_word_embeddings: bool = False,
        initializer_range: float = 0.02,
        fuse_norm: bool = True,
        fuse_cross_entropy: bool = True,
        fuse_linear_cross_entropy: bool = False,
        use_l2warp: bool = True,
        vocab_size: int = 32000,
        value_dim: int | list[int] | None = None,
        deltainv_inverse: str | None = None,
        **kwargs,
    ):
        if head_dim is None and num_heads is not None:
            head_dim = int(hidden_size // num_heads)
        elif head_dim is not None and num_heads is None:
            num_heads = int(hidden_size // head_dim)
        if head_dim is None or head_dim <= 0 or hidden_size % head_dim:
            raise ValueError(f"RWKV7Config.head_dim={head_dim} must divide hidden_size={hidden_size}")
        if num_heads * head_dim != hidden_size:
            raise ValueError(f"RWKV7Config.num_heads={num_heads} x head_dim={head_dim} != hidden_size={hidden_size}")
        if value_dim is None:
            value_dim = [hidden_size] * num_hidden_layers
        elif isinstance(value_dim, int):
            value_dim = [value_dim] * num_hidden_layers
        value_dim = list(value_dim)
        if len(value_dim) != num_hidden_layers:
            raise ValueError(f"RWKV7Config.value_dim has {len(value_dim)} entries for {num_hidden_layers} layers")
        for v in value_dim:
            if v < hidden_size or v % hidden_size:
                raise ValueError(f"RWKV7Config.value_dim entries must be multiples of hidden_size={hidden_size}; "
                                 f"got {v}")
        if attn is not None:
            raise ValueError("RWKV7Config.attn: hybrid RWKV-7 checkpoints with softmax-attention layers are not "
                             "supported by deltainv's RWKV7ForCausalLM")
        if hidden_act != "sqrelu":
            raise ValueError(f"RWKV7Config.hidden_act={hidden_act!r}: only 'sqrelu' (RWKV-7's) is supported")
        if not norm_first:
            raise ValueError("RWKV7Config.norm_first=False is not supported (every fla RWKV-7 checkpoint uses True)")
        if deltainv_inverse not in INVERSES:
            raise ValueError(f"RWKV7Config.deltainv_inverse={deltainv_inverse!r}; choose one of {INVERSES}")

        self.attn_mode = attn_mode
        self.hidden_size = hidden_size
        self.hidden_ratio = hidden_ratio
        self.intermediate_size = intermediate_size
        self.norm_first = norm_first
        self.num_hidden_layers = num_hidden_layers
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.value_dim = value_dim
        self.decay_low_rank_dim = decay_low_rank_dim
        self.gate_low_rank_dim = gate_low_rank_dim
        self.a_low_rank_dim = a_low_rank_dim
        self.v_low_rank_dim = v_low_rank_dim
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.norm_bias = norm_bias
        self.norm_eps = norm_eps
        self.attn = attn
        self.use_cache = use_cache
        self.initializer_range = initializer_range
        self.fuse_norm = fuse_norm
        self.fuse_cross_entropy = fuse_cross_entropy
        self.fuse_linear_cross_entropy = fuse_linear_cross_entropy
        self.use_l2warp = use_l2warp
        self.vocab_size = vocab_size
        self.deltainv_inverse = deltainv_inverse
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        model_type = config_dict.get("model_type")
        if model_type != cls.model_type:
            raise ValueError(f"{pretrained_model_name_or_path}: config.json has model_type={model_type!r}, not 'rwkv7'; "
                             "RWKV7Config / RWKV7ForCausalLM load only fla's RWKV-7 format")
        return config_dict, kwargs

    @property
    def ffn_dim(self) -> int:
        """fla's feed-forward width: ``intermediate_size``, else ``hidden_size * hidden_ratio`` rounded up to 32."""
        if self.intermediate_size is not None:
            return self.intermediate_size
        ratio = 4 if self.hidden_ratio is None else self.hidden_ratio
        return 32 * ((int(self.hidden_size * ratio) + 31) // 32)


__all__ = ["INVERSES", "RWKV7Config"]
