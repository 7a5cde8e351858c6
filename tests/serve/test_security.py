"""The protections of ``deltainv serve --engine hf``: API key, Host check, body size, header, body and
keep-alive timeouts. One live server with all of them set; real HTTP, raw sockets where a client
has to misbehave, and the real ``openai`` client for the key."""

from __future__ import annotations

import socket
import time

import httpx
import openai
import pytest
import serve_testing
from openai import OpenAI

KEY = "test-key-7f3a"
LIMIT = 200_000


@pytest.fixture(scope="module")
def guarded(tiny_model, tmp_path_factory):
    s = serve_testing.Server(["--engine", "hf", "--model", str(tiny_model), "--api-key", KEY,
                              "--allowed-hosts", "127.0.0.1,localhost", "--max-request-bytes", str(LIMIT),
                              "--header-timeout", "1", "--body-timeout", "1", "--keep-alive-timeout", "1"],
                             tmp_path_factory.mktemp("guarded"))
    try:
        yield s.wait_healthy()
    finally:
        s.stop()


def test_api_key_with_the_openai_client(guarded, tiny_model):
    ok = OpenAI(base_url=guarded.base + "/v1", api_key=KEY, max_retries=0)
    assert ok.completions.create(model=tiny_model.name, prompt="x", max_tokens=1).usage.completion_tokens >= 0
    assert [m.id for m in ok.models.list().data] == [tiny_model.name]
    for wrong in ("nope", KEY + "x", ""):
        bad = OpenAI(base_url=guarded.base + "/v1", api_key=wrong or "-", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as e:
            bad.completions.create(model=tiny_model.name, prompt="x", max_tokens=1)
        assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    assert "test-key" not in guarded.output()  # the key is never logged or printed


def test_health_and_metrics_are_open_and_the_rest_is_not(guarded):
    assert httpx.get(guarded.base + "/health").status_code == 200
    assert httpx.get(guarded.base + "/metrics").status_code == 200
    for path in ("/v1/models", "/tokenizer_info"):
        r = httpx.get(guarded.base + path)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", r.text
    r = httpx.post(guarded.base + "/tokenize", json={"prompt": "x"}, headers={"Authorization": "Basic " + KEY})
    assert r.status_code == 401


def test_allowed_hosts(guarded):
    auth = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(guarded.base + "/v1/models", headers={**auth, "Host": "localhost:1234"}).status_code == 200
    r = httpx.get(guarded.base + "/v1/models", headers={**auth, "Host": "evil.example"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host"
    assert httpx.get(guarded.base + "/health", headers={"Host": "evil.example"}).status_code == 400


def test_request_body_limit(guarded, tiny_model):
    auth = {"Authorization": f"Bearer {KEY}"}
    big = {"model": tiny_model.name, "prompt": "x" * LIMIT}
    r = httpx.post(guarded.base + "/v1/completions", json=big, headers=auth)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(LIMIT // 10_000 + 2):
            yield b" " * 10_000

    r = httpx.post(guarded.base + "/v1/completions", content=chunks(),
                   headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 413, r.text


def _raw(guarded, data: bytes) -> tuple[bytes, float]:
    """Send ``data``, then read until the server closes; the reply and how long the server took."""
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as s:
        s.sendall(data)
        t0, out = time.monotonic(), b""
        while chunk := s.recv(65536):
            out += chunk
        return out, time.monotonic() - t0


def test_slow_headers_get_408_and_a_closed_connection(guarded):
    reply, took = _raw(guarded, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finishes its headers
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert 0.5 < took < 5
    reply, took = _raw(guarded, b"")  # connects and says nothing
    assert reply.startswith(b"HTTP/1.1 408") and took < 5


def test_slow_body_gets_408(guarded):
    head = (f"POST /tokenize HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\": ").encode()
    reply, took = _raw(guarded, head)
    assert b" 408 " in reply.split(b"\r\n")[0] and b"request_timeout" in reply, reply
    assert took < 5


def test_idle_keep_alive_connection_is_closed(guarded):
    reply, took = _raw(guarded, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200") and 0.5 < took < 5  # served, then closed after the idle timeout
