"""lm-eval ``custom_dataset`` hook: loads a committed jsonl file next to this module.

lm-eval resolves relative ``data_files`` against the process's working directory, not the YAML's
folder, so the YAMLs here name their file through ``dataset_kwargs: {data_file: NAME}`` and
``custom_dataset: !function loader.load``; lm-eval imports this file from the YAML's folder
and calls ``load(**metadata, **dataset_kwargs)``. Paths are therefore resolved relative to this
file and ``--include_path eval/tasks`` works from any directory, with nothing downloaded and no
``datasets`` cache involved (the rows are built in memory).

Kept free of deltainv imports on purpose: lm-eval loads it as a loose file.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"


def read_rows(data_file: str) -> list[dict]:
    """The rows of ``data/<data_file>``, one JSON object per line."""
    path = DATA_DIR / data_file
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load(data_file: str, **_ignored):
    """A ``datasets.DatasetDict`` with a single ``test`` split holding ``data/<data_file>``.

    Extra keyword arguments (lm-eval passes the task metadata, e.g. ``version``) are ignored.
    """
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(read_rows(data_file))})
