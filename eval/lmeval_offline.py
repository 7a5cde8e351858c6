"""Run lm-eval's command line fully offline on a CPU, with fla blocked.

    .venv/bin/python -m deltainv.eval.lmeval_offline --model hf \\
        --model_args pretrained=models/qwen3_next_tiny,dtype=float32 \\
        --tasks deltainv_mqar_mc --include_path eval/tasks --device cpu --batch_size 16

Same arguments as ``lm_eval``. Two things differ from calling ``lm_eval`` directly:

* ``fla`` is blocked before transformers is imported: with fla installed (it is, in the default
  venv) transformers binds fla's Triton kernels for Qwen3Next / Qwen3.5 / Kimi Linear at import
  time, and on a CPU they fail with ``0 active drivers``. Blocked, transformers uses its
  pure-PyTorch GDN path.
* ``HF_HUB_OFFLINE=1`` and ``HF_DATASETS_OFFLINE=1`` are set unless already set, so nothing can
  reach a hub (the tasks in ``eval/tasks`` read committed jsonl files).
"""

from __future__ import annotations

import os
import sys

from deltainv.plugin.inprocess import block_fla


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    block_fla()
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    result = cli_evaluate()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
