"""Build and train the shipped tiny RWKV-7 (``models/rwkv7_tiny``) on the CPU.

    OMP_NUM_THREADS=1 nice .venv/bin/python -m deltainv.models.rwkv7_train --out models/rwkv7_tiny

Same tokenizer, tasks, batches, loss (answer tokens only) and schedule as
:mod:`deltainv.models.train` (the tiny Qwen3-Next); the architecture is fla's RWKV-7 format
(:class:`deltainv.models.rwkv7.RWKV7ForCausalLM`, hidden 128, two layers, heads of 64) starting from
the recall circuit of :mod:`deltainv.models.rwkv7_recall_init`. Training runs through deltainv's
chunked DPLR path with autograd (registry inversion; ``models/rwkv7_tiny`` was trained with ``mxr_refine`` fp32,
the default of the day). It stops after
``--steps`` or ``--minutes``, whichever comes first, and records seed, steps and wall time in
``training.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

import torch

from deltainv.eval.tasks import synthetic
from deltainv.models import rwkv7_recall_init
from deltainv.models import tokenizer as model_tokenizer
from deltainv.models.train import IGNORE, TASK_WEIGHTS, answer_accuracy, held_out_accuracy, lr_at, make_batch

#: ``RWKV7Config`` keywords of the shipped model (vocab and special tokens are added at build time).
ARCH = dict(hidden_size=128, num_hidden_layers=2, head_dim=64, decay_low_rank_dim=16, gate_low_rank_dim=16,
            a_low_rank_dim=16, v_low_rank_dim=16, intermediate_size=256, max_position_embeddings=2048,
            tie_word_embeddings=False, norm_eps=1e-5)


def build(tok, seed: int):
    from deltainv.models.rwkv7 import RWKV7Config, RWKV7ForCausalLM

    eos_id = tok.token_to_id(model_tokenizer.EOS)
    vocab = 64 * math.ceil(tok.get_vocab_size() / 64)
    cfg = RWKV7Config(vocab_size=vocab, bos_token_id=None, eos_token_id=eos_id, pad_token_id=eos_id, **ARCH)
    torch.manual_seed(seed)
    model = RWKV7ForCausalLM(cfg)
    params = rwkv7_recall_init.apply(model, tok, torch.Generator().manual_seed(seed))
    return model, params


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--minutes", type=float, default=18.0, help="stop training after this wall time")
    p.add_argument("--tokens", type=int, default=1024, help="padded tokens per batch")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=10)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tok = model_tokenizer.build(seed=0)
    eos_id = tok.token_to_id(model_tokenizer.EOS)
    model, init_params = build(tok, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[rwkv7-train] {n_params:,} parameters, up to {args.steps} steps / {args.minutes} min", flush=True)
    before = held_out_accuracy(model, tok, seed=10_000 + args.seed, n_batches=1, token_budget=args.tokens,
                               pad_id=eos_id)
    print(f"[rwkv7-train] held-out answer-token accuracy at init: {before}", flush=True)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.0)
    rng = random.Random(args.seed)
    tasks, weights = zip(*TASK_WEIGHTS.items())
    t0 = time.time()
    steps = 0
    for step in range(args.steps):
        if time.time() - t0 > args.minutes * 60:
            break
        task = rng.choices(tasks, weights)[0]
        x, y = make_batch(tok, task, rng, args.tokens, eos_id)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        out = model(input_ids=x, labels=y, use_cache=False)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps = step + 1
        if steps % args.log_every == 0 or step == 0:
            el = time.time() - t0
            print(f"[rwkv7-train] step {steps} {task} loss {out.loss.item():.3f} "
                  f"acc {answer_accuracy(out.logits.detach(), y):.2f} | {el / 60:.1f} min", flush=True)
    wall = time.time() - t0
    model.eval()
    after = held_out_accuracy(model, tok, seed=10_000 + args.seed, n_batches=1, token_budget=args.tokens,
                              pad_id=eos_id)
    print(f"[rwkv7-train] held-out answer-token accuracy after {steps} steps: {after}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    model.config.architectures = ["RWKV7ForCausalLM"]
    model.generation_config.do_sample = False
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = eos_id
    model.save_pretrained(str(args.out), safe_serialization=True)
    model_tokenizer.save_pretrained(tok, args.out, model_max_length=ARCH["max_position_embeddings"])
    record = {
        "command": "python -m deltainv.models.rwkv7_train " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": args.seed, "tokenizer_seed": 0, "steps": steps, "max_steps": args.steps,
        "tokens_per_batch": args.tokens, "lr": args.lr, "warmup": args.warmup,
        "schedule": "linear warm-up, cosine decay to 10% (over max_steps)",
        "optimizer": "AdamW(betas=(0.9, 0.98)), grad clip 1.0",
        "task_weights": TASK_WEIGHTS, "task_sizes": synthetic.SIZES,
        "init": "recall", "recall_init": {"params": init_params, "description": rwkv7_recall_init.describe(init_params)},
        "loss": "cross-entropy on answer tokens (+ closing newline) only", "ignore_label": IGNORE,
        "parameters": n_params, "torch_threads": args.threads, "wall_time_s": round(wall, 1),
        "total_wall_time_s": round(wall, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs (shared with other jobs)",
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "held_out_teacher_forced_accuracy": [{"step": 0, **before}, {"step": steps, "minutes": round(wall / 60, 2),
                                                                      **after}],
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"[rwkv7-train] done in {wall / 60:.1f} min -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
