"""``POST /v1/chat/completions``: the model's chat template, logprobs, streaming (SSE)."""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ..generation import (DONE, Detokenizer, chat_logprobs, check_model, engine_of, error_event, events, make_jobs,
                          metrics_of, off_loop, raise_job_error, read_json, sse, trim_at_stop)
from ..hf_engine import HFEngine, Job, TokenInfo
from ..metrics import Metrics
from ..openai_schema import ChatRequest, parse_chat

router = APIRouter()


async def _prepare(engine: HFEngine, req: ChatRequest) -> list[Job]:
    ids = await engine.chat_ids(req.messages)
    return await off_loop(make_jobs, engine, asyncio.get_running_loop(), [ids], req.sampling,
                          req.top_logprobs if req.logprobs else None, False)


@router.post("/v1/chat/completions")
async def chat(request: Request):
    engine, metrics = engine_of(request), metrics_of(request)
    req = parse_chat(await read_json(request))
    check_model(engine, req.model)
    jobs = await _prepare(engine, req)
    engine.submit(jobs)
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if req.sampling.stream:
        return StreamingResponse(_stream(engine, metrics, jobs, request, rid, created, req),
                                 media_type="text/event-stream")
    gen: list[TokenInfo] = []
    finish = "length"
    async for _, kind, payload in events(engine, metrics, jobs, request):
        if kind == "token":
            gen.append(payload)
        elif kind == "done":
            finish = payload
        elif kind == "error":
            raise_job_error(payload)
    body = await off_loop(_body, engine, req, jobs[0], gen, finish, rid, created)
    metrics.tokens.labels("prompt").inc(len(jobs[0].prompt_ids))
    metrics.tokens.labels("completion").inc(len(gen))
    return body


def _body(engine, req, job, gen, finish, rid, created) -> dict:
    text, stopped = trim_at_stop(engine.decode([t.token for t in gen]), req.sampling.stop)
    p = len(job.prompt_ids)
    return {"id": rid, "object": "chat.completion", "created": created, "model": engine.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": chat_logprobs(engine, gen) if req.logprobs else None,
                         "finish_reason": "stop" if stopped or finish == "stop" else "length"}],
            "usage": {"prompt_tokens": p, "completion_tokens": len(gen), "total_tokens": p + len(gen)}}


async def _stream(engine: HFEngine, metrics: Metrics, jobs: list[Job], request: Request, rid: str, created: int,
                  req: ChatRequest):
    detok = Detokenizer(engine, req.sampling.stop)
    pending: list[TokenInfo] = []
    generated = 0

    def chunk(delta, infos, reason=None):
        lp = chat_logprobs(engine, infos) if req.logprobs and infos else None
        return sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": engine.model_name,
                    "choices": [{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": reason}]})

    yield chunk({"role": "assistant", "content": ""}, [])
    async for _, kind, payload in events(engine, metrics, jobs, request, poll=False):
        if kind == "token":
            pending.append(payload)
            generated += 1
            text = await off_loop(detok.push, payload.token)
            if text:
                yield await off_loop(chunk, {"content": text}, pending)
                pending = []
        elif kind == "done":
            rest, reason = await off_loop(detok.finish, payload)
            yield await off_loop(chunk, {"content": rest} if rest else {}, pending, reason)
        elif kind == "error":
            yield error_event(payload)
    p = len(jobs[0].prompt_ids)
    metrics.tokens.labels("prompt").inc(p)
    metrics.tokens.labels("completion").inc(generated)
    if req.sampling.include_usage:
        yield sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": engine.model_name,
                   "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": generated,
                                            "total_tokens": p + generated}})
    yield DONE
