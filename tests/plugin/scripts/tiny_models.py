"""Tiny random Qwen3-Next, Qwen3.5 and Kimi Linear models, generated offline (no hub).

Used by the plugin tests in their own processes and virtual environments (this file imports only
torch and transformers). The models are made so that the chunk inverse *matters*: every GDN/KDA
layer has slow decay (``A_log`` very negative, so the per-token gate is close to 1) and a beta close
to 1, and the prompts contain long runs of one repeated token. Repeated tokens give identical keys
after the short causal conv, which is the input on which the unstable product form breaks
(README "Numerics"), so a wrong inverse visibly changes logits and greedy completions, while any
stable method agrees with the baseline.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

KINDS = ("qwen3_next", "qwen3_5", "kimi_linear")
VOCAB = 512


def config(kind: str):
    if kind == "qwen3_next":
        from transformers import Qwen3NextConfig

        return Qwen3NextConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            layer_types=["linear_attention", "full_attention"], num_attention_heads=2, num_key_value_heads=1,
            head_dim=64, linear_conv_kernel_dim=4, linear_key_head_dim=64, linear_value_head_dim=64,
            linear_num_key_heads=2, linear_num_value_heads=4, num_experts=4, num_experts_per_tok=2,
            moe_intermediate_size=64, shared_expert_intermediate_size=64, decoder_sparse_step=1,
            max_position_embeddings=1024, initializer_range=0.1, tie_word_embeddings=False,
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        )
    if kind == "qwen3_5":
        from transformers.models.qwen3_5 import Qwen3_5TextConfig

        return Qwen3_5TextConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            layer_types=["linear_attention", "full_attention"], num_attention_heads=2, num_key_value_heads=1,
            head_dim=64, linear_conv_kernel_dim=4, linear_key_head_dim=64, linear_value_head_dim=64,
            linear_num_key_heads=2, linear_num_value_heads=4, max_position_embeddings=1024,
            initializer_range=0.1, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        )
    if kind == "kimi_linear":
        from transformers import KimiLinearConfig

        return KimiLinearConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=128, moe_intermediate_size=64,
            num_hidden_layers=2, layer_types=["linear_attention", "full_attention"],
            mlp_layer_types=["dense", "sparse"], num_attention_heads=2, num_key_value_heads=2,
            kv_lora_rank=32, q_lora_rank=None, qk_rope_head_dim=16, qk_nope_head_dim=32, v_head_dim=32,
            num_experts=4, num_experts_per_token=2, num_shared_experts=1, linear_num_heads=2,
            linear_head_dim=32, linear_conv_kernel_dim=4, max_position_embeddings=1024,
            initializer_range=0.1, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        )
    raise ValueError(f"unknown kind {kind!r}; choose one of {KINDS}")


def _model_class(kind: str):
    if kind == "qwen3_next":
        from transformers import Qwen3NextForCausalLM as cls
    elif kind == "qwen3_5":
        from transformers import Qwen3_5ForCausalLM as cls
    else:
        from transformers import KimiLinearForCausalLM as cls
    return cls


@torch.no_grad()
def make_sensitive(model: torch.nn.Module) -> None:
    """Slow decay and a constant beta of 0.5 in every linear-attention layer (see the module docstring).

    With identical keys and beta = 0.5 the chunk matrix is 0.5 times the all-ones strictly lower
    matrix: the product form's powers reach about 0.5^32 C(63, 32) ~ 2e8 at C = 64, far past fp16's
    65504, while every stable method is exact to rounding.
    """
    for module in model.modules():
        if hasattr(module, "A_log") and hasattr(module, "dt_bias"):
            module.A_log.fill_(-8.0)  # decay rate exp(A_log) ~ 3e-4: per-token gate ~ 1
        for name in ("in_proj_ba", "in_proj_b", "in_proj_a", "b_proj"):  # beta = sigmoid(0), a = 0
            if isinstance(getattr(module, name, None), torch.nn.Linear):
                getattr(module, name).weight.zero_()


def build(kind: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    torch.manual_seed(seed)
    cfg = config(kind)
    model = _model_class(kind)(cfg).to(dtype).eval()
    make_sensitive(model)
    return model


def prompt_ids(n: int = 150, seed: int = 0) -> torch.Tensor:
    """``[1, n]`` token ids: a few random tokens, then a long run of one token, then random again."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (n,), generator=g)
    ids[20:120] = 7
    return ids[None]


def save(kind: str, path: str | Path, seed: int = 0) -> Path:
    """Save a bf16 model with a byte-level BPE tokenizer trained offline (for vLLM)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model = build(kind, seed, torch.float32)
    model.to(torch.bfloat16).save_pretrained(path)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [Path(m.__file__).read_text(errors="ignore") for m in (json, torch.nn.functional, sys.modules[__name__])]
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(path)
    return path


if __name__ == "__main__":
    save(sys.argv[1], sys.argv[2])
