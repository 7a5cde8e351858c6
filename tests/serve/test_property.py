"""Property: no request body makes the server answer 5xx, and it stays healthy.

Hypothesis builds bodies from the OpenAI schema (each field: a valid value or an arbitrary JSON
value, including NaN, huge integers and lone surrogates) and arbitrary JSON documents, and posts
them to the live server over HTTP. Example counts are bounded (deterministic, about 10 s in all);
generation lengths are capped so valid bodies stay cheap.
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ANY_TEXT = st.text(alphabet=st.characters(codec=None), max_size=12)  # includes lone surrogates
SCALAR = (st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
          | st.floats(allow_nan=True, allow_infinity=True) | ANY_TEXT)
JSON = st.recursive(SCALAR, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(ANY_TEXT, kids, max_size=4),
                    max_leaves=12)
MAX_TOKENS = st.integers(min_value=-2, max_value=3) | st.sampled_from([2**70, 1.5, "3", True]) | st.floats()


def _field(valid):
    return st.one_of(valid, JSON)


def _body(model: str, chat: bool):
    common = {
        "model": st.one_of(st.just(model), JSON),
        "max_tokens": MAX_TOKENS,
        "temperature": _field(st.floats(min_value=0, max_value=2)),
        "top_p": _field(st.floats(min_value=0, max_value=1)),
        "seed": _field(st.integers(min_value=-(2**64), max_value=2**64)),
        "stop": _field(st.lists(ANY_TEXT, max_size=5)),
        "stream": _field(st.booleans()),
        "stream_options": _field(st.fixed_dictionaries({"include_usage": _field(st.booleans())})),
        "n": _field(st.integers(0, 2)),
    }
    if chat:
        message = st.fixed_dictionaries({"role": _field(st.sampled_from(["user", "system", "assistant"])),
                                         "content": _field(ANY_TEXT)})
        specific = {"messages": _field(st.lists(message, min_size=0, max_size=3)),
                    "logprobs": _field(st.booleans()), "top_logprobs": _field(st.integers(-1, 21))}
    else:
        prompt = ANY_TEXT | st.lists(st.integers(-5, 2**40), max_size=6) | st.lists(ANY_TEXT, max_size=3)
        specific = {"prompt": _field(prompt), "echo": _field(st.booleans()), "logprobs": _field(st.integers(-1, 21))}
    fields = {**common, **specific}
    # max_tokens always present (a chat request without it may generate to the context limit)
    return st.fixed_dictionaries({"max_tokens": fields.pop("max_tokens")}, optional=fields)


def _post(server, path: str, content: bytes) -> httpx.Response:
    return httpx.post(server.base + path, content=content, headers={"Content-Type": "application/json"}, timeout=60)


def _check(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text[:2000]
    if r.status_code >= 400:
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    elif r.headers.get("content-type", "").startswith("text/event-stream"):
        assert "server_error" not in r.text and r.text.rstrip().endswith("data: [DONE]"), r.text[-2000:]


SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_schema_bodies_never_5xx(server, tiny_model, path):
    @SETTINGS
    @given(_body(tiny_model.name, chat="chat" in path))
    def prop(body):
        _check(_post(server, path, json.dumps(body).encode()))

    prop()
    assert httpx.get(server.base + "/health").json() == {"status": "ok"}


def test_arbitrary_json_and_bytes_never_5xx(server):
    paths = st.sampled_from(["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"])
    docs = JSON.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=64)

    @settings(SETTINGS, max_examples=80)
    @given(paths, docs)
    def prop(path, content):
        _check(_post(server, path, content))

    prop()
    assert httpx.get(server.base + "/health").json() == {"status": "ok"}
    metrics = httpx.get(server.base + "/metrics").text
    assert not [line for line in metrics.splitlines() if line.startswith("deltainv_http_requests_total")
                and 'status="5' in line]
