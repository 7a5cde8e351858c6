"""Concurrency, back-pressure, cancellation and graceful shutdown of the embedded server."""

import asyncio
import contextlib
import re
import signal
import threading
import time

import httpx
import pytest
import serve_testing

from deltainv.bench.serve_load import run_load


def _metric(base: str, name: str, labels: str = "") -> float:
    text = httpx.get(base + "/metrics").text
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def test_400_requests_at_concurrency_32_nothing_lost_no_5xx(server, tiny_model, tmp_path):
    result = asyncio.run(run_load(server.base, tiny_model.name, n=400, concurrency=32, max_tokens=8))
    assert result["lost"] == 0, result
    assert result["server_errors"] == 0, result
    assert result["ok"] == 400, result["status"]
    assert _metric(server.base, "deltainv_queue_requests", '{state="active"}') == 0


@pytest.fixture(scope="module")
def small_queue(tiny_model, tmp_path_factory):
    s = serve_testing.Server(["--engine", "hf", "--model", str(tiny_model), "--max-active", "1", "--max-queue", "2"],
                             tmp_path_factory.mktemp("small-queue"))
    try:
        yield s.wait_healthy()
    finally:
        s.stop()


def test_full_queue_answers_429_with_retry_after(small_queue, tiny_model):
    s = small_queue

    async def burst():
        async with httpx.AsyncClient(timeout=120) as c:
            payload = {"model": tiny_model.name, "prompt": "x", "max_tokens": 150, "temperature": 0}
            return await asyncio.gather(*(c.post(s.base + "/v1/completions", json=payload) for _ in range(12)))

    responses = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 429}, codes
    assert codes.count(200) >= 3  # one running + two queued get through
    refused = [r for r in responses if r.status_code == 429]
    assert all(r.headers.get("retry-after") for r in refused)
    assert refused[0].json()["error"]["type"] == "rate_limit_error"


def test_batch_that_can_never_fit_gets_400_not_429(small_queue, tiny_model):
    r = httpx.post(small_queue.base + "/v1/completions", timeout=60,
                   json={"model": tiny_model.name, "prompt": ["a", "b", "c"], "max_tokens": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text
    assert "retry-after" not in r.headers and "--max-queue" in r.json()["error"]["message"]


def test_client_leaving_while_queued_frees_its_slot_at_once(small_queue, tiny_model):
    s = small_queue
    base = s.base
    # ignore_eos: the tiny model may emit end-of-sequence early and finish inside the drain timeout
    long = {"model": tiny_model.name, "prompt": "a", "max_tokens": 1000, "temperature": 0, "ignore_eos": True}
    cancelled0 = _metric(base, "deltainv_engine_jobs_total", '{outcome="cancelled"}')
    def hold():
        with contextlib.suppress(httpx.ReadTimeout):
            httpx.post(base + "/v1/completions", json=long, timeout=httpx.Timeout(60, read=4.0))

    holder = threading.Thread(target=hold)
    holder.start()  # takes the one active slot for a few seconds, then its client leaves too
    deadline = time.monotonic() + 30
    while _metric(base, "deltainv_queue_requests", '{state="active"}') != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # two clients queue behind it and give up after 0.3 s
    def leave():
        with contextlib.suppress(httpx.ReadTimeout):
            httpx.post(base + "/v1/completions", json=long, timeout=httpx.Timeout(10, read=0.3))
            raise AssertionError("a queued request finished within 0.3 s")

    leavers = [threading.Thread(target=leave) for _ in range(2)]
    for t in leavers:
        t.start()
    for t in leavers:
        t.join()
    t_left = time.monotonic()
    while _metric(base, "deltainv_queue_requests", '{state="waiting"}') != 0:
        assert time.monotonic() - t_left < 1.0, "queued clients that left kept their slots"
        time.sleep(0.02)
    assert _metric(base, "deltainv_queue_requests", '{state="active"}') == 1  # the holder still runs
    assert _metric(base, "deltainv_engine_jobs_total", '{outcome="cancelled"}') >= cancelled0 + 2
    # the freed slots take new work at once: two more fit in the queue (no 429)
    async def two():
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=0.5)) as c:
            return await asyncio.gather(*(c.post(base + "/v1/completions", json=long) for _ in range(2)),
                                        return_exceptions=True)

    results = asyncio.run(two())
    assert all(isinstance(r, httpx.ReadTimeout) for r in results), results  # queued (not refused), then left
    holder.join()


def test_client_disconnect_cancels_its_work(server, tiny_model):
    before = _metric(server.base, "deltainv_engine_jobs_total", '{outcome="cancelled"}')
    payload = {"model": tiny_model.name, "prompt": "a", "max_tokens": 900, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.base + "/v1/completions", json=payload, timeout=60) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i >= 4:
                break
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (_metric(server.base, "deltainv_engine_jobs_total", '{outcome="cancelled"}') == before + 1
                and _metric(server.base, "deltainv_queue_requests", '{state="active"}') == 0):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the abandoned stream kept its worker slot")
    # a non-streaming client that goes away is cancelled too, while its tokens are still flowing
    # (the client leaves after 0.1 s; the generation takes seconds)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base + "/v1/completions", timeout=httpx.Timeout(5.0, read=0.1),
                   json={"model": tiny_model.name, "prompt": "a", "max_tokens": 1000, "temperature": 0})
    deadline = time.monotonic() + 30
    while _metric(server.base, "deltainv_engine_jobs_total", '{outcome="cancelled"}') < before + 2:
        assert time.monotonic() < deadline, "the abandoned request was not cancelled"
        time.sleep(0.2)


def test_sigterm_drains_the_request_in_flight(tiny_model, tmp_path):
    s = serve_testing.Server(["--engine", "hf", "--model", str(tiny_model)], tmp_path).wait_healthy()
    box = {}

    def request():
        box["r"] = httpx.post(s.base + "/v1/completions", timeout=120,
                              json={"model": tiny_model.name, "prompt": "a", "max_tokens": 300, "temperature": 0})

    t = threading.Thread(target=request)
    t.start()
    deadline = time.monotonic() + 30
    while _metric(s.base, "deltainv_queue_requests", '{state="active"}') != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    s.proc.send_signal(signal.SIGTERM)
    t.join(timeout=120)
    code = s.stop()
    assert box["r"].status_code == 200, box["r"].text
    assert box["r"].json()["usage"]["completion_tokens"] == 300 or box["r"].json()["choices"][0]["finish_reason"] == "stop"
    # uvicorn re-raises the signal once it has shut down, so the exit status says "terminated by SIGTERM"
    assert code in (0, -signal.SIGTERM), s.output()[-2000:]
    assert "Application shutdown complete" in s.output()


def test_drain_timeout_answers_json_503_and_ends_streams_properly(tiny_model, tmp_path):
    s = serve_testing.Server(["--engine", "hf", "--model", str(tiny_model), "--drain-timeout", "1"],
                             tmp_path).wait_healthy()
    # ignore_eos: the tiny model may emit end-of-sequence early and finish inside the drain timeout
    long = {"model": tiny_model.name, "prompt": "a", "max_tokens": 1000, "temperature": 0, "ignore_eos": True}
    box: dict = {}

    def plain():
        box["plain"] = httpx.post(s.base + "/v1/completions", json=long, timeout=60)

    def stream():
        with httpx.stream("POST", s.base + "/v1/completions", json={**long, "stream": True}, timeout=60) as r:
            box["stream_status"] = r.status_code
            box["stream"] = [line for line in r.iter_lines() if line]

    threads = [threading.Thread(target=plain), threading.Thread(target=stream)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while _metric(s.base, "deltainv_queue_requests", '{state="active"}') != 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    s.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=60)
    code = s.stop()
    r = box["plain"]
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == "drain_timeout"
    events = box["stream"]
    assert box["stream_status"] == 200 and events[-1] == "data: [DONE]", events[-3:]
    assert '"drain_timeout"' in events[-2], events[-3:]
    assert code in (0, -signal.SIGTERM), s.output()[-2000:]
