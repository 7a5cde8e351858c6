"""The offline lm-eval tasks: committed files are what the seeded generator writes, every item
is correct by construction, and lm-eval itself can load them from any working directory."""

from __future__ import annotations

import json
import random
import re

import pytest

from deltainv.eval.tasks import TASK_DIR, loader, make_tasks, synthetic

FORMS = ("mc", "gen")


@pytest.fixture(scope="module")
def expected():
    return make_tasks.expected_files()


def test_committed_files_are_exactly_what_the_generator_writes(expected):
    for rel, text in expected.items():
        path = TASK_DIR / rel
        assert path.exists(), f"{rel} missing: run python -m deltainv.eval.tasks.make_tasks"
        assert path.read_text(encoding="utf-8") == text, f"{rel} differs from the generator's output"
    # and nothing stale lies next to them
    on_disk = {p.relative_to(TASK_DIR).as_posix() for p in TASK_DIR.glob("*.yaml")}
    on_disk |= {p.relative_to(TASK_DIR).as_posix() for p in (TASK_DIR / "data").glob("*")}
    assert on_disk == set(expected)


def test_check_mode_detects_a_change(tmp_path, expected):
    for rel, text in expected.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    assert make_tasks.main(["--out", str(tmp_path), "--check"]) == 0
    path = tmp_path / "data" / "mqar.jsonl"
    text = path.read_text()
    assert '"label": 0' in text
    path.write_text(text.replace('"label": 0', '"label": 1', 1))
    assert make_tasks.main(["--out", str(tmp_path), "--check"]) == 1


def test_generator_is_seeded():
    a = [synthetic.make_item("kvlast", random.Random(5)) for _ in range(1)]
    b = [synthetic.make_item("kvlast", random.Random(5)) for _ in range(1)]
    c = [synthetic.make_item("kvlast", random.Random(6)) for _ in range(1)]
    assert a == b and a != c


def test_data_stays_small():
    total = sum(p.stat().st_size for p in (TASK_DIR / "data").glob("*.jsonl"))
    assert total < 5_000_000, total


def _pairs(line: str) -> list[tuple[str, str]]:
    words = line.split(":", 1)[1].split()
    return list(zip(words[::2], words[1::2]))


def _solve(task: str, prompt: str) -> str:
    """Answer an item from its prompt alone, independently of the generator's bookkeeping."""
    lines = prompt.split("\n")
    if task == "copy":
        return lines[0].split(":", 1)[1].strip()
    bound = dict(_pairs(lines[0]))  # dict keeps the *last* assignment of a key (kvlast)
    query = lines[-1]
    if task == "arith":
        a, b = re.fullmatch(r"\? (\w\w) \+ (\w\w) =", query).groups()
        return str(int(bound[a]) + int(bound[b]))
    return bound[re.fullmatch(r"\? (\w\w)", query).group(1)]


@pytest.mark.parametrize("task", synthetic.TASKS)
def test_every_item_is_correct_and_well_formed(task):
    rows = loader.read_rows(f"{task}.jsonl")
    assert len(rows) == make_tasks.N_ITEMS[task]
    assert len({r["prompt"] for r in rows}) == len(rows), "duplicate prompts"
    for r in rows:
        assert _solve(task, r["prompt"]) == r["answer"], r["id"]
        assert len(r["choices"]) == synthetic.N_CHOICES == len(set(r["choices"]))
        assert r["choices"][r["label"]] == r["answer"]
        assert not r["prompt"].endswith((" ", "\n"))
        # every choice has the gold's form, so no choice is excluded by its shape alone
        assert {len(c.split()) for c in r["choices"]} == {len(r["answer"].split())}
    # the gold's position is balanced, so always answering one slot stays near chance (25%)
    counts = [sum(r["label"] == i for r in rows) for i in range(synthetic.N_CHOICES)]
    assert max(counts) / len(rows) < 0.30, counts


def test_recall_contexts_span_several_chunks():
    # GDN kernels work on 64-token chunks; every key and value word is one token, so words
    # are a lower bound on tokens. mqar prompts run to 4 chunks, kvlast prompts 2-7 chunks.
    for task, median_floor, max_floor in (("mqar", 96, 192), ("kvlast", 256, 384)):
        n = sorted(r["n_words"] for r in loader.read_rows(f"{task}.jsonl"))
        assert n[len(n) // 2] >= median_floor and n[-1] >= max_floor, (task, n[len(n) // 2], n[-1])


def test_kvlast_distractors_are_stale_values():
    rows = loader.read_rows("kvlast.jsonl")
    with_stale = [r for r in rows if r["n_stale"] >= synthetic.N_CHOICES - 1]
    assert len(with_stale) > 0.8 * len(rows)
    for r in with_stale[:50]:
        key = r["prompt"].rsplit("? ", 1)[1]
        written = [v for k, v in _pairs(r["prompt"].split("\n")[0]) if k == key]
        assert set(r["choices"]) <= set(written)


def test_yaml_files_name_their_data_relative_to_themselves():
    for form in FORMS:
        for task in synthetic.TASKS:
            text = (TASK_DIR / f"deltainv_{task}_{form}.yaml").read_text()
            assert "custom_dataset: !function loader.load" in text
            assert f"data_file: {task}.jsonl" in text and "/" not in text.split("data_file:")[1].split("\n")[0]


def test_lm_eval_loads_every_task_from_another_directory(tmp_path, monkeypatch):
    lm_tasks = pytest.importorskip("lm_eval.tasks")
    monkeypatch.chdir(tmp_path)  # relative data paths would break here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tm = lm_tasks.TaskManager(include_path=str(TASK_DIR), include_defaults=False)
    names = [f"deltainv_{t}_{f}" for t in synthetic.TASKS for f in FORMS]
    loaded = lm_tasks.get_task_dict(names, tm)
    assert set(loaded) == set(names)
    for name, task in loaded.items():
        docs = list(task.test_docs())
        base = name.split("_")[1]
        assert len(docs) == make_tasks.N_ITEMS[base]
        doc = docs[0]
        assert task.doc_to_text(doc) == doc["prompt"]
        if name.endswith("_mc"):
            assert task.OUTPUT_TYPE == "multiple_choice"
            assert task.doc_to_choice(doc) == doc["choices"]
            assert task.doc_to_target(doc) == doc["label"]
        else:
            assert task.OUTPUT_TYPE == "generate_until"
            assert task.doc_to_target(doc) == doc["answer"]
            assert task.config.generation_kwargs["until"] == ["\n"]


def test_jsonl_rows_are_sorted_json(expected):
    line = expected["data/copy.jsonl"].splitlines()[0]
    assert line == json.dumps(json.loads(line), sort_keys=True, ensure_ascii=True)
