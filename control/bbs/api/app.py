"""The FastAPI application: routes, error mapping, body limit, /ping and /metrics."""
from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from . import errors, routes
from .deps import Services
from .limits import BodyLimit


def create_app(svc: Services, max_request_bytes: int) -> Any:
    app = FastAPI(title="pydiego BBS", version="1", docs_url="/docs", openapi_url="/openapi.json")
    errors.install(app)
    app.include_router(routes.build(svc))
    registry = CollectorRegistry()
    requests = Counter("bbs_requests_total", "BBS API requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("bbs_request_seconds", "BBS API latency", ["route"], registry=registry)

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Any:
        start = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        requests.labels(request.method, route, str(response.status_code)).inc()
        latency.labels(route).observe(time.perf_counter() - start)
        return response

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
