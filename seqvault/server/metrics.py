"""Prometheus metrics and the ASGI middleware that records them.

Names follow the Prometheus conventions (`_total` counters, `_seconds` and `_bytes` units):

- ``seqvault_http_requests_total{endpoint,method,status}``
- ``seqvault_http_request_duration_seconds{endpoint}`` (histogram)
- ``seqvault_http_response_bytes_total{endpoint}`` — body bytes sent (after compression)
- ``seqvault_http_sequence_events{endpoint,format}`` (histogram) — events per sequence served
- ``seqvault_http_sequences_served_total{format}``
- ``seqvault_store_ready`` (gauge, 1 when the store is open)

`endpoint` is the route template (``/users/{user_id}/sequence``), never the raw path, so the
label set stays small. Each app has its own registry (tests create many apps). With several
uvicorn workers, `seqvault serve` sets ``PROMETHEUS_MULTIPROC_DIR`` and /metrics aggregates
every worker (prometheus-client multiprocess mode).
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256,
                   0.512, 1.0, 2.0, 4.0)
LENGTH_BUCKETS = (0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("seqvault_http_requests_total", "HTTP requests answered",
                                ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram("seqvault_http_request_duration_seconds",
                                 "Time from request start to the last body byte sent",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.bytes_out = Counter("seqvault_http_response_bytes_total",
                                 "Response body bytes sent (after compression)", ["endpoint"],
                                 registry=r)
        self.seq_events = Histogram("seqvault_http_sequence_events",
                                    "Events per sequence served", ["endpoint", "format"],
                                    buckets=LENGTH_BUCKETS, registry=r)
        self.sequences = Counter("seqvault_http_sequences_served_total",
                                 "Sequences served (one per user)", ["format"], registry=r)
        self.ready = Gauge("seqvault_store_ready", "1 when the store is open and recovered",
                           registry=r, multiprocess_mode="livemin")

    def served(self, endpoint: str, fmt: str, lengths: list[int]) -> None:
        h = self.seq_events.labels(endpoint, fmt)
        for n in lengths:
            h.observe(n)
        self.sequences.labels(fmt).inc(len(lengths))

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware overhead): counts, latency, bytes out."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        sent = 0

        async def send_wrapper(message: Any) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # path_format drops convertors ("{user_id:path}" -> "{user_id}")
            endpoint = (getattr(route, "path_format", None) or getattr(route, "path", None)
                        or "unmatched")
            m = self.metrics
            m.requests.labels(endpoint, scope.get("method", ""), str(status)).inc()
            m.latency.labels(endpoint).observe(time.perf_counter() - start)
            m.bytes_out.labels(endpoint).inc(sent)
