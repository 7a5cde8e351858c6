"""Train the shipped tiny Qwen3-Next hybrid on the synthetic delta-rule tasks, on the CPU.

    .venv/bin/python -m deltainv.models.train --out models/qwen3_next_tiny

(run it through the venv's python, not from a shell in the repository root with ``python -m``
on the bare folder). Writes ``config.json``, ``model.safetensors``, ``tokenizer.json``,
``tokenizer_config.json``, ``generation_config.json`` and ``training.json`` (recipe, seed,
measured wall time, held-out accuracy) into ``--out``.

Recipe: every step draws one task (weights ``TASK_WEIGHTS``) and a batch of fresh instances of
it (``synthetic.sample_instance`` from a seeded ``random.Random``, disjoint in seed from the
evaluation files), sized to about ``--tokens`` tokens and right-padded. The loss is the
cross-entropy on answer tokens only (each answer and the newline that ends it), so the model
learns the lookup, not the random context. AdamW, linear warm-up then cosine decay, gradient
clipping at 1.0. One torch thread by default so a shared 2-core box stays usable.

By default (``--init recall``) the model starts from ``deltainv.models.recall_init``: the
delta-rule lookup circuit written into GDN layer 1 (a shift convolution, a write gate on value
tokens, no forgetting, random key/value codes), so it recalls at step 0; training then learns the
rest (answer formats, the closing newline, copying, arithmetic) on evaluation-sized documents.
``--init default`` is transformers' init plus the GDN decay init below, with the small-document
curriculum; from it, 4,400 steps stayed near chance (see ``docs/models.md``).
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

# fla (installed in the default venv) makes transformers bind its Triton kernels for
# Qwen3Next at import time; on a CPU they fail with "0 active drivers". Blocking the import
# selects transformers' pure-PyTorch GDN path. Must happen before transformers is imported.
sys.modules.setdefault("fla", None)

import torch  # noqa: E402

from deltainv.eval.tasks import synthetic  # noqa: E402
from deltainv.models import config as model_config  # noqa: E402
from deltainv.models import recall_init  # noqa: E402
from deltainv.models import tokenizer as model_tokenizer  # noqa: E402
from deltainv.models.kimi_layout import to_moonshot_layout  # noqa: E402

#: Share of steps spent on each task (mqar is the main recall task).
TASK_WEIGHTS = {"recall_stream": 0.35, "mqar": 0.3, "kvlast": 0.15, "copy": 0.1, "arith": 0.1}
#: Tasks of the recall phase (small sizes, before the full mixture).
RECALL_PHASE_TASKS = ("recall_stream", "mqar")
#: Label of positions that carry no loss.
IGNORE = -100
#: Task sizes at step 0 (see ``curriculum_sizes``); the evaluation sizes are reached later.
START_SIZES = {
    "mqar": {"n_pairs": (2, 8)},
    "kvlast": {"n_keys": (1, 2), "n_updates": (2, 8)},
    "copy": {"length": (2, 6)},
    "arith": {"n_vars": (2, 4)},
    "recall_stream": {"n_keys": (2, 8)},
}


def encode_instance(tok, inst: synthetic.Instance) -> tuple[list[int], list[int]]:
    """Token ids and labels (``IGNORE`` except on answer tokens and their closing newline).

    Labels are aligned with the ids (transformers shifts them inside the loss).
    """
    enc = tok.encode(inst.text)
    labels = [IGNORE] * len(enc.ids)
    spans = [(a, b + 1 if inst.text[b:b + 1] == "\n" else b) for a, b in inst.targets]
    span_iter = iter(sorted(spans))
    cur = next(span_iter, None)
    for i, (start, end) in enumerate(enc.offsets):
        while cur is not None and start >= cur[1]:
            cur = next(span_iter, None)
        if cur is not None and start >= cur[0] and end <= cur[1]:
            labels[i] = enc.ids[i]
    return enc.ids, labels


def make_batch(tok, task: str, rng: random.Random, token_budget: int, pad_id: int, sizes=None):
    """``(input_ids, labels)`` LongTensors ``[B, T]`` of fresh ``task`` instances, right-padded."""
    rows = []
    longest = 0
    while True:
        ids, labels = encode_instance(tok, synthetic.sample_instance(task, rng, sizes))
        if rows and max(longest, len(ids)) * (len(rows) + 1) > token_budget:
            break
        rows.append((ids, labels))
        longest = max(longest, len(ids))
    x = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    y = torch.full((len(rows), longest), IGNORE, dtype=torch.long)
    for r, (ids, labels) in enumerate(rows):
        x[r, :len(ids)] = torch.tensor(ids)
        y[r, :len(labels)] = torch.tensor(labels)
    return x, y


def answer_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Teacher-forced accuracy over labelled tokens: argmax of ``logits[:, t-1]`` == ``labels[:, t]``."""
    pred = logits[:, :-1].argmax(-1)
    gold = labels[:, 1:]
    mask = gold != IGNORE
    return (pred[mask] == gold[mask]).float().mean().item()


@torch.no_grad()
def held_out_accuracy(model, tok, seed: int, n_batches: int, token_budget: int, pad_id: int) -> dict:
    """Teacher-forced answer-token accuracy per task on fixed held-out instances."""
    model.eval()
    out = {}
    for task in synthetic.TASKS:
        rng = random.Random(seed * 1000 + synthetic.TASKS.index(task))
        hits = total = 0
        for _ in range(n_batches):
            x, y = make_batch(tok, task, rng, token_budget, pad_id)
            logits = model(input_ids=x, use_cache=False).logits
            pred, gold = logits[:, :-1].argmax(-1), y[:, 1:]
            mask = gold != IGNORE
            hits += (pred[mask] == gold[mask]).sum().item()
            total += mask.sum().item()
        out[task] = hits / total
    model.train()
    return out


def curriculum_sizes(step: int, ramp_steps: int, start_step: int = 0) -> dict:
    """Task sizes at ``step``: both ends of every range move linearly from ``START_SIZES`` to
    the evaluation ranges (``synthetic.SIZES``) over ``ramp_steps``, then stay there.

    Recall is learned in a sudden transition that comes far sooner on short documents (a few
    pairs); long ones then teach the model to hold its state across many 64-token chunks.
    """
    frac = min(1.0, max(0, step - start_step) / max(1, ramp_steps))
    sizes = {}
    for task, ranges in synthetic.SIZES.items():
        sizes[task] = {}
        for k, (hi_lo, hi_hi) in ranges.items():
            lo_lo, lo_hi = START_SIZES[task][k]
            lo = round(lo_lo + frac * (hi_lo - lo_lo))
            sizes[task][k] = (lo, max(lo, round(lo_hi + frac * (hi_hi - lo_hi))))
    return sizes


def init_gdn_decay(model, rng: torch.Generator, dt_range=(1e-4, 1e-2)) -> None:
    """Long-memory decay init for every GDN layer: ``A = 1`` (``A_log = 0``) and ``dt``
    log-uniform in ``dt_range``, stored as ``dt_bias = softplus^-1(dt)``, so the per-token
    log-decay ``g = -A softplus(a + dt_bias)`` starts in about [-1e-2, -1e-4]: memories last
    100 to 10,000 tokens, as the tasks (lookups 30 to 450 tokens back) need.

    transformers' default (``dt_bias = 1``, ``A`` in [0.01, 16]) gives ``g ~ -1.3 A``: most
    heads forget everything after a token or two and the gradient through the decay vanishes.
    """
    for module in model.modules():
        if hasattr(module, "dt_bias") and hasattr(module, "A_log"):
            n = module.dt_bias.numel()
            lo, hi = (math.log(x) for x in dt_range)
            dt = torch.exp(torch.rand(n, generator=rng) * (hi - lo) + lo)
            with torch.no_grad():
                module.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
                module.A_log.zero_()


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to 10% of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


#: ``--arch`` -> (transformers config class, model class, config kwargs, recall construction, its description).
ARCHS = {
    "qwen3_next": ("Qwen3NextConfig", "Qwen3NextForCausalLM", model_config.config_kwargs,
                   recall_init.apply, recall_init.describe),
    "kimi_linear": ("KimiLinearConfig", "KimiLinearForCausalLM", model_config.kimi_config_kwargs,
                    recall_init.apply_kda, recall_init.describe_kda),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output model folder")
    p.add_argument("--steps", type=int, default=2400)
    p.add_argument("--tokens", type=int, default=2048, help="padded tokens per batch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--recall-phase", type=float, default=0.2,
                   help="fraction of the steps (first) spent on small recall documents only")
    p.add_argument("--ramp", type=float, default=0.4,
                   help="fraction of the steps, after the recall phase, over which sizes grow to full")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=1, help="seeds torch init and the data stream")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps a core free)")
    p.add_argument("--resume", type=Path, default=None,
                   help="continue from this model folder (weights only; fresh optimizer, schedule "
                        "and data seed); its training.json is kept as the previous segment")
    p.add_argument("--full-sizes", action="store_true",
                   help="skip the recall phase and the size ramp (implied by --init recall; for a "
                        "--resume segment)")
    p.add_argument("--init", choices=("default", "recall"), default="recall",
                   help="recall: write the delta-rule lookup circuit into GDN layer 1 before training "
                        "(models/recall_init.py); default: transformers' init + the GDN decay init")
    p.add_argument("--arch", choices=tuple(ARCHS), default="qwen3_next",
                   help="qwen3_next: Gated DeltaNet hybrid (models/qwen3_next_tiny); kimi_linear: Kimi Delta "
                        "Attention hybrid (models/kimi_linear_tiny)")
    p.add_argument("--kda-chunk", type=int, default=16,
                   help="kimi_linear: chunk size of transformers' PyTorch KDA during training (the result is "
                        "the same for any chunk size; its [chunk, chunk, K] decay tensors and row-by-row "
                        "substitution make 64 about 6x slower than 16 on a CPU)")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--eval-every", type=int, default=400)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    import transformers

    cfg_name, model_name, config_kwargs, construct, describe = ARCHS[args.arch]
    config_cls, model_cls = getattr(transformers, cfg_name), getattr(transformers, model_name)

    tok = model_tokenizer.build(seed=0)
    eos_id = tok.token_to_id(model_tokenizer.EOS)
    # Round the embedding table up to a multiple of 64; ids past the tokenizer are never used.
    vocab = 64 * math.ceil(tok.get_vocab_size() / 64)
    cfg = config_cls(**config_kwargs(vocab, eos_id))
    previous = None
    init_params = None
    if args.resume is not None:
        model = model_cls.from_pretrained(str(args.resume), dtype=torch.float32)
        prev_record = args.resume / "training.json"
        previous = json.loads(prev_record.read_text()) if prev_record.exists() else None
    else:
        model = model_cls(cfg)
        init_gdn_decay(model, torch.Generator().manual_seed(args.seed))
        if args.init == "recall":
            init_params = construct(model, tok, torch.Generator().manual_seed(args.seed))
    if args.arch == "kimi_linear":
        import functools

        from transformers.models.kimi_linear import modeling_kimi_linear

        modeling_kimi_linear.chunk_kimi_delta_attention = functools.partial(
            modeling_kimi_linear.chunk_kimi_delta_attention, chunk_size=args.kda_chunk)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[train] {n_params:,} parameters, vocab {tok.get_vocab_size()} (table {vocab}), "
          f"{args.steps} steps, {args.threads} thread(s)", flush=True)

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    data_rng = random.Random(args.seed)
    tasks, weights = zip(*TASK_WEIGHTS.items())
    ema: dict[str, list[float]] = {t: [] for t in tasks}
    history = []
    t0 = time.time()
    n_tokens = 0
    # The curriculum exists to get a randomly initialised model past the recall plateau; with the
    # recall circuit written in at step 0 every step uses the evaluation sizes.
    full_sizes = args.full_sizes or (args.resume is None and args.init == "recall")
    for step in range(args.steps):
        phase1 = 0 if full_sizes else int(args.recall_phase * args.steps)
        # Recall phase: small mqar only, until the lookup circuit exists; then the mixture.
        task = data_rng.choice(RECALL_PHASE_TASKS) if step < phase1 else data_rng.choices(tasks, weights)[0]
        sizes = None if full_sizes else curriculum_sizes(step, int(args.ramp * args.steps), start_step=phase1)
        x, y = make_batch(tok, task, data_rng, args.tokens, eos_id, sizes)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        out = model(input_ids=x, labels=y, use_cache=False)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        n_tokens += x.numel()
        ema[task] = (ema[task] + [answer_accuracy(out.logits.detach(), y)])[-10:]
        if (step + 1) % args.log_every == 0 or step == 0:
            el = time.time() - t0
            accs = " ".join(f"{t}={sum(v) / len(v):.2f}" for t, v in ema.items() if v)
            print(f"[train] step {step + 1}/{args.steps} loss {out.loss.item():.3f} "
                  f"train-acc {accs} | {el / 60:.1f} min, {n_tokens / el:.0f} tok/s, "
                  f"eta {(args.steps - step - 1) * el / (step + 1) / 60:.1f} min", flush=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            acc = held_out_accuracy(model, tok, seed=10_000 + args.seed, n_batches=2,
                                    token_budget=args.tokens, pad_id=eos_id)
            history.append({"step": step + 1, "minutes": round((time.time() - t0) / 60, 2), **acc})
            print(f"[train] held-out answer-token accuracy at step {step + 1}: "
                  + " ".join(f"{k}={v:.3f}" for k, v in acc.items()), flush=True)
            model.save_pretrained(str(args.out / "checkpoint"), safe_serialization=True)
    wall = time.time() - t0

    args.out.mkdir(parents=True, exist_ok=True)
    model.config.architectures = [model_name]
    model.generation_config.do_sample = False
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = eos_id
    model.save_pretrained(str(args.out), safe_serialization=True)
    model_tokenizer.save_pretrained(tok, args.out, model_max_length=cfg.max_position_embeddings)
    if args.arch == "kimi_linear":  # the layout vLLM reads too (transformers reads both)
        to_moonshot_layout(args.out)
    record = {
        "command": "python -m deltainv.models.train " + " ".join(argv if argv is not None else sys.argv[1:]),
        "arch": args.arch,
        "kda_training_chunk": args.kda_chunk if args.arch == "kimi_linear" else None,
        "seed": args.seed,
        "tokenizer_seed": 0,
        "steps": args.steps,
        "tokens_per_batch": args.tokens,
        "tokens_seen_padded": n_tokens,
        "lr": args.lr,
        "warmup": args.warmup,
        "weight_decay": args.weight_decay,
        "schedule": "linear warm-up, cosine decay to 10%",
        "optimizer": "AdamW(betas=(0.9, 0.98)), grad clip 1.0",
        "task_weights": TASK_WEIGHTS,
        "task_sizes": synthetic.SIZES,
        "curriculum": "off (evaluation sizes from step 0)" if full_sizes else
        {"recall_phase_fraction": args.recall_phase, "start_sizes": START_SIZES,
         "ramp_fraction_of_steps": args.ramp},
        "gdn_init": "A = 1, dt log-uniform [1e-4, 1e-2] (dt_bias = softplus^-1(dt))"
        + ("; in the GDN layers the recall circuit does not overwrite" if init_params else ""),
        "init": ("resumed from " + str(args.resume)) if args.resume is not None else args.init,
        "recall_init": None if init_params is None else {"params": init_params,
                                                         "description": describe(init_params)},
        "loss": "cross-entropy on answer tokens (+ closing newline) only",
        "parameters": n_params,
        "torch_threads": args.threads,
        "wall_time_s": round(wall, 1),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip()
        + f", {os.cpu_count()} logical CPUs",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "held_out_teacher_forced_accuracy": history,
    }
    if previous is not None:
        record["previous_segment"] = previous
        record["total_wall_time_s"] = round(previous.get("total_wall_time_s", previous["wall_time_s"]) + wall, 1)
    else:
        record["total_wall_time_s"] = round(wall, 1)
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"[train] done in {wall / 60:.1f} min -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
