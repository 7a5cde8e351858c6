"""``POST /v1/completions``: text or token-id prompts, batches, echo + logprobs, streaming (SSE)."""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ..generation import (DONE, Detokenizer, check_model, engine_of, error_event, events, legacy_logprobs,
                          make_jobs, metrics_of, off_loop, raise_job_error, read_json, sse, trim_at_stop)
from ..hf_engine import HFEngine, Job, TokenInfo
from ..metrics import Metrics
from ..openai_schema import CompletionRequest, parse_completion

router = APIRouter()


async def _prepare(engine: HFEngine, req: CompletionRequest) -> tuple[list[Job], list[str]]:
    """Tokenize (in the tokenizer process) and check the prompts; the echoed prompt texts."""
    ids = [p if isinstance(p, list) else await engine.prompt_ids(p) for p in req.prompts]
    return await off_loop(_jobs, engine, asyncio.get_running_loop(), req, ids)


def _jobs(engine: HFEngine, loop, req: CompletionRequest, ids: list[list[int]]) -> tuple[list[Job], list[str]]:
    jobs = make_jobs(engine, loop, ids, req.sampling, req.logprobs, req.echo and req.logprobs is not None)
    texts = [p if isinstance(p, str) else engine.decode(p) for p in req.prompts] if req.echo else []
    return jobs, texts


@router.post("/v1/completions")
async def completions(request: Request):
    engine, metrics = engine_of(request), metrics_of(request)
    req = parse_completion(await read_json(request))
    check_model(engine, req.model)
    jobs, prompt_texts = await _prepare(engine, req)
    engine.submit(jobs)
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    if req.sampling.stream:
        return StreamingResponse(_stream(engine, metrics, jobs, request, rid, created, prompt_texts, req),
                                 media_type="text/event-stream")
    prompt_infos: dict[int, list[TokenInfo]] = {}
    gen: dict[int, list[TokenInfo]] = {j.index: [] for j in jobs}
    finish: dict[int, str] = {}
    async for index, kind, payload in events(engine, metrics, jobs, request):
        if kind == "prompt":
            prompt_infos[index] = payload
        elif kind == "token":
            gen[index].append(payload)
        elif kind == "done":
            finish[index] = payload
        elif kind == "error":
            raise_job_error(payload)
    body = await off_loop(_body, engine, req, jobs, prompt_texts, prompt_infos, gen, finish, rid, created)
    metrics.tokens.labels("prompt").inc(body["usage"]["prompt_tokens"])
    metrics.tokens.labels("completion").inc(body["usage"]["completion_tokens"])
    return body


def _body(engine, req, jobs, prompt_texts, prompt_infos, gen, finish, rid, created) -> dict:
    choices, completion_tokens = [], 0
    for job in jobs:
        i = job.index
        text, stopped = trim_at_stop(engine.decode([t.token for t in gen[i]]), req.sampling.stop)
        completion_tokens += len(gen[i])
        lp = None
        if req.logprobs is not None:
            lp = legacy_logprobs(engine, (prompt_infos.get(i, []) if req.echo else []) + gen[i])
        choices.append({"index": i, "text": (prompt_texts[i] if req.echo else "") + text, "logprobs": lp,
                        "finish_reason": "stop" if stopped or finish[i] == "stop" else "length"})
    prompt_tokens = sum(len(j.prompt_ids) for j in jobs)
    return {"id": rid, "object": "text_completion", "created": created, "model": engine.model_name,
            "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                          "total_tokens": prompt_tokens + completion_tokens}}


async def _stream(engine: HFEngine, metrics: Metrics, jobs: list[Job], request: Request, rid: str, created: int,
                  prompt_texts: list[str], req: CompletionRequest):
    detok = {j.index: Detokenizer(engine, req.sampling.stop) for j in jobs}
    pending_lp: dict[int, list[TokenInfo]] = {j.index: [] for j in jobs}

    def chunk(i, text, infos, reason=None):
        lp = legacy_logprobs(engine, infos) if req.logprobs is not None and infos else None
        return sse({"id": rid, "object": "text_completion", "created": created, "model": engine.model_name,
                    "choices": [{"index": i, "text": text, "logprobs": lp, "finish_reason": reason}]})

    completion_tokens = 0
    if req.echo:
        for job in jobs:
            yield await off_loop(chunk, job.index, prompt_texts[job.index], [])
    async for i, kind, payload in events(engine, metrics, jobs, request, poll=False):
        if kind == "prompt" and req.echo:
            yield await off_loop(chunk, i, "", payload)
        elif kind == "token":
            pending_lp[i].append(payload)
            completion_tokens += 1
            text = await off_loop(detok[i].push, payload.token)
            if text:
                yield await off_loop(chunk, i, text, pending_lp[i])
                pending_lp[i] = []
        elif kind == "done":
            rest, reason = await off_loop(detok[i].finish, payload)
            yield await off_loop(chunk, i, rest, pending_lp[i], reason)
        elif kind == "error":
            yield error_event(payload)
    prompt_tokens = sum(len(j.prompt_ids) for j in jobs)
    metrics.tokens.labels("prompt").inc(prompt_tokens)
    metrics.tokens.labels("completion").inc(completion_tokens)
    if req.sampling.include_usage:
        yield sse({"id": rid, "object": "text_completion", "created": created, "model": engine.model_name,
                   "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                            "total_tokens": prompt_tokens + completion_tokens}})
    yield DONE
