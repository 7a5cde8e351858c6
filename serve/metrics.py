"""Prometheus metrics of the embedded server: one :class:`Metrics` per application (``app.state.metrics``).

``deltainv_http_requests_total{endpoint,status}`` counts every request once, with the status the
client received; a request whose client left before any response was sent is filed under
``status="499"`` (nginx's "client closed request") and also counted in
``deltainv_client_disconnects_total{endpoint,phase}`` (``before_response`` or ``during_response``,
the latter for streams cut by their client), so a server error is never mistaken for a client
leaving, nor the other way round.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, ProcessCollector,
                               generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

#: Paths with their own label; everything else is ``other`` (unbounded label values would leak memory).
ENDPOINTS = ("/v1/models", "/v1/completions", "/v1/chat/completions", "/health", "/metrics", "/tokenizer_info",
             "/tokenize", "/detokenize")
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _EngineCollector:
    """Scrape-time metrics: queue state, engine counters and deltainv's inversion status."""

    def __init__(self, engine, inversion_status: Callable[[], dict] | None):
        self.engine, self.inversion_status = engine, inversion_status

    def collect(self):
        waiting, active = self.engine.load
        g = GaugeMetricFamily("deltainv_queue_requests", "Jobs waiting for or holding a worker slot", labels=["state"])
        g.add_metric(["waiting"], waiting)
        g.add_metric(["active"], active)
        yield g
        c = CounterMetricFamily("deltainv_engine_jobs", "Jobs the engine ended abnormally", labels=["outcome"])
        for outcome in ("cancelled", "rejected", "failed", "aborted"):
            c.add_metric([outcome], self.engine.stats[outcome])
        yield c
        status = self.inversion_status() if self.inversion_status else None
        if status is not None:
            info = GaugeMetricFamily("deltainv_inversion_info", "Active deltainv inversion (1 when patched)",
                                     labels=["method", "precision"])
            info.add_metric([str(status.get("method")), str(status.get("precision"))], 1 if status.get("active") else 0)
            yield info
            fb = CounterMetricFamily("deltainv_inversion_fallbacks", "Calls recomputed by the non-finite guard")
            fb.add_metric([], float(status.get("fallbacks", 0)))
            yield fb


class Metrics:
    """The registry and the instruments the middleware and the handlers update."""

    def __init__(self, engine=None, inversion_status: Callable[[], dict] | None = None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("deltainv_http_requests", "HTTP requests by the status the client received "
                                "(499: the client left before any response)", ["endpoint", "status"], registry=r)
        self.disconnects = Counter("deltainv_client_disconnects", "Requests whose client left before the response "
                                   "ended", ["endpoint", "phase"], registry=r)
        self.latency = Histogram("deltainv_request_duration_seconds", "Request latency", ["endpoint"], registry=r,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.ttft = Histogram("deltainv_time_to_first_token_seconds", "Time to first generated token", registry=r,
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.tokens = Counter("deltainv_tokens", "Tokens processed", ["kind"], registry=r)
        ProcessCollector(registry=r)  # process_resident_memory_bytes etc. (the soak test reads them)
        if engine is not None:
            r.register(_EngineCollector(engine, inversion_status))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    @staticmethod
    def endpoint(path: str) -> str:
        return path if path in ENDPOINTS else "other"
