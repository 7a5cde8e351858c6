"""Every bad request gets an OpenAI-style error JSON with the right 4xx code; never a 5xx or a traceback.

The table covers every class of issue 17: malformed JSON, wrong types, values out of range
(for the sampler, the tokenizer, the seed, a float), non-finite values, invalid Unicode (raw bytes
and lone surrogates), deep nesting, batches that never fit the queue, non-JSON content types,
wrong models and routes. Size, API key, host and timeouts are in ``test_security.py``.
"""

import json

import httpx
import pytest

LONG = "x " * 5000  # far over the tiny model's context (1024 tokens)
DEEP = "[" * 100_000 + "]" * 100_000  # deeper than Python's recursion limit

CASES = [
    # (id, method, path, body (str: sent as is, bytes: raw), status, param[, content type])
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
    ("ignore_eos wrong type", "POST", "/v1/completions", {"model": "M", "prompt": "x", "ignore_eos": 1}, 400,
     "ignore_eos"),
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
    # numbers the sampler, tokenizer or a float cannot represent
    ("temperature NaN literal", "POST", "/v1/completions", '{"model": "M", "prompt": "x", "temperature": NaN}', 400,
     "temperature"),
    ("top_p Infinity literal", "POST", "/v1/completions", '{"model": "M", "prompt": "x", "top_p": Infinity}', 400,
     "top_p"),
    ("temperature -Infinity", "POST", "/v1/chat/completions",
     '{"model": "M", "messages": [{"role": "user", "content": "y"}], "temperature": -Infinity}', 400, "temperature"),
    ("float overflow 1e400", "POST", "/v1/completions", '{"model": "M", "prompt": "x", "temperature": 1e400}', 400,
     "temperature"),
    ("integer with 5000 digits", "POST", "/v1/completions",
     '{"model": "M", "prompt": "x", "max_tokens": ' + "9" * 5000 + "}", 400, "max_tokens"),
    ("max_tokens 2**70", "POST", "/v1/completions", {"model": "M", "prompt": "x", "max_tokens": 2**70}, 400,
     "max_tokens"),
    ("seed 2**70", "POST", "/v1/completions", {"model": "M", "prompt": "x", "seed": 2**70}, 400, "seed"),
    ("seed -2**70", "POST", "/v1/completions", {"model": "M", "prompt": "x", "seed": -2**70, "temperature": 1}, 400,
     "seed"),
    ("token id 2**80", "POST", "/v1/completions", {"model": "M", "prompt": [1, 2**80]}, 400, "prompt"),
    ("logprobs -1", "POST", "/v1/completions", {"model": "M", "prompt": "x", "logprobs": -1}, 400, "logprobs"),
    ("top_logprobs 10**9", "POST", "/v1/chat/completions",
     {"model": "M", "messages": [{"role": "user", "content": "y"}], "logprobs": True, "top_logprobs": 10**9}, 400,
     "top_logprobs"),
    ("include_usage not bool", "POST", "/v1/completions",
     {"model": "M", "prompt": "x", "stream": True, "stream_options": {"include_usage": "yes"}}, 400, "stream_options"),
    # text that is not valid Unicode
    ("body not UTF-8", "POST", "/v1/completions", b'{"model": "M", "prompt": "\xff\xfe"}', 400, None),
    ("lone surrogate in prompt", "POST", "/v1/completions", '{"model": "M", "prompt": "a\\ud800b"}', 400, "prompt"),
    ("lone surrogate in chat", "POST", "/v1/chat/completions",
     '{"model": "M", "messages": [{"role": "user", "content": "\\udfff"}]}', 400, "messages"),
    ("lone surrogate in stop", "POST", "/v1/completions", '{"model": "M", "prompt": "x", "stop": ["\\ud83d"]}', 400,
     "stop"),
    ("lone surrogate in tokenize", "POST", "/tokenize", '{"prompt": "\\ud800"}', 400, "prompt"),
    # absurd nesting
    ("nesting past the recursion limit", "POST", "/v1/completions", DEEP, 400, None),
    ("prompt nested 100 deep", "POST", "/v1/completions",
     '{"model": "M", "prompt": ' + "[" * 100 + "1" + "]" * 100 + "}", 400, "prompt"),
    # a batch the queue can never hold (--max-queue 256)
    ("batch larger than the queue", "POST", "/v1/completions", {"model": "M", "prompt": ["x"] * 257, "max_tokens": 1},
     400, "prompt"),
    # content types a web page could post cross-site
    ("text/plain body", "POST", "/v1/completions", {"model": "M", "prompt": "x"}, 415, None, "text/plain"),
    ("form body", "POST", "/v1/chat/completions", "model=M", 415, None, "application/x-www-form-urlencoded"),
    ("no content type", "POST", "/tokenize", {"prompt": "x"}, 415, None, ""),
    ("add_special_tokens not bool", "POST", "/tokenize", {"prompt": "x", "add_special_tokens": "yes"}, 400,
     "add_special_tokens"),
    ("unknown route", "GET", "/v1/nothing", None, 404, None),
    ("wrong method", "GET", "/v1/completions", None, 405, None),
    ("tokenize bad prompt", "POST", "/tokenize", {"prompt": 5}, 400, "prompt"),
    ("detokenize bad ids", "POST", "/detokenize", {"tokens": [-1]}, 400, "tokens"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request_gets_openai_error(server, tiny_model, case):
    _, method, path, body, status, param, *ctype = case
    if isinstance(body, dict) and body.get("model") == "M":
        body = {**body, "model": tiny_model.name}
    elif isinstance(body, (str, bytes)) and (b'"M"' if isinstance(body, bytes) else '"M"') in body:
        name = tiny_model.name
        body = body.replace(b'"M"', f'"{name}"'.encode()) if isinstance(body, bytes) else body.replace('"M"', f'"{name}"')
    content = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
    headers = {"Content-Type": ctype[0] if ctype else "application/json"}
    if not headers["Content-Type"]:
        headers = {}
    r = httpx.request(method, server.base + path, content=content, headers=headers, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param
    assert "Traceback" not in r.text and "File \"" not in r.text


def test_tiny_temperature_is_handled_as_vllm_does(server, tiny_model):
    """Below 1e-5 a temperature means greedy (vLLM's _SAMPLING_EPS); it never divides logits into inf/NaN."""
    payload = {"model": tiny_model.name, "prompt": "x = ", "max_tokens": 6}
    greedy = httpx.post(server.base + "/v1/completions", json={**payload, "temperature": 0}, timeout=60)
    for t in (1e-300, 5e-324, 1e-6):
        r = httpx.post(server.base + "/v1/completions", json={**payload, "temperature": t}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == greedy.json()["choices"][0]["text"]
    r = httpx.post(server.base + "/v1/completions", json={**payload, "temperature": 1e-3, "seed": 1}, timeout=60)
    assert r.status_code == 200, r.text  # raised to 1e-2: finite logits, a valid sample


def test_ignore_eos_generates_past_end_of_sequence(server, tiny_model):
    """vLLM's ``ignore_eos``: greedy "a" reaches end-of-sequence on the tiny model; with the flag the same
    tokens come out and generation goes on to ``max_tokens``."""
    payload = {"model": tiny_model.name, "prompt": "a", "max_tokens": 400, "temperature": 0}
    plain = httpx.post(server.base + "/v1/completions", json=payload, timeout=120).json()
    assert plain["choices"][0]["finish_reason"] == "stop" and plain["usage"]["completion_tokens"] < 400, plain["usage"]
    longer = httpx.post(server.base + "/v1/completions", json={**payload, "ignore_eos": True}, timeout=120).json()
    assert longer["choices"][0]["finish_reason"] == "length" and longer["usage"]["completion_tokens"] == 400
    assert longer["choices"][0]["text"].startswith(plain["choices"][0]["text"])


def test_server_still_healthy_after_bad_input(server):
    assert httpx.get(server.base + "/health").status_code == 200
    metrics = httpx.get(server.base + "/metrics").text
    assert 'deltainv_engine_jobs_total{outcome="failed"} 0.0' in metrics
    assert not [line for line in metrics.splitlines() if line.startswith("deltainv_http_requests_total")
                and 'status="5' in line]
