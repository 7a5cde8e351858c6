"""Prompt tokenization in a child process, so a multi-MB prompt never stalls the server's event loop.

A thread is not enough: the tokenizer's Rust core releases the GIL, but turning a million token
ids into Python integers does not (about 400 ms for 4 MB of text on this machine's tiny model),
and every coroutine waits for that. The child returns ids as packed 32-bit integers: the server
learns a prompt's length from the byte count and refuses one that cannot fit in the context
without ever building the Python list.

Chat templates render in the child too (a chat message can be as large as a prompt).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from array import array
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .openai_schema import APIError

_TOKENIZER: Any = None


def _load(path: str) -> None:
    global _TOKENIZER
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoTokenizer

    _TOKENIZER = AutoTokenizer.from_pretrained(path)


def _pack(ids) -> bytes:
    return array("I", ids).tobytes()


def _encode(text: str, add_special_tokens: bool) -> bytes:
    return _pack(_TOKENIZER(text, add_special_tokens=add_special_tokens)["input_ids"])


def _chat(messages: list[dict[str, str]]) -> bytes:
    out = _TOKENIZER.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return _pack(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


class TokenizerProcess:
    """One child process holding the model's tokenizer; ``await encode(...)`` returns packed ids."""

    def __init__(self, path: str, workers: int = 1):
        ctx = multiprocessing.get_context("spawn")  # never fork a process that holds threads and torch
        self._pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_load, initargs=(path,))
        self._pool.submit(_encode, "", False).result()  # load now: fail at start, not on the first request

    async def _call(self, fn, *args, param: str) -> array:
        try:
            packed = await asyncio.wrap_future(self._pool.submit(fn, *args))
        except BrokenProcessPool:
            raise RuntimeError("the tokenizer process died") from None
        except Exception as exc:  # the tokenizer or the chat template refused this input
            raise APIError(400, f"the tokenizer rejected the input: {type(exc).__name__}: {str(exc)[:300]}",
                           param=param) from None
        ids = array("I")
        ids.frombytes(packed)
        return ids

    async def encode(self, text: str, add_special_tokens: bool = False) -> array:
        return await self._call(_encode, text, add_special_tokens, param="prompt")

    async def chat(self, messages: list[dict[str, str]]) -> array:
        return await self._call(_chat, messages, param="messages")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
