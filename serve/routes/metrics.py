"""``GET /metrics``: Prometheus text (open without the API key, as vLLM's)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..generation import metrics_of
from ..metrics import CONTENT_TYPE

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(metrics_of(request).render(), media_type=CONTENT_TYPE)
