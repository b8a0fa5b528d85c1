"""The FastAPI application: routes, error mapping, body limit, /ping and /metrics."""
from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from control.kit import api_errors as errors

from . import routes
from .deps import Services
from control.kit.asgi_limits import BodyLimit


def create_app(svc: Services, max_request_bytes: int) -> Any:
    app = FastAPI(title="pydiego BBS", version="1", docs_url="/docs", openapi_url="/openapi.json")
    errors.install(app)
    app.include_router(routes.build(svc))
    registry = CollectorRegistry()
    requests = Counter("bbs_requests_total", "BBS API requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("bbs_request_seconds", "BBS API latency", ["route"], registry=registry)

    class Measure:
        """Plain ASGI (not BaseHTTPMiddleware, which costs a task group per request and
        re-streams every response): count requests by route and status, time them."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await self.inner(scope, receive, send)
                return
            start, status = time.perf_counter(), [500]

            async def capture(message: Any) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)
            try:
                await self.inner(scope, receive, capture)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")
                requests.labels(scope["method"], route, str(status[0])).inc()
                latency.labels(route).observe(time.perf_counter() - start)

    app.add_middleware(Measure)

    @app.get("/ping", include_in_schema=False)
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body = generate_latest(registry) + (
            f"bbs_event_subscribers {len(svc.hub.subscribers)}\n"
            f"bbs_events_delivered_total {svc.hub.delivered}\n").encode()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return BodyLimit(app, max_request_bytes), app
