"""A Kimi Linear checkpoint that both transformers and vLLM read: Moonshot's layout.

transformers 5.x saves ``KimiLinearForCausalLM`` in its own config keys (``layer_types``,
``mlp_layer_types``, ``linear_num_heads``...) and names every MLP ``block_sparse_moe.`` on save,
dense ones included. vLLM 0.32 reads Kimi Linear the way Moonshot ships it: ``linear_attn_config``
(1-based ``kda_layers`` / ``full_attn_layers``, ``num_heads``, ``head_dim``, ``short_conv_kernel_size``),
``first_k_dense_replace``, ``mla_use_nope: true`` (Kimi's MLA has no RoPE, and vLLM's Kimi-K3 MLA
refuses to build without the flag), and dense MLPs under ``mlp.``. transformers reads that layout
too (``linear_attn_config`` takes precedence over ``layer_types``; ``mlp.`` is its own module name), so
:func:`to_moonshot_layout` rewrites a saved folder once, in place, and both engines load the same
files.

:func:`pad_mla_latent` widens the MLA latent (``kv_lora_rank``) of a trained checkpoint from r to R
channels with zeros. vLLM's CPU MLA kernels take only a latent of 512 + RoPE 64 (576, Kimi Linear
48B's and DeepSeek's size). The model computes the same function: the padded channels are 0, the
latent rows of ``kv_a_proj_with_mqa`` are scaled by ``sqrt(R / r)`` so that the RMS over R channels
equals the old RMS over r (epsilon included), and the ``kv_a_layernorm`` weight by ``sqrt(r / R)`` to
undo that scale after the norm.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from safetensors.torch import load_file, save_file


def moonshot_config(cfg: dict) -> dict:
    """``cfg`` (transformers' ``kimi_linear`` config.json) plus Moonshot's keys for the same model."""
    layers = cfg["layer_types"]
    mlp = cfg["mlp_layer_types"]
    dense = sum(1 for t in mlp if t == "dense")
    if mlp != ["dense"] * dense + ["sparse"] * (len(mlp) - dense):
        raise ValueError(f"mlp_layer_types {mlp}: Moonshot's layout needs the dense MLPs first (first_k_dense_replace)")
    out = dict(cfg)
    out["linear_attn_config"] = {
        "kda_layers": [i + 1 for i, t in enumerate(layers) if t == "linear_attention"],
        "full_attn_layers": [i + 1 for i, t in enumerate(layers) if t == "full_attention"],
        "num_heads": cfg["linear_num_heads"],
        "head_dim": cfg["linear_head_dim"],
        "short_conv_kernel_size": cfg["linear_conv_kernel_dim"],
    }
    out.update(first_k_dense_replace=dense, moe_layer_freq=1, mla_use_nope=True, moe_router_activation_func="sigmoid",
               use_grouped_topk=True, num_nextn_predict_layers=0)
    return out


def _dense_layers(cfg: dict) -> list[int]:
    return [i for i, t in enumerate(cfg["mlp_layer_types"]) if t == "dense"]


def to_moonshot_layout(folder: str | Path) -> None:
    """Rewrite ``folder``'s config.json and model.safetensors in Moonshot's layout (idempotent)."""
    folder = Path(folder)
    cfg = json.loads((folder / "config.json").read_text())
    weights = load_file(str(folder / "model.safetensors"))
    renamed = {}
    for name, tensor in weights.items():
        for i in _dense_layers(cfg):
            name = name.replace(f"layers.{i}.block_sparse_moe.", f"layers.{i}.mlp.")
        renamed[name] = tensor
    save_file(renamed, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(moonshot_config(cfg), indent=2) + "\n")


def pad_mla_latent(folder: str | Path, rank: int) -> None:
    """Widen the MLA latent of ``folder``'s checkpoint to ``rank`` channels (see the module)."""
    folder = Path(folder)
    cfg = json.loads((folder / "config.json").read_text())
    r, rope = cfg["kv_lora_rank"], cfg["qk_rope_head_dim"]
    if rank == r:
        return
    if rank < r:
        raise ValueError(f"kv_lora_rank {r} cannot be narrowed to {rank}")
    weights = load_file(str(folder / "model.safetensors"))
    for name, w in list(weights.items()):
        if name.endswith("kv_a_proj_with_mqa.weight"):  # rows: [latent r | rope]
            new = w.new_zeros(rank + rope, w.shape[1])
            new[:r], new[rank:] = w[:r] * math.sqrt(rank / r), w[r:]
        elif name.endswith("kv_a_layernorm.weight"):
            new = w.new_zeros(rank)
            new[:r] = w * math.sqrt(r / rank)
        elif name.endswith("kv_b_proj.weight"):  # columns: the latent
            new = w.new_zeros(w.shape[0], rank)
            new[:, :r] = w
        else:
            continue
        weights[name] = new.contiguous()
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    cfg["kv_lora_rank"] = rank
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def set_norm_eps(folder: str | Path, eps: float) -> None:
    """Set ``rms_norm_eps`` in ``folder``'s config.json.

    vLLM 0.32 builds Kimi Linear's KDA output norm (``FusedRMSNormGated``) with its default eps 1e-5
    whatever the config says (Kimi Linear 48B's own ``rms_norm_eps``), while transformers uses
    ``rms_norm_eps``. With 1e-6 the two engines' outputs differ by up to 0.4 (of 0.6) on tokens whose
    KDA output is tiny (the norm's eps dominates there), so a checkpoint meant for both uses 1e-5.
    """
    folder = Path(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rms_norm_eps"] = eps
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m deltainv.models.kimi_layout", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--kv-lora-rank", type=int, default=None, help="widen the MLA latent to this many channels")
    p.add_argument("--rms-norm-eps", type=float, default=None, help="set rms_norm_eps (vLLM's KDA output norm: 1e-5)")
    args = p.parse_args(argv)
    if args.kv_lora_rank is not None:
        pad_mla_latent(args.folder, args.kv_lora_rank)
    if args.rms_norm_eps is not None:
        set_norm_eps(args.folder, args.rms_norm_eps)
    to_moonshot_layout(args.folder)
    print(f"[kimi_layout] {args.folder}: Moonshot layout"
          + (f", kv_lora_rank {args.kv_lora_rank}" if args.kv_lora_rank else "")
          + (f", rms_norm_eps {args.rms_norm_eps}" if args.rms_norm_eps else ""))


if __name__ == "__main__":
    main()
