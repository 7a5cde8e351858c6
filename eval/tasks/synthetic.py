"""Seeded synthetic tasks where the precision of a delta-rule state decides the answer.

Every task is rendered as plain text over a tiny closed vocabulary, so a small model trained on
the CPU can learn it and a tokenizer can map each word to exactly one token:

* keys: 100 consonant-vowel syllables (``ba`` .. ``zu``);
* values: 100 two-digit numbers (``00`` .. ``99``);
* digits ``0`` .. ``9`` for arithmetic operands, sums ``0`` .. ``18``.

A task *instance* is one full document (the context followed by every query with its answer);
the training script trains on instances and masks the loss to the answer spans. An evaluation
*item* cuts an instance after one query's key: the prompt is everything before the answer, and
the answer is one value (or, for ``copy``, the copied words).

Tasks (each exercises the recurrent state across several 64-token chunks):

``mqar``   multi-query associative recall: ``kv: k1 v1 k2 v2 ...`` then ``? k v`` lines.
``kvlast`` key-value lookup with overwrites over a long context: few keys, many updates, the
           answer is a key's *latest* value; stale values are the multiple-choice distractors.
``copy``   copy a list of distinct words after ``=``.
``arith``  sum of two single-digit variables bound in the context: ``? a + b = s``.

All randomness comes from the ``random.Random`` passed in, so a seed fixes every file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

CONSONANTS = "bcdfghjklmnprstvwxyz"
VOWELS = "aeiou"
#: 100 key words, each one token.
KEYS = tuple(c + v for c in CONSONANTS for v in VOWELS)
#: 100 two-digit value words, each one token.
VALUES = tuple(f"{i:02d}" for i in range(100))
#: Operands of ``arith`` and their sums.
DIGITS = tuple(str(i) for i in range(10))
SUMS = tuple(str(i) for i in range(19))

TASKS = ("mqar", "kvlast", "copy", "arith")
#: Documents used for training only (no evaluation file).
TRAIN_ONLY = ("recall_stream",)

#: Number of answer choices of every multiple-choice item (chance = 1 / N_CHOICES = 25%).
N_CHOICES = 4


@dataclass
class Instance:
    """One rendered document.

    ``text`` is the whole document; ``targets`` are ``(start, end)`` character spans of the
    answers (what the model is trained to predict); ``queries`` holds, per query, the character
    offset where its answer starts (the prompt of an item cut there is ``text[:offset]``), the
    answer string, and the distractor pool for multiple choice.
    """

    task: str
    text: str
    targets: list[tuple[int, int]] = field(default_factory=list)
    queries: list[dict] = field(default_factory=list)


class _Writer:
    """Appends text pieces and remembers where answers start and end."""

    def __init__(self, task: str):
        self.inst = Instance(task=task, text="")
        self.parts: list[str] = []
        self.pos = 0

    def put(self, s: str) -> None:
        self.parts.append(s)
        self.pos += len(s)

    def answer(self, s: str, answer: str, pool: list[str], **meta) -> None:
        """Write ``s`` (the answer with its leading space) and record it as a query."""
        self.inst.queries.append({"offset": self.pos, "answer": answer, "pool": pool, **meta})
        self.inst.targets.append((self.pos, self.pos + len(s)))
        self.put(s)

    def done(self) -> Instance:
        self.inst.text = "".join(self.parts)
        return self.inst


def make_mqar(rng: random.Random, n_pairs: int, n_queries: int) -> Instance:
    """``kv:`` followed by ``n_pairs`` distinct keys with random values, then ``n_queries`` lines
    ``? key value`` asking distinct keys in random order. Distractors: other values of the context."""
    keys = rng.sample(KEYS, n_pairs)
    values = [rng.choice(VALUES) for _ in keys]
    w = _Writer("mqar")
    w.put("kv:" + "".join(f" {k} {v}" for k, v in zip(keys, values)) + "\n")
    for i in rng.sample(range(n_pairs), n_queries):
        w.put(f"? {keys[i]}")
        w.answer(f" {values[i]}", values[i], pool=sorted(set(values) - {values[i]}), distance=0)
        w.put("\n")
    return w.done()


def make_recall_stream(rng: random.Random, n_keys: int, n_pairs: int) -> Instance:
    """Training-only recall document with dense supervision: ``kv:`` then ``n_pairs`` pairs over
    ``n_keys`` keys, each key always with the same value, then one ``? key value`` line per key.
    Every value of a key seen before is a target (it is recalled, not guessed), so a document
    teaches many lookups at once; ``mqar`` gives one target per query line only."""
    keys = rng.sample(KEYS, n_keys)
    value_of = {k: rng.choice(VALUES) for k in keys}
    order = keys + [rng.choice(keys) for _ in range(n_pairs - n_keys)]
    rng.shuffle(order)
    w = _Writer("recall_stream")
    w.put("kv:")
    seen = set()
    for k in order:
        w.put(f" {k}")
        if k in seen:
            w.inst.targets.append((w.pos, w.pos + 3))
        w.put(f" {value_of[k]}")
        seen.add(k)
    w.put("\n")
    for k in rng.sample(keys, n_keys):
        w.put(f"? {k}")
        w.answer(f" {value_of[k]}", value_of[k], pool=[])
        w.put("\n")
    return w.done()


def make_kvlast(rng: random.Random, n_keys: int, n_updates: int) -> Instance:
    """``set:`` followed by ``n_updates`` assignments ``key value`` over ``n_keys`` keys (each key
    at least once), then one ``? key value`` line per key with its *last* assigned value.
    Distractors: the key's earlier (overwritten) values first, then other values of the context."""
    keys = rng.sample(KEYS, n_keys)
    order = keys + [rng.choice(keys) for _ in range(n_updates - n_keys)]
    rng.shuffle(order)
    assigned = [(k, rng.choice(VALUES)) for k in order]
    history: dict[str, list[str]] = {k: [] for k in keys}
    for k, v in assigned:
        history[k].append(v)
    w = _Writer("kvlast")
    w.put("set:" + "".join(f" {k} {v}" for k, v in assigned) + "\n")
    all_values = {v for _, v in assigned}
    for k in rng.sample(keys, n_keys):
        last = history[k][-1]
        stale = [v for v in dict.fromkeys(reversed(history[k][:-1])) if v != last]
        others = sorted(all_values - set(stale) - {last})
        w.put(f"? {k}")
        w.answer(f" {last}", last, pool=stale + others, n_stale=len(stale), n_writes=len(history[k]))
        w.put("\n")
    return w.done()


def make_copy(rng: random.Random, length: int) -> Instance:
    """``copy:`` followed by ``length`` distinct key words, a newline, ``=`` and the same words."""
    words = rng.sample(KEYS, length)
    w = _Writer("copy")
    w.put("copy:" + "".join(f" {x}" for x in words) + "\n=")
    seq = " ".join(words)
    w.answer(" " + seq, seq, pool=[], words=words)
    w.put("\n")
    return w.done()


def make_arith(rng: random.Random, n_vars: int, n_queries: int) -> Instance:
    """``vars:`` binding ``n_vars`` distinct keys to digits, then ``? a + b = s`` lines with
    ``s = value(a) + value(b)`` (a != b). Distractors: the other sums 0..18, nearest first."""
    keys = rng.sample(KEYS, n_vars)
    values = [rng.choice(DIGITS) for _ in keys]
    w = _Writer("arith")
    w.put("vars:" + "".join(f" {k} {v}" for k, v in zip(keys, values)) + "\n")
    for _ in range(n_queries):
        i, j = rng.sample(range(n_vars), 2)
        s = str(int(values[i]) + int(values[j]))
        w.put(f"? {keys[i]} + {keys[j]} =")
        near = sorted((x for x in SUMS if x != s), key=lambda x: (abs(int(x) - int(s)), int(x)))
        w.answer(f" {s}", s, pool=near)
        w.put("\n")
    return w.done()


#: Size ranges (inclusive) used for both training and evaluation, per task.
SIZES = {
    "mqar": {"n_pairs": (16, 64)},
    "kvlast": {"n_keys": (4, 8), "n_updates": (64, 224)},
    "copy": {"length": (8, 40)},
    "arith": {"n_vars": (8, 24)},
    "recall_stream": {"n_keys": (8, 48)},
}


def sample_instance(task: str, rng: random.Random, sizes: dict | None = None) -> Instance:
    """One instance of ``task`` with sizes drawn uniformly from ``sizes`` (default ``SIZES``)."""
    sz = (sizes or SIZES)[task]
    if task == "mqar":
        n = rng.randint(*sz["n_pairs"])
        return make_mqar(rng, n, max(1, n // 2))
    if task == "kvlast":
        return make_kvlast(rng, rng.randint(*sz["n_keys"]), rng.randint(*sz["n_updates"]))
    if task == "copy":
        return make_copy(rng, rng.randint(*sz["length"]))
    if task == "arith":
        n = rng.randint(*sz["n_vars"])
        return make_arith(rng, n, max(1, n // 2))
    if task == "recall_stream":
        n = rng.randint(*sz["n_keys"])
        return make_recall_stream(rng, n, 3 * n)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def _choices_for(task: str, query: dict, rng: random.Random) -> list[str]:
    """Gold plus ``N_CHOICES - 1`` distractors (same form as the gold), in random order."""
    gold = query["answer"]
    if task == "copy":
        words = query["words"]
        distractors = []
        # 1) two adjacent words swapped; 2) one word replaced by a word absent from the list;
        # 3) one word replaced by another word of the list (a repeat). All keep the length.
        i = rng.randrange(len(words) - 1)
        swapped = words[:i] + [words[i + 1], words[i]] + words[i + 2:]
        distractors.append(swapped)
        j = rng.randrange(len(words))
        outside = rng.choice([k for k in KEYS if k not in words])
        distractors.append(words[:j] + [outside] + words[j + 1:])
        a, b = rng.sample(range(len(words)), 2)
        distractors.append(words[:a] + [words[b]] + words[a + 1:])
        options = [gold] + [" ".join(d) for d in distractors]
    elif task == "kvlast":
        # Stale values of the same key are the hardest distractors: keep all of them we can.
        n_stale = min(query["n_stale"], N_CHOICES - 1)
        stale = query["pool"][:n_stale]
        rest = rng.sample(query["pool"][query["n_stale"]:], N_CHOICES - 1 - n_stale)
        options = [gold] + stale + rest
    elif task == "arith":
        options = [gold] + query["pool"][:N_CHOICES - 1]
    else:
        options = [gold] + rng.sample(query["pool"], N_CHOICES - 1)
    assert len(set(options)) == N_CHOICES, options
    rng.shuffle(options)
    return options


def make_item(task: str, rng: random.Random) -> dict:
    """One evaluation item: an instance cut after a random query's key.

    Returns a JSON-ready dict: ``prompt`` (text up to, not including, the answer's leading
    space), ``answer`` (gold string, no leading space), ``choices`` (``N_CHOICES`` strings, gold
    among them), ``label`` (index of the gold in ``choices``), ``n_tokens_hint`` (words in the
    prompt, a proxy for length) and task-specific metadata.
    """
    while True:
        inst = sample_instance(task, rng)
        # mqar needs N_CHOICES - 1 distinct other values in the context; retry the rare misses.
        q_index = rng.randrange(len(inst.queries))
        query = inst.queries[q_index]
        if task in ("mqar", "kvlast") and len(query["pool"]) < N_CHOICES - 1:
            continue
        break
    choices = _choices_for(task, query, rng)
    prompt = inst.text[:query["offset"]]
    item = {
        "prompt": prompt,
        "answer": query["answer"],
        "choices": choices,
        "label": choices.index(query["answer"]),
        "query_index": q_index,
        "n_words": len(prompt.split()),
    }
    for key in ("n_stale", "n_writes"):
        if key in query:
            item[key] = query[key]
    return item
