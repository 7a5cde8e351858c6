"""RWKV-7 in fla's Hugging Face format on deltainv's DPLR path.

- a checkpoint written by fla 0.6.0 itself (``save_pretrained`` of ``fla.models.RWKV7ForCausalLM``,
  tests/models/data/fla_rwkv7_tiny) loads through ``AutoModelForCausalLM`` with no missing or
  unexpected keys and gives fla's logits (computed by fla's Triton kernels under the interpreter);
- prefill logits equal a float64 token-by-token run, for every stable method;
- prefill then decode equals one prefill; packed (varlen) and left-padded batches equal single
  sequences; generate() works;
- a config or checkpoint that is not RWKV-7, or does not fit its config, is refused by name.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import deltainv  # noqa: F401  (registers rwkv7 with transformers' Auto classes)
from deltainv.kernels import METHODS
from deltainv.models.rwkv7 import RWKV7Config, RWKV7ForCausalLM

DATA = Path(__file__).parent / "data"
FLA_CKPT = DATA / "fla_rwkv7_tiny"
QWEN = Path(__file__).resolve().parents[2] / "models" / "qwen3_next_tiny"


def tiny(seed: int, **kw) -> RWKV7ForCausalLM:
    cfg = dict(hidden_size=64, num_hidden_layers=2, head_dim=32, vocab_size=100, decay_low_rank_dim=8,
               gate_low_rank_dim=16, a_low_rank_dim=8, v_low_rank_dim=8, intermediate_size=128)
    torch.manual_seed(seed)
    model = RWKV7ForCausalLM(RWKV7Config(**{**cfg, **kw})).eval()
    with torch.no_grad():  # away from the init so every path matters
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def ids(seed, *shape):
    return torch.randint(3, 100, shape, generator=torch.Generator().manual_seed(seed))


def _close(a, b, tol):
    err = (a.double() - b.double()).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), err


@torch.no_grad()
def test_fla_checkpoint_loads_unchanged_and_gives_flas_logits():
    from transformers import AutoConfig, AutoModelForCausalLM

    assert type(AutoConfig.from_pretrained(FLA_CKPT)) is RWKV7Config
    model, info = AutoModelForCausalLM.from_pretrained(FLA_CKPT, output_loading_info=True)
    assert isinstance(model, RWKV7ForCausalLM)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    ref = load_file(DATA / "fla_rwkv7_tiny_logits.safetensors")
    logits = model(ref["input_ids"]).logits
    # fla inverts in fp16 and multiplies in tf32: agreement to ~1e-4 of the logits' size.
    _close(logits, ref["logits"], 5e-4)
    assert logits.argmax(-1).eq(ref["logits"].argmax(-1)).float().mean() > 0.95


@torch.no_grad()
def test_prefill_equals_float64_recurrence_for_every_stable_method(seed):
    model = tiny(seed)
    x = ids(seed, 2, 80)  # two chunks of 64, the second partial
    m64 = copy.deepcopy(model).double()
    state, steps = None, []
    for t in range(x.shape[1]):  # one token at a time: the float64 recurrence, no inverse at all
        out = m64(x[:, t:t + 1], past_key_values=state, use_cache=True)
        state = out.past_key_values
        steps.append(out.logits)
    ref = torch.cat(steps, 1)
    for method in [m for m, spec in METHODS.items() if spec.stable]:
        model.set_inversion(method)
        _close(model(x).logits, ref, 1e-4)
    # fla's fp16 recipe is visibly less accurate on the same prompt, but finite.
    model.set_inversion(fla_fp16=True)
    err = (model(x).logits.double() - ref).abs().max().item()
    assert 1e-6 < err < 1.0


@torch.no_grad()
def test_prefill_then_decode_equals_one_prefill(seed):
    model = tiny(seed)
    x = ids(seed, 2, 110)
    full = model(x, use_cache=True)
    a = model(x[:, :70], use_cache=True)                       # prefill
    b = model(x[:, 70:100], past_key_values=a.past_key_values)  # a second prefill on the state
    state, steps = b.past_key_values, []
    for t in range(100, 110):                                  # decode
        out = model(x[:, t:t + 1], past_key_values=state)
        state = out.past_key_values
        steps.append(out.logits)
    _close(torch.cat([a.logits, b.logits, *steps], 1), full.logits, 2e-5)
    assert state.seen == 110
    for i in range(2):
        _close(state.recurrent[i], full.past_key_values.recurrent[i], 2e-5)


@torch.no_grad()
def test_packed_and_left_padded_batches_equal_single_sequences(seed):
    model = tiny(seed)
    seqs = [ids(seed + i, 1, n) for i, n in enumerate((1, 70, 130))]
    single = [model(s, use_cache=True) for s in seqs]
    cu = torch.tensor([0, 1, 71, 201])
    packed = model(torch.cat(seqs, 1), cu_seqlens=cu, use_cache=True)
    _close(packed.logits, torch.cat([o.logits for o in single], 1), 2e-5)
    for layer in range(2):
        _close(packed.past_key_values.recurrent[layer],
               torch.cat([o.past_key_values.recurrent[layer] for o in single]), 2e-5)
    # Left padding with an attention mask: the padded positions leave the state untouched.
    pad = torch.zeros(1, 60, dtype=torch.long)
    batch = torch.cat([torch.cat([pad, seqs[1]], 1), seqs[2][:, :130]], 0)
    mask = torch.ones_like(batch)
    mask[0, :60] = 0
    out = model(batch, attention_mask=mask, use_cache=True)
    _close(out.logits[0, 60:], single[1].logits[0], 2e-5)
    _close(out.logits[1], single[2].logits[0], 2e-5)


@torch.no_grad()
def test_generate_is_greedy_decoding(seed):
    model = tiny(seed)
    model.generation_config.pad_token_id = 0
    # Random weights may pick the EOS id (2); generate would then stop early, so EOS is switched off.
    model.generation_config.eos_token_id = None
    x = ids(seed, 1, 20)
    gen = model.generate(x, max_new_tokens=6, do_sample=False)
    want = x
    for _ in range(6):
        want = torch.cat([want, model(want).logits[:, -1:].argmax(-1)], 1)
    assert torch.equal(gen, want)


def test_not_rwkv7_or_mismatched_checkpoint_is_refused_by_name(tmp_path):
    from transformers import AutoModelForCausalLM

    with pytest.raises(ValueError, match="model_type='qwen3_next', not 'rwkv7'"):
        RWKV7ForCausalLM.from_pretrained(QWEN)
    with pytest.raises(ValueError, match="head_dim"):
        RWKV7Config(hidden_size=64, head_dim=48)
    # The checkpoint's hidden size (64) disagrees with a doctored config.json (96).
    bad = tmp_path / "bad"
    shutil.copytree(FLA_CKPT, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "hidden_size": 96, "num_heads": None, "value_dim": [96, 96]}))
    with pytest.raises(ValueError, match=r"model.embeddings.weight: checkpoint \[100, 64\] vs config \[100, 96\].*"
                                         r"vocab_size, hidden_size"):
        AutoModelForCausalLM.from_pretrained(bad)
    # A low-rank size and a missing layer are named too.
    (bad / "config.json").write_text(json.dumps({**cfg, "decay_low_rank_dim": 16, "num_hidden_layers": 3,
                                                 "value_dim": [64, 64, 64]}))
    with pytest.raises(ValueError, match="decay_low_rank_dim") as err:
        AutoModelForCausalLM.from_pretrained(bad)
    assert "missing tensor model.layers.2." in str(err.value)
    # A tensor with a name fla's RWKV-7 does not have.
    tensors = load_file(FLA_CKPT / "model.safetensors")
    save_file({**tensors, "model.layers.0.attn.q_proj.weight": torch.zeros(64, 64)}, bad / "model.safetensors")
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unexpected tensor model.layers.0.attn.q_proj.weight"):
        AutoModelForCausalLM.from_pretrained(bad)
