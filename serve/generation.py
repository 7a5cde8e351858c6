"""What the completion routes share: reading the body off the event loop, building and running jobs,
and formatting logprobs and server-sent events.

Everything that costs CPU in proportion to the request (JSON parsing and checks, tokenization,
decoding, logprob formatting) runs in Starlette's thread pool (:func:`off_loop`), so a request of
several MB never stalls ``/health`` or other clients.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from .errors import APIError, ClientGone
from .hf_engine import HFEngine, Job, TokenInfo
from .metrics import Metrics
from .openai_schema import parse_json

#: How often a non-streaming request checks that its client is still there.
DISCONNECT_POLL_S = 0.1


async def off_loop(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` in the thread pool (CPU work must not block the event loop)."""
    return await run_in_threadpool(fn, *args, **kwargs)


async def read_json(request: Request) -> Any:
    """The request's JSON body, validated by :func:`~.openai_schema.parse_json` off the loop."""
    return await off_loop(parse_json, await request.body())


def engine_of(request: Request) -> HFEngine:
    return request.app.state.engine


def metrics_of(request: Request) -> Metrics:
    return request.app.state.metrics


def check_model(engine: HFEngine, model: str) -> None:
    if model != engine.model_name:
        raise APIError(404, f"The model '{model}' does not exist (this server serves '{engine.model_name}')",
                       param="model", code="model_not_found", type="invalid_request_error")


def make_jobs(engine: HFEngine, loop: asyncio.AbstractEventLoop, prompts: list[list[int]], sampling,
              top_logprobs: int | None, prompt_logprobs: bool) -> list[Job]:
    """One job per prompt, all posting onto one queue. Checks the prompts (call off the loop)."""
    queue: asyncio.Queue = asyncio.Queue()
    jobs = []
    for i, ids in enumerate(prompts):
        room = engine.check_ids(ids, sampling.max_tokens)
        s = sampling if sampling.max_tokens is not None else type(sampling)(**{**sampling.__dict__, "max_tokens": room})
        jobs.append(Job(i, ids, s, top_logprobs, prompt_logprobs, loop, events=queue))
    return jobs


async def events(engine: HFEngine, metrics: Metrics, jobs: list[Job], request: Request,
                 poll: bool = True) -> AsyncIterator[tuple[int, str, Any]]:
    """Events of all jobs until each is done; cancels the rest when the consumer stops or the client goes.

    Non-streaming handlers ``poll`` for a disconnect (and raise :class:`ClientGone`); a streaming
    response is cancelled by Starlette itself when its client leaves (polling there would steal its
    receive channel). Either way the ``finally`` frees the jobs' queue slots at once.
    """
    queue, open_jobs, t0, first = jobs[0].events, len(jobs), jobs[0].created, True
    checked = time.perf_counter()
    try:
        while open_jobs:
            # Poll on a clock, not only when the queue is idle: tokens can arrive faster than any
            # idle timeout, and a client that left must stop its generation all the same.
            if poll and time.perf_counter() - checked > DISCONNECT_POLL_S:
                checked = time.perf_counter()
                if await request.is_disconnected():
                    raise ClientGone
            try:
                index, kind, payload = await asyncio.wait_for(queue.get(), timeout=DISCONNECT_POLL_S if poll else None)
            except TimeoutError:
                continue
            if kind == "token" and first:
                metrics.ttft.observe(time.perf_counter() - t0)
                first = False
            if kind in ("done", "error"):
                open_jobs -= 1
            yield index, kind, payload
    finally:
        engine.cancel(jobs)  # no-op for finished jobs; frees queued slots, stops active ones


def sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


DONE = b"data: [DONE]\n\n"


def error_event(payload: Any) -> bytes:
    """The SSE event for a job that ended in error: its own 4xx/503 body, else a generic server error."""
    if isinstance(payload, APIError):
        return sse(payload.body())
    return sse({"error": {"message": "generation failed", "type": "server_error", "param": None, "code": None}})


def raise_job_error(payload: Any) -> None:
    """A non-streaming request whose job ended in error: its APIError (e.g. the drain's 503), or a 500."""
    if isinstance(payload, BaseException):
        raise payload
    raise RuntimeError(f"job failed: {payload!r}")


def trim_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def legacy_logprobs(engine: HFEngine, infos: list[TokenInfo], start_offset: int = 0) -> dict:
    """``/v1/completions`` logprobs: tokens, token_logprobs, top_logprobs (string -> value), text_offset."""
    tokens, lps, tops, offsets, pos = [], [], [], [], start_offset
    for info in infos:
        s = engine.token_text(info.token)
        tokens.append(s)
        lps.append(info.logprob)
        if info.top is None:
            tops.append(None)
        else:
            top: dict[str, float] = {}
            for t, lp in info.top:  # highest first: a string shared by two ids keeps the larger value
                top.setdefault(engine.token_text(t), lp)
            tops.append(top)
        offsets.append(pos)
        pos += len(s)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def chat_logprobs(engine: HFEngine, infos: list[TokenInfo]) -> dict:
    def entry(t, lp):
        s = engine.token_text(t)
        return {"token": s, "logprob": lp, "bytes": list(s.encode())}

    return {"content": [{**entry(i.token, i.logprob), "top_logprobs": [entry(t, lp) for t, lp in (i.top or [])]}
                        for i in infos]}


class Detokenizer:
    """Incremental text of one generation for streaming: releases text only when it is complete
    UTF-8 and cannot be the start of a stop sequence."""

    def __init__(self, engine: HFEngine, stops: list[str]):
        self.engine, self.stops = engine, stops
        self.holdback = max((len(s) for s in stops), default=1) - 1
        self.ids: list[int] = []
        self.sent = 0

    def push(self, token: int) -> str:
        """Add a token; return the newly releasable text (maybe empty). Call off the loop."""
        self.ids.append(token)
        text = self.engine.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""  # an incomplete UTF-8 sequence: wait for the next token
        safe = text[: max(self.sent, len(text) - self.holdback)] if self.stops else text
        if len(safe) <= self.sent:
            return ""
        out, self.sent = safe[self.sent:], len(safe)
        return out

    def finish(self, reason: str) -> tuple[str, str]:
        """The rest of the text (cut at a stop sequence) and the finish reason. Call off the loop."""
        text, stopped = trim_at_stop(self.engine.decode(self.ids), self.stops)
        rest = text[self.sent:] if len(text) > self.sent else ""
        return rest, "stop" if stopped or reason == "stop" else "length"
