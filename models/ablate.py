"""Where a shipped model's recall lives, and how much the triangular solve's precision matters.

    .venv/bin/python -m deltainv.models.ablate models/qwen3_next_tiny --n 200

Scores the first ``--n`` items of ``deltainv_mqar_mc`` and ``--n / 2`` of ``deltainv_kvlast_mc``
(4-choice loglikelihood, as lm-eval does; CPU, float32 or ``--dtype bfloat16``) for the model as
shipped; with one layer's output projection zeroed (attention ``o_proj`` or GDN ``out_proj``);
and with the unit-lower-triangular solve of transformers' chunked GDN path (``(I + L)^-1`` of
every 64-token chunk, ``L`` the strictly lower ``beta K K^T`` part) replaced by a wrong or
perturbed one: ``identity`` (no inverse), ``neumann1`` (``I - L``), ``bf16`` (inputs and result
rounded to bfloat16) and ``noise=<r>`` (result times ``1 + r N(0, 1)`` elementwise). Prints one
line each, then all of it as JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys

sys.modules.setdefault("fla", None)  # fla's Triton kernels fail on a CPU

import torch  # noqa: E402

from deltainv.eval.tasks import loader  # noqa: E402


def mc_accuracy(model, tok, family: str, n: int) -> float:
    rows = loader.read_rows(f"{family}.jsonl")[:n]
    hits = 0
    for r in rows:
        ids = tok(r["prompt"]).input_ids
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].log_softmax(-1)
        scores = [logp[tok(" " + c).input_ids[0]].item() for c in r["choices"]]
        hits += max(range(len(scores)), key=scores.__getitem__) == r["label"]
    return hits / len(rows)


def patched_solve(kind: str, orig, gen: torch.Generator):
    def solve(A, B, *, upper, unitriangular, **kw):
        assert not upper and unitriangular
        if kind == "identity":
            return B
        if kind == "neumann1":
            return B - A.tril(-1) @ B
        if kind == "bf16":
            r = lambda x: x.to(torch.bfloat16).to(torch.float32)  # noqa: E731
            return r(orig(r(A), r(B), upper=upper, unitriangular=unitriangular))
        if kind.startswith("noise="):
            X = orig(A, B, upper=upper, unitriangular=unitriangular)
            rel = float(kind.split("=")[1])
            return X * (1 + rel * torch.randn(X.shape, generator=gen, dtype=X.dtype))
        raise ValueError(kind)
    return solve


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model_dir")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--solves", default="identity,neumann1,bf16,noise=0.01,noise=0.1")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="weights and activations (transformers' GDN path computes the delta rule in float32)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=getattr(torch, args.dtype)).eval()
    out = {}

    def report(name, m):
        out[name] = {"mqar_mc": mc_accuracy(m, tok, "mqar", args.n),
                     "kvlast_mc": mc_accuracy(m, tok, "kvlast", max(1, args.n // 2))}
        print(f"[ablate] {name:40s} mqar_mc {out[name]['mqar_mc']:.3f}  kvlast_mc {out[name]['kvlast_mc']:.3f}",
              flush=True)

    report("as shipped", model)
    for i, layer in enumerate(model.model.layers):
        m = copy.deepcopy(model)
        lay = m.model.layers[i]
        proj = lay.self_attn.o_proj if hasattr(lay, "self_attn") else lay.linear_attn.out_proj
        with torch.no_grad():
            proj.weight.zero_()
        report(f"layer {i} ({'attention' if hasattr(lay, 'self_attn') else 'GDN'}) output zeroed", m)
        del m
    orig = torch.linalg.solve_triangular
    for kind in filter(None, args.solves.split(",")):
        torch.linalg.solve_triangular = patched_solve(kind, orig, torch.Generator().manual_seed(0))
        try:
            report(f"triangular solve: {kind}", model)
        finally:
            torch.linalg.solve_triangular = orig
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
