"""The auctioneer's HTTP API (reference §4.1): `POST /v1/lrps/auctions` and `POST /v1/tasks/auctions`
take JSON arrays of start requests and answer 202 once queued (results go to the BBS); `/ping`,
`/metrics`. A malformed request is refused whole (422 with every problem listed): nothing of it
is queued."""
from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Body, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from control.kit import api_errors
from control.kit.asgi_limits import BodyLimit
from control.models.auction import LRPStartRequest, TaskStartRequest

from .batch import Batch

MAX_REQUESTS = 100_000


def create_app(batch: Batch, max_request_bytes: int, extra_metrics: Callable[[], str] = lambda: "") -> Any:
    app = FastAPI(title="pydiego auctioneer", version="1", docs_url="/docs", openapi_url="/openapi.json")
    api_errors.install(app)
    registry = CollectorRegistry()
    received = Counter("auctioneer_requests_total", "start requests received", ["kind"], registry=registry)

    @app.get("/ping", include_in_schema=False)
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/v1/lrps/auctions", status_code=202)
    async def lrps(body: Annotated[list[LRPStartRequest], Body(max_length=MAX_REQUESTS)]) -> Response:
        batch.add_lrps(body)
        received.labels("lrp").inc(sum(len(r.indices) for r in body))
        return Response(status_code=202)

    @app.post("/v1/tasks/auctions", status_code=202)
    async def tasks(body: Annotated[list[TaskStartRequest], Body(max_length=MAX_REQUESTS)]) -> Response:
        batch.add_tasks(body)
        received.labels("task").inc(len(body))
        return Response(status_code=202)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry) + extra_metrics().encode(), media_type=CONTENT_TYPE_LATEST)

    return BodyLimit(app, max_request_bytes)
