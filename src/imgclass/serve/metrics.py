"""Prometheus metrics of the server (``GET /metrics``), in a registry of its own per app."""
from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .batcher import MicroBatcher

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Requests by route and status, request latency, batch sizes and engine time, images by
    result, and the queue (read live from the batcher).

    Example:
        >>> metrics = Metrics(batcher)  # doctest: +SKIP
        >>> body, content_type = metrics.exposition()  # doctest: +SKIP
    """

    def __init__(self, batcher: MicroBatcher):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("imgclass_requests", "HTTP requests, by route and status code",
                                ["route", "status"], registry=registry)
        self.latency = Histogram("imgclass_request_seconds", "HTTP request latency, by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_size = Histogram("imgclass_batch_size", "images per engine batch", buckets=BATCH_BUCKETS,
                                    registry=registry)
        self.batch_seconds = Histogram("imgclass_batch_seconds", "engine time per batch", buckets=LATENCY_BUCKETS,
                                       registry=registry)
        self.images = Counter("imgclass_images", "images received, by result (ok, or error: not decodable)",
                              ["result"], registry=registry)
        Gauge("imgclass_queue_depth", "images waiting for an engine", registry=registry).set_function(
            lambda: batcher.queued)
        Gauge("imgclass_images_in_flight", "images admitted and not yet answered (at most --max-queue)",
              registry=registry).set_function(lambda: batcher.in_flight)

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text format Prometheus scrapes, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every HTTP request, labelled by its route's path template (not the raw
    path, which would make a series per URL)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
