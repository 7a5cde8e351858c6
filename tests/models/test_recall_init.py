"""The constructed recall initialisation (``models/recall_init.py``): a freshly initialised model
already answers the shipped ``mqar`` and ``kvlast`` multiple-choice items through its Gated
DeltaNet layer, and loses that when the layer's output is removed."""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "qwen3_next_tiny"

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fresh():
    sys.modules.setdefault("fla", None)  # fla's Triton kernels fail on a CPU
    from tokenizers import Tokenizer
    from transformers import Qwen3NextConfig, Qwen3NextForCausalLM
    from transformers.models.qwen3_next import modeling_qwen3_next as modeling

    recall_init = _load("_recall_init_under_test", ROOT / "models" / "recall_init.py")
    config = _load("_config_under_test", ROOT / "models" / "config.py")
    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    eos = tok.token_to_id("<|endoftext|>")
    torch.manual_seed(0)
    model = Qwen3NextForCausalLM(Qwen3NextConfig(**config.config_kwargs(512, eos))).eval()
    params = recall_init.apply(model, tok, torch.Generator().manual_seed(0))
    # If fla was imported earlier in the session, transformers bound its Triton kernels at import, and
    # they would run under the Triton interpreter (minutes per forward): use the PyTorch ones.
    with pytest.MonkeyPatch.context() as mp:
        for name in ("torch_chunk_gated_delta_rule", "torch_recurrent_gated_delta_rule"):
            mp.setattr(modeling, name, inspect.unwrap(getattr(modeling, name)))
        yield model, tok, params


def _mc_accuracy(model, tok, family: str, n: int) -> float:
    path = ROOT / "eval" / "tasks" / "data" / f"{family}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()[:n]]
    hits = 0
    for r in rows:
        ids = tok.encode(r["prompt"]).ids
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
        scores = [logits[tok.encode(" " + c).ids[0]].item() for c in r["choices"]]
        hits += max(range(len(scores)), key=scores.__getitem__) == r["label"]
    return hits / n


def test_fresh_recall_init_answers_mqar_and_kvlast(fresh):
    model, tok, _ = fresh
    assert _mc_accuracy(model, tok, "mqar", 24) >= 0.9
    assert _mc_accuracy(model, tok, "kvlast", 12) >= 0.9


def test_recall_goes_through_the_gdn_layer(fresh):
    model, tok, params = fresh
    out = model.model.layers[params["layer"]].linear_attn.out_proj
    saved = out.weight.detach().clone()
    try:
        with torch.no_grad():
            out.weight.zero_()
        assert _mc_accuracy(model, tok, "mqar", 24) <= 0.6
    finally:
        with torch.no_grad():
            out.weight.copy_(saved)
