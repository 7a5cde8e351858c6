"""``/metrics`` tells the truth: the status each client received, server errors as 500 (not 499),
client disconnects counted on their own, and totals equal to what a client sent."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import httpx
import pytest
import serve_testing
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from deltainv.serve.errors import ClientGone
from deltainv.serve.metrics import Metrics
from deltainv.serve.middleware import HTTPGate, Protection


def _samples(text: str, name: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(rf"^{name}\{{(.*)\}} (\S+)$", text, re.M)}


def _settled(metrics: Metrics, name: str, ready, timeout: float = 10) -> dict[str, float]:
    """``name``'s samples once ``ready(samples)`` holds (a request is counted just after its response)."""
    deadline = time.monotonic() + timeout
    while True:
        got = _samples(metrics.render().decode(), name)
        if ready(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


@pytest.fixture(scope="module")
def faulty():
    """The real middleware in front of routes that fail or stall, under a real uvicorn."""
    inner = FastAPI()

    @inner.get("/v1/models")
    async def boom():
        raise RuntimeError("a bug")

    @inner.get("/tokenizer_info")
    async def stall(request: Request):  # works until its client leaves, as the completion routes do
        while not await request.is_disconnected():
            await asyncio.sleep(0.05)
        raise ClientGone

    @inner.get("/v1/completions")
    async def stream():
        async def gen():
            for _ in range(300):
                yield b"data: x\n\n"
                await asyncio.sleep(0.05)
        return StreamingResponse(gen(), media_type="text/event-stream")

    metrics = Metrics()
    inner.add_middleware(HTTPGate, metrics=metrics, protection=Protection())  # as create_app composes it
    port = serve_testing.free_port()
    server = uvicorn.Server(uvicorn.Config(inner, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", metrics
    server.should_exit = True
    thread.join(10)


def test_server_error_is_a_json_500_and_counted_as_500(faulty):
    base, metrics = faulty
    r = httpx.get(base + "/v1/models")
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    counts = _settled(metrics, "deltainv_http_requests_total", lambda c: any("/v1/models" in k for k in c))
    assert counts['endpoint="/v1/models",status="500"'] == 1
    assert not any('status="499"' in k for k in counts)


def test_client_leaving_is_a_disconnect_not_an_error(faulty):
    base, metrics = faulty
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(base + "/tokenizer_info", timeout=httpx.Timeout(5, read=0.3))
    with httpx.stream("GET", base + "/v1/completions") as r:
        next(r.iter_lines())
    gone = _settled(metrics, "deltainv_client_disconnects_total", lambda g: len(g) == 2)
    assert gone == {'endpoint="/tokenizer_info",phase="before_response"': 1.0,
                    'endpoint="/v1/completions",phase="during_response"': 1.0}, gone
    counts = _samples(metrics.render().decode(), "deltainv_http_requests_total")
    assert counts['endpoint="/tokenizer_info",status="499"'] == 1
    assert counts['endpoint="/v1/completions",status="200"'] == 1
