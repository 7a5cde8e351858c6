"""Offline lm-eval tasks (YAML + committed jsonl) and the seeded generators that produce them.

``deltainv.eval.tasks.TASK_DIR`` is the folder to pass to lm-eval as ``--include_path``.
"""

from pathlib import Path

#: The folder holding the task YAMLs (lm-eval ``--include_path``) and ``data/*.jsonl``.
TASK_DIR = Path(__file__).resolve().parent
