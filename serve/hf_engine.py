"""The embedded transformers engine behind ``deltainv serve --engine hf``.

One worker thread owns the model. Requests become jobs: each job is advanced one unit at a time
(its prefill, then one generated token), round-robin over up to ``max_active`` jobs, so a long
generation never starves a short one. Further jobs wait in a bounded FIFO; when it is full,
:meth:`HFEngine.submit` refuses with 429 and a ``Retry-After``, and a batch larger than the whole
queue is refused with 400 (a retry could never succeed). :meth:`HFEngine.cancel` (client gone)
frees a waiting job's slot at once and drops an active one at its next turn.
:meth:`HFEngine.drain` lets the jobs in flight finish; those still unfinished at its deadline end
with a 503 error event, so every client gets an answer.

Prompts are tokenized in a child process (:mod:`.tokenizer_process`: :meth:`prompt_ids`,
:meth:`chat_ids`, :meth:`tokenize`), and a prompt longer than the context is refused before its
ids become Python objects. Decoding (bounded by the context length) runs in request threads under
a lock; the worker thread checks stop strings with its own tokenizer copy, so neither waits.

Log-probabilities are the raw ``log_softmax`` of the unprocessed fp32 logits (no temperature, no
top-p), taken once per position, so a greedy token's value in ``token_logprobs`` and in
``top_logprobs`` is the same float, as lm-eval's ``local-completions`` requires. Prompts are
tokenized without special tokens (no BOS is added), and token-id prompts are used verbatim.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .openai_schema import APIError, Sampling
from .tokenizer_process import TokenizerProcess

log = logging.getLogger("deltainv.serve")


@dataclass
class TokenInfo:
    """One position of the output: token id, its logprob and the top alternatives (id, logprob)."""

    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None


@dataclass
class Job:
    """One prompt to complete. The worker thread posts events onto ``events`` through ``loop``."""

    index: int
    prompt_ids: list[int]
    sampling: Sampling
    top_logprobs: int | None  # None: no logprobs at all
    prompt_logprobs: bool
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.perf_counter)
    # worker state
    generated: list[int] = field(default_factory=list)
    cache: Any = None
    next_logits: torch.Tensor | None = None
    rng: torch.Generator | None = None

    def post(self, kind: str, payload: Any = None) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (self.index, kind, payload))


class HFEngine:
    """A transformers causal LM behind a fair, bounded, cancellable job queue."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        device: str = "cpu",
        max_model_len: int | None = None,
        max_active: int = 8,
        max_queue: int = 256,
        served_model_name: str | None = None,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = Path(model_path)
        self.model_name = served_model_name or self.path.name
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self._worker_tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self._tok_lock = threading.Lock()
        self._prompt_tokenizer = TokenizerProcess(str(self.path))
        self.model = AutoModelForCausalLM.from_pretrained(str(self.path), dtype=dtype).to(device).eval()
        self.device = device
        cfg = self.model.config
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        self.vocab_size = int(getattr(text_cfg, "vocab_size", len(self.tokenizer)))
        limit = int(getattr(text_cfg, "max_position_embeddings", 4096) or 4096)
        self.max_model_len = min(limit, max_model_len or limit)
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.max_active, self.max_queue = max_active, max_queue
        self._waiting: collections.deque[Job] = collections.deque()
        self._active: list[Job] = []
        self._cv = threading.Condition()
        self._draining = False
        self._stopped = False
        self._abort: APIError | None = None
        self.stats = collections.Counter()
        self._worker = threading.Thread(target=self._run, name="deltainv-hf-engine", daemon=True)
        self._worker.start()

    # -- public API (event-loop thread) -----------------------------------------------------------

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def draining(self) -> bool:
        return self._draining

    async def prompt_ids(self, text: str) -> list[int]:
        """A text prompt's ids (no special tokens); 400 if it alone exceeds the context."""
        return self._fits(await self._prompt_tokenizer.encode(text), "prompt")

    async def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat template's ids for ``messages`` (with the generation prompt); 400 if too long."""
        if not self.has_chat_template:
            raise APIError(400, f"model {self.model_name!r} has no chat template; use /v1/completions",
                           param="messages")
        return self._fits(await self._prompt_tokenizer.chat(messages), "messages")

    async def tokenize(self, text: str, add_special_tokens: bool) -> list[int]:
        """``/tokenize``: all ids, however many (the client asked for them)."""
        return (await self._prompt_tokenizer.encode(text, add_special_tokens)).tolist()

    def _fits(self, ids, param: str) -> list[int]:
        if len(ids) > self.max_model_len:
            raise self._too_long(len(ids), 0, param)
        return ids.tolist()

    def _too_long(self, prompt: int, wanted: int, param: str) -> APIError:
        return APIError(
            400,
            f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
            f"{prompt + wanted} tokens ({prompt} in the prompt, {wanted} in the completion).",
            param=param, code="context_length_exceeded")

    def decode(self, ids: list[int]) -> str:
        with self._tok_lock:
            return self.tokenizer.decode(ids, skip_special_tokens=True)

    def token_text(self, token: int) -> str:
        with self._tok_lock:
            return self.tokenizer.decode([token])

    def check_ids(self, ids: list[int], max_tokens: int | None) -> int:
        """Validate a prompt's token ids and length; return the number of tokens that may be generated."""
        if not ids:
            raise APIError(400, "the prompt is empty after tokenization", param="prompt")
        room = self.max_model_len - len(ids)
        if room >= 0:
            bad = [t for t in ids if t < 0 or t >= self.vocab_size]
            if bad:
                raise APIError(400, f"token ids out of range [0, {self.vocab_size}): {bad[:5]}", param="prompt")
        wanted = room if max_tokens is None else max_tokens
        if room < 0 or wanted > room:
            raise self._too_long(len(ids), wanted, "prompt" if room < 0 else "max_tokens")
        return wanted

    @property
    def load(self) -> tuple[int, int]:
        """(waiting, active) job counts."""
        with self._cv:
            return len(self._waiting), len(self._active)

    def submit(self, jobs: list[Job]) -> None:
        """Queue ``jobs`` (all or none), or refuse: 503 while draining, 400 for a batch larger than the
        whole queue (it could never fit), 429 when the queue is full now."""
        with self._cv:
            if self._draining or self._stopped:
                raise APIError(503, "the server is shutting down", type="server_error",
                               headers={"Retry-After": "5"})
            if len(jobs) > self.max_queue:
                self.stats["rejected"] += len(jobs)
                raise APIError(400, f"the request holds {len(jobs)} prompts but this server queues at most "
                                    f"{self.max_queue} (--max-queue); split the batch", param="prompt")
            if len(self._waiting) + len(jobs) > self.max_queue:
                self.stats["rejected"] += len(jobs)
                raise APIError(429, f"the request queue is full ({self.max_queue} waiting); retry later",
                               headers={"Retry-After": "1"})
            self._waiting.extend(jobs)
            self._cv.notify()

    def cancel(self, jobs: list[Job]) -> None:
        """The client left: waiting jobs leave the queue now (their slots free at once); active jobs
        are dropped by the worker at their next turn. Finished jobs are unaffected."""
        with self._cv:
            for job in jobs:
                if job.cancelled.is_set():
                    continue
                job.cancelled.set()
                try:
                    self._waiting.remove(job)
                except ValueError:
                    continue  # active or finished: the worker sees the flag
                self.stats["cancelled"] += 1

    def drain(self, timeout: float) -> bool:
        """Refuse new jobs, wait up to ``timeout`` s for the queued and active ones, stop the worker.

        Jobs still unfinished at the deadline get an ``error`` event carrying a 503, so their
        handlers answer (JSON 503, or an error event and ``[DONE]`` on a stream) instead of being
        cut off. Idempotent: a second call waits for the first one's worker to stop."""
        with self._cv:
            self._draining = True
            self._cv.notify()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            waiting, active = self.load
            if not waiting and not active:
                break
            time.sleep(0.05)
        with self._cv:
            if any((self._waiting, self._active)) and self._abort is None:
                self._abort = APIError(503, f"the server shut down before this request finished (drain timeout "
                                            f"{timeout:g} s)", type="server_error", code="drain_timeout")
            self._stopped = True
            self._cv.notify()
        self._worker.join(timeout=max(0.0, deadline - time.monotonic()) + 5.0)
        self._prompt_tokenizer.close()
        return self._abort is None

    # -- worker thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cv:
                    while not self._active and not self._waiting and not self._stopped:
                        self._cv.wait()
                    if self._abort is not None:
                        for job in [*self._active, *self._waiting]:
                            self.stats["aborted"] += 1
                            job.post("error", self._abort)
                        self._active.clear()
                        self._waiting.clear()
                        return
                    if self._stopped and not self._active and not self._waiting:
                        return
                    while self._waiting and len(self._active) < self.max_active:
                        self._active.append(self._waiting.popleft())
                    active = list(self._active)
                for job in active:
                    if self._abort is not None:
                        break  # the drain deadline passed: answer everyone at the top of the loop
                    done = True
                    if job.cancelled.is_set():
                        self.stats["cancelled"] += 1
                        job.post("done", "cancelled")
                    else:
                        try:
                            done = self._step(job)
                        except Exception as e:  # the job fails, the server lives on
                            log.exception("job failed")
                            self.stats["failed"] += 1
                            job.post("error", e)
                    if done:
                        job.cache = job.next_logits = None
                        with self._cv:
                            self._active.remove(job)

    def _forward(self, ids: list[int], cache) -> tuple[torch.Tensor, Any]:
        x = torch.tensor([ids], device=self.device)
        out = self.model(input_ids=x, past_key_values=cache, use_cache=True)
        return out.logits[0].float(), out.past_key_values

    def _top(self, lp: torch.Tensor, k: int | None) -> list[tuple[int, float]] | None:
        if not k:
            return [] if k == 0 else None
        vals, idx = torch.topk(lp, k)
        return list(zip(idx.tolist(), vals.tolist()))

    def _step(self, job: Job) -> bool:
        """Advance ``job`` by one unit; return whether it is finished."""
        s = job.sampling
        if job.cache is None and job.next_logits is None:
            logits, job.cache = self._forward(job.prompt_ids, None)
            if job.prompt_logprobs:
                lp = torch.log_softmax(logits[:-1], dim=-1)
                ids = torch.tensor(job.prompt_ids[1:], device=lp.device)
                chosen = lp.gather(1, ids[:, None])[:, 0].tolist()
                infos = [TokenInfo(job.prompt_ids[0])]
                for j, t in enumerate(job.prompt_ids[1:]):
                    infos.append(TokenInfo(t, chosen[j], self._top(lp[j], job.top_logprobs)))
                job.post("prompt", infos)
            job.next_logits = logits[-1]
            job.rng = torch.Generator(device="cpu").manual_seed(
                s.seed if s.seed is not None else random.SystemRandom().randrange(2**63))
            self.stats["prompt_tokens"] += len(job.prompt_ids)
            if s.max_tokens == 0:
                job.post("done", "length")
                return True
            return False
        lp = torch.log_softmax(job.next_logits, dim=-1)
        token = self._sample(job.next_logits, s, job.rng) if s.temperature > 0 else int(torch.argmax(lp))
        if token in self.eos_ids and not s.ignore_eos:
            job.post("done", "stop")
            return True
        info = TokenInfo(token)
        if job.top_logprobs is not None:
            info.logprob = float(lp[token])
            info.top = self._top(lp, job.top_logprobs)
        job.generated.append(token)
        self.stats["completion_tokens"] += 1
        job.post("token", info)
        if s.stop and any(stop in self._worker_tokenizer.decode(job.generated, skip_special_tokens=True)
                          for stop in s.stop):
            job.post("done", "stop")
            return True
        if len(job.generated) >= s.max_tokens:
            job.post("done", "length")
            return True
        logits, job.cache = self._forward([token], job.cache)
        job.next_logits = logits[-1]
        return False

    @staticmethod
    def _sample(logits: torch.Tensor, s: Sampling, rng: torch.Generator) -> int:
        probs = torch.softmax(logits.cpu() / s.temperature, dim=-1)
        if s.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, 0) - sorted_p < s.top_p  # always keeps the top token
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
        return int(torch.multinomial(probs, 1, generator=rng))
