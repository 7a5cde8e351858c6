"""The FastAPI application of the embedded (``hf``) server: OpenAI-compatible endpoints over :class:`HFEngine`.

Endpoints (one router per area, :mod:`.routes`): ``/v1/completions``, ``/v1/chat/completions``
(both stream over SSE), ``/v1/models``, ``/health``, the tokenizer endpoints lm-eval's
``local-completions`` uses without a local tokenizer (``/tokenizer_info``, ``/tokenize``,
``/detokenize``) and ``/metrics`` (Prometheus). The engine, the metrics and the HTTP limits live in
``app.state``; :class:`~.middleware.HTTPGate` sits in front of every route. Every error is
OpenAI-shaped JSON; nothing answers with a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import APIError, error_body
from .hf_engine import HFEngine
from .metrics import Metrics
from .middleware import HTTPGate, Protection
from .routes import ROUTERS


async def _api_error(_, exc: APIError):
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(_, exc: StarletteHTTPException):
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return JSONResponse(error_body(exc.status_code, str(exc.detail), type=kind), status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def _validation_error(_, exc: RequestValidationError):
    return JSONResponse(error_body(400, f"invalid request: {exc.errors()[:1]}"), status_code=400)


def create_app(engine: HFEngine, *, inversion_status: Callable[[], dict] | None = None,
               drain_timeout: float = 30.0, protection: Protection | None = None) -> FastAPI:
    """Build the app around a loaded engine. ``inversion_status`` feeds ``/metrics`` (deltainv.plugin.status)."""

    async def lifespan(app):
        yield
        # uvicorn has let the open requests finish (or the drain answered them 503); stop the worker.
        await asyncio.get_running_loop().run_in_executor(None, engine.drain, drain_timeout)

    app = FastAPI(title="deltainv", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    app.state.metrics = Metrics(engine, inversion_status)
    app.state.protection = protection or Protection()
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(HTTPGate, metrics=app.state.metrics, protection=app.state.protection)
    return app
