"""The ASGI layer in front of every route: counting, refusals, body limits, and a JSON 500 of last resort.

A plain ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``: that one wraps ``receive``
so handlers never see a client's disconnect, and abandoned requests would run to the end.

In order, for each HTTP request:

1. ``Host`` not in ``--allowed-hosts`` (when given): 400.
2. ``--api-key`` set and the path is not ``/health`` or ``/metrics``: ``Authorization: Bearer <key>``
   or 401 (as vLLM's ``--api-key``; compared in constant time).
3. ``POST`` without a JSON ``Content-Type``: 415. A web page can post ``text/plain`` cross-site
   without a CORS preflight; it cannot post ``application/json``.
4. ``Content-Length`` over ``--max-request-bytes``: 413 before a byte of the body is read; a
   chunked body is counted as it arrives and refused the same way. A body that stalls for
   ``--body-timeout`` seconds: 408.

Whatever the route does, the status the client received is what ``/metrics`` records (see
:mod:`.metrics`); an exception that escapes a route is logged and answered with an OpenAI-shaped
JSON 500 (never a traceback, never a plain-text body).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from dataclasses import dataclass

from starlette.requests import ClientDisconnect

from .errors import APIError, ClientGone, error_body
from .metrics import Metrics

log = logging.getLogger("deltainv.serve")

#: Paths that answer without the API key (probes and scrapers, as in vLLM).
OPEN_PATHS = ("/health", "/metrics")


@dataclass(frozen=True)
class Protection:
    """The HTTP-level limits of one server (``deltainv serve`` flags)."""

    api_key: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    max_request_bytes: int = 16 << 20
    body_timeout: float = 30.0


def _json_content_type(value: str) -> bool:
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _host_of(value: str) -> str:
    if value.startswith("["):  # [::1]:8000
        return value[1:value.find("]")].lower() if "]" in value else value.lower()
    return value.rsplit(":", 1)[0].lower() if value.count(":") == 1 else value.lower()


class HTTPGate:
    """See the module docstring. ``app`` is the inner ASGI application."""

    def __init__(self, app, metrics: Metrics, protection: Protection):
        self.app, self.metrics, self.protection = app, metrics, protection

    def _refusal(self, scope) -> APIError | None:
        p = self.protection
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if p.allowed_hosts:
            host = _host_of(headers.get("host", ""))
            if "*" not in p.allowed_hosts and host not in p.allowed_hosts:
                return APIError(400, f"Host {host!r} is not served here (--allowed-hosts)", code="invalid_host")
        if p.api_key is not None and scope["path"] not in OPEN_PATHS:
            expected = f"Bearer {p.api_key}".encode()
            given = headers.get("authorization", "").encode("latin-1")
            if not hmac.compare_digest(given, expected):
                return APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                                code="invalid_api_key")
        if scope["method"] == "POST":
            if not _json_content_type(headers.get("content-type", "")):
                return APIError(415, "POST bodies must be JSON: send 'Content-Type: application/json'",
                                code="unsupported_media_type")
            length = headers.get("content-length")
            if length is not None:
                if not length.isdigit():
                    return APIError(400, "invalid Content-Length")
                if int(length) > p.max_request_bytes:
                    return APIError(413, f"the request body has {int(length)} bytes; this server takes at most "
                                         f"{p.max_request_bytes} (--max-request-bytes)", code="request_too_large")
        return None

    def _receive(self, receive, state: dict):
        p = self.protection
        size = [0]

        async def limited():
            if state["body_done"]:
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), p.body_timeout)
                except TimeoutError:
                    raise APIError(408, f"the request body did not arrive within {p.body_timeout:g} s "
                                        "(--body-timeout)", code="request_timeout") from None
                if message["type"] == "http.request":
                    size[0] += len(message.get("body", b""))
                    if size[0] > p.max_request_bytes:
                        raise APIError(413, f"the request body exceeds {p.max_request_bytes} bytes "
                                            "(--max-request-bytes)", code="request_too_large")
                    state["body_done"] = not message.get("more_body", False)
            if message["type"] == "http.disconnect" and not state["response_done"]:
                state["client_gone"] = True
            return message

        return limited

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        m = self.metrics
        endpoint = m.endpoint(scope["path"])
        t0 = time.perf_counter()
        state = {"status": None, "response_done": False, "client_gone": False, "body_done": False}

        async def counted_send(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                state["response_done"] = True
            try:
                await send(message)
            except OSError:  # uvicorn's ClientDisconnected: the client closed the connection
                state["client_gone"] = True
                raise

        async def answer(status: int, body: dict, headers: dict | None = None) -> None:
            raw = json.dumps(body).encode()
            hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
            hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
            try:
                await counted_send({"type": "http.response.start", "status": status, "headers": hdrs})
                await counted_send({"type": "http.response.body", "body": raw})
            except OSError:
                pass

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await answer(refusal.status, refusal.body(), refusal.headers)
            else:
                await self.app(scope, self._receive(receive, state), counted_send)
        except asyncio.CancelledError:
            # uvicorn cancels a request's task when its connection is lost before the response ends
            state["client_gone"] = state["client_gone"] or not state["response_done"]
            raise
        except Exception as exc:
            if isinstance(exc, (ClientGone, ClientDisconnect)) or state["client_gone"]:
                state["client_gone"] = True
            else:
                log.exception("internal error")
                if state["status"] is None:
                    await answer(500, error_body(500, "internal server error"))
        finally:
            status = state["status"]
            gone = state["client_gone"] and not state["response_done"]
            m.requests.labels(endpoint, str(status) if status is not None else "499").inc()
            m.latency.labels(endpoint).observe(time.perf_counter() - t0)
            if gone:
                m.disconnects.labels(endpoint, "before_response" if status is None else "during_response").inc()
