"""The FastAPI application of the embedded (``hf``) server: OpenAI-compatible endpoints over :class:`HFEngine`.

Endpoints: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` (both stream over SSE),
``/health``, ``/metrics`` (Prometheus), and the tokenizer endpoints lm-eval's ``local-completions``
uses when it has no local tokenizer (``/tokenizer_info``, ``/tokenize``, ``/detokenize``).
Every error is OpenAI-shaped JSON; nothing answers with a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.exceptions import HTTPException as StarletteHTTPException

from .hf_engine import HFEngine, Job, TokenInfo
from .openai_schema import APIError, parse_chat, parse_completion

log = logging.getLogger("deltainv.serve")

#: How often a non-streaming request checks that its client is still there.
DISCONNECT_POLL_S = 0.1

_ENDPOINTS = ("/v1/models", "/v1/completions", "/v1/chat/completions", "/health", "/metrics", "/tokenizer_info",
              "/tokenize", "/detokenize")


class _EngineCollector:
    """Scrape-time metrics: queue state, engine counters and deltainv's inversion status."""

    def __init__(self, engine: HFEngine, inversion_status: Callable[[], dict] | None):
        self.engine, self.inversion_status = engine, inversion_status

    def collect(self):
        waiting, active = self.engine.load
        g = GaugeMetricFamily("deltainv_queue_requests", "Jobs waiting for or holding a worker slot", labels=["state"])
        g.add_metric(["waiting"], waiting)
        g.add_metric(["active"], active)
        yield g
        c = CounterMetricFamily("deltainv_engine_jobs", "Jobs the engine ended abnormally", labels=["outcome"])
        for outcome in ("cancelled", "rejected", "failed"):
            c.add_metric([outcome], self.engine.stats[outcome])
        yield c
        status = self.inversion_status() if self.inversion_status else None
        if status is not None:
            info = GaugeMetricFamily("deltainv_inversion_info", "Active deltainv inversion (1 when patched)",
                                     labels=["method", "precision"])
            info.add_metric([str(status.get("method")), str(status.get("precision"))], 1 if status.get("active") else 0)
            yield info
            fb = CounterMetricFamily("deltainv_inversion_fallbacks", "Calls recomputed by the non-finite guard")
            fb.add_metric([], float(status.get("fallbacks", 0)))
            yield fb


def _sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def _trim_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def create_app(engine: HFEngine, *, inversion_status: Callable[[], dict] | None = None,
               drain_timeout: float = 30.0) -> FastAPI:
    """Build the app around a loaded engine. ``inversion_status`` feeds ``/metrics`` (deltainv.plugin.status)."""
    registry = CollectorRegistry()
    requests_total = Counter("deltainv_http_requests", "HTTP requests", ["endpoint", "status"], registry=registry)
    latency = Histogram("deltainv_request_duration_seconds", "Request latency", ["endpoint"], registry=registry,
                        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
    ttft = Histogram("deltainv_time_to_first_token_seconds", "Time to first generated token", registry=registry,
                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
    tokens = Counter("deltainv_tokens", "Tokens processed", ["kind"], registry=registry)
    registry.register(_EngineCollector(engine, inversion_status))

    async def lifespan(app):
        yield
        # uvicorn has let the open requests finish; now drain anything still queued and stop.
        await asyncio.get_running_loop().run_in_executor(None, engine.drain, drain_timeout)

    app = FastAPI(title="deltainv", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    class CountRequests:
        """Requests and latency per endpoint and status. A plain ASGI middleware: Starlette's
        BaseHTTPMiddleware (``@app.middleware``) wraps ``receive`` so that handlers never see a
        client's disconnect, and abandoned requests would run to the end."""

        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.inner(scope, receive, send)
            t0, status = time.perf_counter(), ["499"]  # nginx's "client closed request" until a response starts

            async def send_counted(message):
                if message["type"] == "http.response.start":
                    status[0] = str(message["status"])
                await send(message)

            try:
                await self.inner(scope, receive, send_counted)
            finally:
                path = scope["path"] if scope["path"] in _ENDPOINTS else "other"
                requests_total.labels(path, status[0]).inc()
                latency.labels(path).observe(time.perf_counter() - t0)

    app.add_middleware(CountRequests)

    @app.exception_handler(APIError)
    async def api_error(_, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse({"error": {"message": str(exc.detail), "type": kind, "param": None, "code": None}},
                            status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(_, exc: Exception):
        log.exception("internal error")
        return JSONResponse({"error": {"message": "internal server error", "type": "server_error", "param": None,
                                       "code": None}}, status_code=500)

    async def body_of(request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON: {e}") from None

    def check_model(model: str) -> None:
        if model != engine.model_name:
            raise APIError(404, f"The model '{model}' does not exist (this server serves '{engine.model_name}')",
                           param="model", code="model_not_found", type="invalid_request_error")

    # -- plain endpoints -------------------------------------------------------------------------

    @app.get("/health")
    async def health():
        if engine._draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": engine.model_name, "object": "model", "created": 0,
                                            "owned_by": "deltainv", "max_model_len": engine.max_model_len}]}

    @app.get("/tokenizer_info")
    async def tokenizer_info():
        tok = engine.tokenizer
        return {"eos_token": tok.eos_token, "bos_token": tok.bos_token, "pad_token": tok.pad_token,
                "chat_template": getattr(tok, "chat_template", None), "model_max_length": engine.max_model_len}

    @app.post("/tokenize")
    async def tokenize(request: Request):
        body = await body_of(request)
        prompt = body.get("prompt") if isinstance(body, dict) else None
        if not isinstance(prompt, str):
            raise APIError(400, "'prompt' must be a string", param="prompt")
        special = bool(body.get("add_special_tokens", False))
        ids = engine.tokenizer(prompt, add_special_tokens=special)["input_ids"]
        return {"tokens": ids, "count": len(ids), "max_model_len": engine.max_model_len}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        body = await body_of(request)
        ids = body.get("tokens") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(t, int) and 0 <= t < engine.vocab_size for t in ids):
            raise APIError(400, "'tokens' must be a list of token ids in range", param="tokens")
        return {"prompt": engine.tokenizer.decode(ids)}

    # -- running jobs ------------------------------------------------------------------------------

    def make_jobs(prompts: list[list[int]], sampling, top_logprobs, prompt_logprobs) -> list[Job]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        jobs = []
        for i, ids in enumerate(prompts):
            room = engine.check_ids(ids, sampling.max_tokens)
            s = sampling if sampling.max_tokens is not None else type(sampling)(**{**sampling.__dict__, "max_tokens": room})
            jobs.append(Job(i, ids, s, top_logprobs, prompt_logprobs, loop, events=queue))
        return jobs

    async def events(jobs: list[Job], request: Request, poll: bool = True) -> AsyncIterator[tuple[int, str, Any]]:
        """Events of all jobs until each is done; cancels them all if the client goes away.

        Non-streaming handlers ``poll`` for a disconnect; a streaming response is cancelled by
        Starlette itself when its client leaves (and polling there would steal its receive channel).
        """
        queue, open_jobs, t0, first = jobs[0].events, len(jobs), jobs[0].created, True
        checked = time.perf_counter()
        try:
            while open_jobs:
                # Poll on a clock, not only when the queue is idle: tokens can arrive faster than
                # any idle timeout, and a client that left must stop its generation all the same.
                if poll and time.perf_counter() - checked > DISCONNECT_POLL_S:
                    checked = time.perf_counter()
                    if await request.is_disconnected():
                        raise asyncio.CancelledError
                try:
                    index, kind, payload = await asyncio.wait_for(queue.get(),
                                                                  timeout=DISCONNECT_POLL_S if poll else None)
                except TimeoutError:
                    continue
                if kind == "token" and first:
                    ttft.observe(time.perf_counter() - t0)
                    first = False
                if kind in ("done", "error"):
                    open_jobs -= 1
                yield index, kind, payload
        finally:
            for job in jobs:
                job.cancelled.set()  # no-op for finished jobs; stops the rest

    def token_str(t: int) -> str:
        return engine.token_text(t)

    def legacy_logprobs(infos: list[TokenInfo], start_offset: int) -> dict:
        tokens, lps, tops, offsets, pos = [], [], [], [], start_offset
        for info in infos:
            s = token_str(info.token)
            tokens.append(s)
            lps.append(info.logprob)
            if info.top is None:
                tops.append(None)
            else:
                top: dict[str, float] = {}
                for t, lp in info.top:  # highest first: a string shared by two ids keeps the larger value
                    top.setdefault(token_str(t), lp)
                tops.append(top)
            offsets.append(pos)
            pos += len(s)
        return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}

    def chat_logprobs(infos: list[TokenInfo]) -> dict:
        def entry(t, lp):
            s = token_str(t)
            return {"token": s, "logprob": lp, "bytes": list(s.encode())}

        return {"content": [{**entry(i.token, i.logprob), "top_logprobs": [entry(t, lp) for t, lp in (i.top or [])]}
                            for i in infos]}

    # -- /v1/completions --------------------------------------------------------------------------

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = parse_completion(await body_of(request))
        check_model(req.model)
        prompt_ids = [p if isinstance(p, list) else engine.encode(p) for p in req.prompts]
        want_prompt_lp = req.echo and req.logprobs is not None
        jobs = make_jobs(prompt_ids, req.sampling, req.logprobs, want_prompt_lp)
        engine.submit(jobs)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        prompt_texts = [p if isinstance(p, str) else engine.decode(p) for p in req.prompts]
        stops = req.sampling.stop

        if req.sampling.stream:
            return StreamingResponse(stream_completion(jobs, request, rid, created, prompt_texts, req, stops),
                                     media_type="text/event-stream")

        prompt_infos: dict[int, list[TokenInfo]] = {}
        gen: dict[int, list[TokenInfo]] = {j.index: [] for j in jobs}
        finish: dict[int, str] = {}
        async for index, kind, payload in events(jobs, request):
            if kind == "prompt":
                prompt_infos[index] = payload
            elif kind == "token":
                gen[index].append(payload)
            elif kind == "done":
                finish[index] = payload
            elif kind == "error":
                raise payload
        choices = []
        completion_tokens = 0
        for job in jobs:
            i = job.index
            text, stopped = _trim_at_stop(engine.decode([t.token for t in gen[i]]), stops)
            reason = "stop" if stopped or finish[i] == "stop" else "length"
            completion_tokens += len(gen[i])
            lp = None
            if req.logprobs is not None:
                infos = (prompt_infos.get(i, []) if req.echo else []) + gen[i]
                lp = legacy_logprobs(infos, 0)
            choices.append({"index": i, "text": (prompt_texts[i] if req.echo else "") + text, "logprobs": lp,
                            "finish_reason": reason})
        prompt_tokens = sum(len(p) for p in prompt_ids)
        tokens.labels("prompt").inc(prompt_tokens)
        tokens.labels("completion").inc(completion_tokens)
        return {"id": rid, "object": "text_completion", "created": created, "model": engine.model_name,
                "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                              "total_tokens": prompt_tokens + completion_tokens}}

    async def stream_completion(jobs, request, rid, created, prompt_texts, req, stops):
        holdback = max((len(s) for s in stops), default=1) - 1
        gen: dict[int, list[TokenInfo]] = {j.index: [] for j in jobs}
        sent: dict[int, int] = {j.index: 0 for j in jobs}
        pending_lp: dict[int, list[TokenInfo]] = {j.index: [] for j in jobs}

        def chunk(i, text, infos, reason=None):
            lp = legacy_logprobs(infos, 0) if req.logprobs is not None and infos else None
            return _sse({"id": rid, "object": "text_completion", "created": created, "model": engine.model_name,
                         "choices": [{"index": i, "text": text, "logprobs": lp, "finish_reason": reason}]})

        completion_tokens = 0
        if req.echo:
            for job in jobs:
                yield chunk(job.index, prompt_texts[job.index], [])
        async for i, kind, payload in events(jobs, request, poll=False):
            if kind == "prompt" and req.echo:
                yield chunk(i, "", payload)
            elif kind == "token":
                gen[i].append(payload)
                pending_lp[i].append(payload)
                completion_tokens += 1
                text = engine.decode([t.token for t in gen[i]])
                if text.endswith("\ufffd"):
                    continue  # an incomplete UTF-8 sequence: wait for the next token
                safe = text[: max(sent[i], len(text) - holdback)] if stops else text
                if len(safe) > sent[i]:
                    yield chunk(i, safe[sent[i]:], pending_lp[i])
                    sent[i], pending_lp[i] = len(safe), []
            elif kind == "done":
                text, stopped = _trim_at_stop(engine.decode([t.token for t in gen[i]]), stops)
                reason = "stop" if stopped or payload == "stop" else "length"
                yield chunk(i, text[sent[i]:], pending_lp[i], reason)
            elif kind == "error":
                yield _sse({"error": {"message": "generation failed", "type": "server_error", "param": None,
                                      "code": None}})
        tokens.labels("prompt").inc(sum(len(j.prompt_ids) for j in jobs))
        tokens.labels("completion").inc(completion_tokens)
        if req.sampling.include_usage:
            p = sum(len(j.prompt_ids) for j in jobs)
            yield _sse({"id": rid, "object": "text_completion", "created": created, "model": engine.model_name,
                        "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": completion_tokens,
                                                 "total_tokens": p + completion_tokens}})
        yield b"data: [DONE]\n\n"

    # -- /v1/chat/completions ---------------------------------------------------------------------

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req = parse_chat(await body_of(request))
        check_model(req.model)
        ids = engine.chat_ids(req.messages)
        jobs = make_jobs([ids], req.sampling, req.top_logprobs if req.logprobs else None, False)
        engine.submit(jobs)
        rid, created, stops = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), req.sampling.stop
        if req.sampling.stream:
            return StreamingResponse(stream_chat(jobs, request, rid, created, req, stops),
                                     media_type="text/event-stream")
        gen: list[TokenInfo] = []
        finish = "length"
        async for _, kind, payload in events(jobs, request):
            if kind == "token":
                gen.append(payload)
            elif kind == "done":
                finish = payload
            elif kind == "error":
                raise payload
        text, stopped = _trim_at_stop(engine.decode([t.token for t in gen]), stops)
        tokens.labels("prompt").inc(len(ids))
        tokens.labels("completion").inc(len(gen))
        return {"id": rid, "object": "chat.completion", "created": created, "model": engine.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": chat_logprobs(gen) if req.logprobs else None,
                             "finish_reason": "stop" if stopped or finish == "stop" else "length"}],
                "usage": {"prompt_tokens": len(ids), "completion_tokens": len(gen),
                          "total_tokens": len(ids) + len(gen)}}

    async def stream_chat(jobs, request, rid, created, req, stops):
        holdback = max((len(s) for s in stops), default=1) - 1
        gen: list[TokenInfo] = []
        pending: list[TokenInfo] = []
        sent = 0

        def chunk(delta, infos, reason=None):
            lp = chat_logprobs(infos) if req.logprobs and infos else None
            return _sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": engine.model_name,
                         "choices": [{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": reason}]})

        yield chunk({"role": "assistant", "content": ""}, [])
        async for _, kind, payload in events(jobs, request, poll=False):
            if kind == "token":
                gen.append(payload)
                pending.append(payload)
                text = engine.decode([t.token for t in gen])
                if text.endswith("\ufffd"):
                    continue
                safe = text[: max(sent, len(text) - holdback)] if stops else text
                if len(safe) > sent:
                    yield chunk({"content": safe[sent:]}, pending)
                    sent, pending = len(safe), []
            elif kind == "done":
                text, stopped = _trim_at_stop(engine.decode([t.token for t in gen]), stops)
                yield chunk({"content": text[sent:]} if len(text) > sent else {}, pending,
                            "stop" if stopped or payload == "stop" else "length")
            elif kind == "error":
                yield _sse({"error": {"message": "generation failed", "type": "server_error", "param": None,
                                      "code": None}})
        p = len(jobs[0].prompt_ids)
        tokens.labels("prompt").inc(p)
        tokens.labels("completion").inc(len(gen))
        if req.sampling.include_usage:
            yield _sse({"id": rid, "object": "chat.completion.chunk", "created": created, "model": engine.model_name,
                        "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": len(gen),
                                                 "total_tokens": p + len(gen)}})
        yield b"data: [DONE]\n\n"

    return app
