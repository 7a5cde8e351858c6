"""OpenAI request validation and error bodies for the embedded (``hf``) server.

Validation is explicit rather than pydantic-generated so every rejection carries OpenAI's error
shape and a message that names the parameter::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "temperature", "code": null}}

What is refused before any field is read (:func:`parse_json`), with ``param`` naming the top-level
field: bodies that are not UTF-8, JSON ``NaN``/``Infinity`` and numbers that overflow a float
(Python's ``json`` would accept both), integers of more than 64 digits, nesting deeper than
:data:`MAX_DEPTH`, and strings holding lone UTF-16 surrogates (``"\\ud800"``: valid JSON, not encodable text). Sampling values are then checked
against the range the sampler can honour; temperatures too small to be meaningful are handled as
vLLM handles them (below 1e-5: greedy; from 1e-5 up to 1e-2: raised to 1e-2).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

#: Deepest JSON nesting a request may have (a chat request with content parts needs 5).
MAX_DEPTH = 64
#: vLLM's thresholds (``vllm.sampling_params``): below ``GREEDY_EPS`` a temperature means greedy;
#: up to ``MIN_TEMPERATURE`` it is raised to ``MIN_TEMPERATURE`` (dividing logits by less overflows).
GREEDY_EPS = 1e-5
MIN_TEMPERATURE = 1e-2
#: ``torch.Generator.manual_seed`` accepts exactly this range.
SEED_RANGE = (-(1 << 63), (1 << 64) - 1)


class APIError(Exception):
    """An error the client caused (4xx) or a service condition (429/503), with OpenAI's body."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ("invalid_request_error" if status < 500 and status != 429 else
                             "rate_limit_error" if status == 429 else "server_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Unrepresentable:
    """Stands in, during parsing, for a number no field can hold; :func:`_check_tree` names its field."""

    def __init__(self, text: str):
        self.text = text if len(text) <= 24 else f"{text[:12]}...({len(text)} characters)"


def _float(text: str) -> float | _Unrepresentable:
    value = float(text)
    return value if math.isfinite(value) else _Unrepresentable(text)


def _int(text: str) -> int | _Unrepresentable:
    return int(text) if len(text) <= 64 else _Unrepresentable(text)  # 2**64 has 20 digits


def _check_tree(body: Any) -> None:
    """Depth and text checks over the parsed body, iteratively (no recursion on hostile input)."""
    stack: list[tuple[Any, int, str | None]] = [(body, 1, None)]
    while stack:
        node, depth, top = stack.pop()
        if depth > MAX_DEPTH:
            raise _bad(f"the request body is nested deeper than {MAX_DEPTH} levels", top)
        if isinstance(node, _Unrepresentable):
            raise _bad(f"{node.text} is not a number this server accepts (non-finite, or too large)"
                       + (f" in '{top}'" if top else ""), top)
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                raise _bad("a string holds an unpaired UTF-16 surrogate (not valid Unicode text)", top) from None
        elif isinstance(node, dict):
            for key, value in node.items():
                where = key if depth == 1 else top
                stack.append((key, depth + 1, where))
                stack.append((value, depth + 1, where))
        elif isinstance(node, list):
            stack.extend((item, depth + 1, top) for item in node)


def parse_json(raw: bytes) -> Any:
    """The request body as JSON, or a 400 naming what is wrong. CPU work: call it off the event loop."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad(f"the request body is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        body = json.loads(text, parse_constant=_Unrepresentable, parse_float=_float, parse_int=_int)
    except RecursionError:
        raise _bad(f"the request body is nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as e:
        raise _bad(f"the request body is not valid JSON: {e}") from None
    _check_tree(body)
    return body


def _bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def _num(body: dict, name: str, default, lo: float, hi: float, *, integer: bool = False, lo_open: bool = False):
    value = body.get(name, default)
    if value is None:
        return default
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise _bad(f"'{name}' must be {'an integer' if integer else 'a number'}, got {type(value).__name__}", name)
    if value < lo or value > hi or (lo_open and value == lo):
        left = "(" if lo_open else "["
        raise _bad(f"'{name}' must be in {left}{lo}, {hi}], got {value}", name)
    return value


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise _bad("'stop' must be a string or a list of strings", "stop")
    if len(stop) > 4:
        raise _bad(f"'stop' takes at most 4 sequences, got {len(stop)}", "stop")
    if any(s == "" for s in stop):
        raise _bad("'stop' sequences must not be empty", "stop")
    return stop


@dataclass
class Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str]
    stream: bool
    include_usage: bool = False
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens even past end-of-sequence (load tests)


def _sampling(body: dict, max_tokens_default: int | None) -> Sampling:
    n = _num(body, "n", 1, 1, 1, integer=True)
    del n
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean", "stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise _bad("'stream_options' must be an object", "stream_options")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _bad("'seed' must be an integer", "seed")
    if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise _bad(f"'seed' must be in [{SEED_RANGE[0]}, {SEED_RANGE[1]}]", "seed")
    include_usage = opts.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise _bad("'stream_options.include_usage' must be a boolean", "stream_options")
    temperature = float(_num(body, "temperature", 1.0, 0.0, 2.0))
    if temperature < GREEDY_EPS:
        temperature = 0.0
    elif temperature < MIN_TEMPERATURE:
        temperature = MIN_TEMPERATURE
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise _bad("'ignore_eos' must be a boolean", "ignore_eos")
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    return Sampling(
        max_tokens=_num(body, name, max_tokens_default, 0, 1 << 20, integer=True),
        temperature=temperature,
        top_p=float(_num(body, "top_p", 1.0, 0.0, 1.0, lo_open=True)),
        seed=seed,
        stop=_stop(body),
        stream=stream,
        include_usage=include_usage,
        ignore_eos=ignore_eos,
    )


@dataclass
class CompletionRequest:
    model: str
    prompts: list[str | list[int]]
    sampling: Sampling
    echo: bool
    logprobs: int | None
    raw: dict = field(repr=False, default_factory=dict)


def _prompts(value: Any) -> list[str | list[int]]:
    """``prompt`` as OpenAI accepts it: a string, a list of strings, token ids, or lists of token ids."""
    def ids(x):
        return isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) for t in x)

    if isinstance(value, str):
        return [value]
    if ids(value):
        return [value]
    if isinstance(value, list) and value and all(isinstance(p, str) or ids(p) for p in value):
        return list(value)
    raise _bad("'prompt' must be a non-empty string, list of strings, list of token ids, or list of token-id lists",
               "prompt")


def _model(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required and must be a string", "model")
    return model


def _object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    return body


def parse_completion(body: Any) -> CompletionRequest:
    body = _object(body)
    model = _model(body)
    if "prompt" not in body:
        raise _bad("'prompt' is required", "prompt")
    prompts = _prompts(body["prompt"])
    echo = body.get("echo", False)
    if not isinstance(echo, bool):
        raise _bad("'echo' must be a boolean", "echo")
    logprobs = _num(body, "logprobs", None, 0, 20, integer=True)
    return CompletionRequest(model, prompts, _sampling(body, 16), echo, logprobs, body)


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, str]]
    sampling: Sampling
    logprobs: bool
    top_logprobs: int


_ROLES = ("system", "user", "assistant", "tool", "developer")


def _content(message: dict, i: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise _bad(f"messages[{i}].content must be a string or a list of text parts", "messages")


def parse_chat(body: Any) -> ChatRequest:
    body = _object(body)
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list", "messages")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise _bad(f"messages[{i}] must be an object with a role in {', '.join(_ROLES)}", "messages")
        clean.append({"role": m["role"], "content": _content(m, i)})
    logprobs = body.get("logprobs", False)
    if not isinstance(logprobs, bool):
        raise _bad("'logprobs' must be a boolean for chat completions", "logprobs")
    top = _num(body, "top_logprobs", 0, 0, 20, integer=True)
    if top and not logprobs:
        raise _bad("'top_logprobs' requires 'logprobs': true", "top_logprobs")
    return ChatRequest(model, clean, _sampling(body, None), logprobs, top)
