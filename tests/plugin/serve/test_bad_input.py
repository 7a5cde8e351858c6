"""Every bad request gets an OpenAI-style error JSON with the right 4xx code; never a 5xx or a traceback."""

import json

import httpx
import pytest

LONG = "x " * 5000  # far over the tiny model's context (1024 tokens)

CASES = [
    # (id, method, path, body (str = raw bytes), status, param)
    ("malformed json", "POST", "/v1/completions", '{"model": "m", "prompt": ', 400, None),
    ("not an object", "POST", "/v1/completions", "[1, 2]", 400, None),
    ("empty body", "POST", "/v1/chat/completions", "", 400, None),
    ("unknown model", "POST", "/v1/completions", {"model": "nope", "prompt": "x"}, 404, "model"),
    ("missing model", "POST", "/v1/completions", {"prompt": "x"}, 400, "model"),
    ("missing prompt", "POST", "/v1/completions", {"model": "M"}, 400, "prompt"),
    ("prompt wrong type", "POST", "/v1/completions", {"model": "M", "prompt": 3}, 400, "prompt"),
    ("prompt bool ids", "POST", "/v1/completions", {"model": "M", "prompt": [True, False]}, 400, "prompt"),
    ("token id out of range", "POST", "/v1/completions", {"model": "M", "prompt": [1, 999999]}, 400, "prompt"),
    ("prompt over context", "POST", "/v1/completions", {"model": "M", "prompt": LONG}, 400, "prompt"),
    ("completion over context", "POST", "/v1/completions", {"model": "M", "prompt": "x", "max_tokens": 5000}, 400,
     "max_tokens"),
    ("temperature < 0", "POST", "/v1/completions", {"model": "M", "prompt": "x", "temperature": -0.1}, 400,
     "temperature"),
    ("temperature > 2", "POST", "/v1/completions", {"model": "M", "prompt": "x", "temperature": 2.5}, 400,
     "temperature"),
    ("temperature string", "POST", "/v1/completions", {"model": "M", "prompt": "x", "temperature": "hot"}, 400,
     "temperature"),
    ("top_p 0", "POST", "/v1/completions", {"model": "M", "prompt": "x", "top_p": 0}, 400, "top_p"),
    ("top_p > 1", "POST", "/v1/completions", {"model": "M", "prompt": "x", "top_p": 1.5}, 400, "top_p"),
    ("max_tokens < 0", "POST", "/v1/completions", {"model": "M", "prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
    ("max_tokens float", "POST", "/v1/completions", {"model": "M", "prompt": "x", "max_tokens": 1.5}, 400,
     "max_tokens"),
    ("logprobs > 20", "POST", "/v1/completions", {"model": "M", "prompt": "x", "logprobs": 21}, 400, "logprobs"),
    ("n = 2", "POST", "/v1/completions", {"model": "M", "prompt": "x", "n": 2}, 400, "n"),
    ("too many stops", "POST", "/v1/completions", {"model": "M", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]},
     400, "stop"),
    ("stop wrong type", "POST", "/v1/completions", {"model": "M", "prompt": "x", "stop": 5}, 400, "stop"),
    ("seed wrong type", "POST", "/v1/completions", {"model": "M", "prompt": "x", "seed": "s"}, 400, "seed"),
    ("echo wrong type", "POST", "/v1/completions", {"model": "M", "prompt": "x", "echo": "yes"}, 400, "echo"),
    ("stream wrong type", "POST", "/v1/completions", {"model": "M", "prompt": "x", "stream": 1}, 400, "stream"),
    ("chat no messages", "POST", "/v1/chat/completions", {"model": "M"}, 400, "messages"),
    ("chat empty messages", "POST", "/v1/chat/completions", {"model": "M", "messages": []}, 400, "messages"),
    ("chat bad role", "POST", "/v1/chat/completions", {"model": "M", "messages": [{"role": "x", "content": "y"}]},
     400, "messages"),
    ("chat bad content", "POST", "/v1/chat/completions", {"model": "M", "messages": [{"role": "user", "content": 1}]},
     400, "messages"),
    ("chat top_logprobs without logprobs", "POST", "/v1/chat/completions",
     {"model": "M", "messages": [{"role": "user", "content": "y"}], "top_logprobs": 2}, 400, "top_logprobs"),
    ("chat unknown model", "POST", "/v1/chat/completions", {"model": "nope", "messages": [{"role": "user",
                                                                                          "content": "y"}]}, 404, "model"),
    ("unknown route", "GET", "/v1/nothing", None, 404, None),
    ("wrong method", "GET", "/v1/completions", None, 405, None),
    ("tokenize bad prompt", "POST", "/tokenize", {"prompt": 5}, 400, "prompt"),
    ("detokenize bad ids", "POST", "/detokenize", {"tokens": [-1]}, 400, "tokens"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request_gets_openai_error(server, tiny_model, case):
    _, method, path, body, status, param = case
    if isinstance(body, dict) and body.get("model") == "M":
        body = {**body, "model": tiny_model.name}
    content = body if isinstance(body, str) or body is None else json.dumps(body)
    r = httpx.request(method, server.base + path, content=content, headers={"Content-Type": "application/json"},
                      timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param
    assert "Traceback" not in r.text and "File \"" not in r.text


def test_server_still_healthy_after_bad_input(server):
    assert httpx.get(server.base + "/health").status_code == 200
    metrics = httpx.get(server.base + "/metrics").text
    assert 'deltainv_engine_jobs_total{outcome="failed"} 0.0' in metrics
    assert not [line for line in metrics.splitlines() if line.startswith("deltainv_http_requests_total")
                and 'status="5' in line]
