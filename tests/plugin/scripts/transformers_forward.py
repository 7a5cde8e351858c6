"""Forward + greedy generate of the tiny Qwen3-Next / Qwen3.5 / Kimi Linear models in one mode.

    python transformers_forward.py MODE OUT.pt

MODE:
  fallback  fla blocked (``sys.modules["fla"] = None``): transformers' pure PyTorch path, the reference
  plain     fla installed, deltainv not installed: the known CPU failure, recorded per model
  deltainv  ``deltainv.plugin.install()`` first (settings from DELTAINV_*), then transformers

Writes ``{kind: {"logits", "generated", "error"}, "status": deltainv status or None}`` to OUT.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

mode, out = sys.argv[1], sys.argv[2]
if mode == "fallback":
    sys.modules["fla"] = None
elif mode == "deltainv":
    import deltainv.plugin

    deltainv.plugin.install()
elif mode != "plain":
    raise SystemExit(f"unknown mode {mode!r}")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_models  # noqa: E402

torch.set_num_threads(2)
results: dict = {}
for kind in tiny_models.KINDS:
    model = tiny_models.build(kind)
    ids = tiny_models.prompt_ids()
    entry = {"logits": None, "generated": None, "error": None}
    try:
        with torch.no_grad():
            entry["logits"] = model(ids).logits
            gen = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
            entry["generated"] = gen[0, ids.shape[1]:].tolist()
    except Exception as exc:  # recorded: the "plain" mode is expected to fail
        entry["error"] = f"{type(exc).__name__}: {exc}"
    results[kind] = entry

if mode == "deltainv":
    import deltainv.plugin

    results["status"] = deltainv.plugin.status()
import transformers  # noqa: E402

results["transformers"] = transformers.__version__
torch.save(results, out)
