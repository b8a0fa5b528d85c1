"""The rep's HTTP APIs (reference §6.1).

Cell API (mTLS): GET /state, POST /work, POST /v1/lrps/{process_guid}/instances/{instance_guid}/stop,
POST /v1/tasks/{task_guid}/cancel, GET /v1/containers/{guid}/logs (NDJSON lines; ?follow=true keeps
streaming until the container is deleted), GET /ping, GET /metrics.
Admin API (loopback only): GET /ping, POST /evacuate -> 202 {"ping_path": "/ping"}.
Errors are typed bodies `{"type", "message"}` with real statuses, as in the BBS.
"""
from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from control.kit import api_errors
from control.kit.asgi_limits import BodyLimit
from control.models.base import GUID_PATTERN
from control.models.errors import Forbidden, NotFound

from agents.executor.api import ContainerNotFound, ExecutorAPI

from .cell import CellRep
from control.models.rep import CellState, EvacuateAnswer, Work

GuidPath = Annotated[str, Path(pattern=GUID_PATTERN, max_length=255)]


def create_cell_app(cell: CellRep, executor: ExecutorAPI, max_request_bytes: int,
                    extra_metrics: Callable[[], str] = lambda: "") -> Any:
    app = FastAPI(title="pydiego rep", version="1", docs_url="/docs", openapi_url="/openapi.json")
    api_errors.install(app)
    registry = CollectorRegistry()
    work_items = Counter("rep_work_items_total", "work items received by /work", ["kind", "outcome"], registry=registry)

    @app.get("/ping", include_in_schema=False)
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/state", response_model=CellState)
    async def state() -> CellState:
        return cell.state()

    @app.post("/work", response_model=Work)
    async def work(body: Work) -> Work:
        failed = await cell.perform(body)
        work_items.labels("lrp", "taken").inc(len(body.lrps) - len(failed.lrps))
        work_items.labels("lrp", "refused").inc(len(failed.lrps))
        work_items.labels("task", "taken").inc(len(body.tasks) - len(failed.tasks))
        work_items.labels("task", "refused").inc(len(failed.tasks))
        return failed

    @app.post("/v1/lrps/{process_guid}/instances/{instance_guid}/stop", status_code=202)
    async def stop(process_guid: GuidPath, instance_guid: GuidPath) -> Response:
        await cell.stop_lrp(process_guid, instance_guid)
        return Response(status_code=202)

    @app.post("/v1/tasks/{task_guid}/cancel", status_code=202)
    async def cancel(task_guid: GuidPath) -> Response:
        await cell.cancel_task(task_guid)
        return Response(status_code=202)

    @app.get("/v1/containers/{guid}/logs")
    async def logs(guid: GuidPath, follow: bool = False,
                   tail: Annotated[int, Query(ge=0, le=100_000)] = 100) -> StreamingResponse:
        try:
            executor.get(guid)
        except ContainerNotFound:
            raise NotFound(f"container {guid} is not on this cell") from None

        async def lines() -> AsyncIterator[bytes]:
            try:
                async for line in executor.logs(guid, follow=follow, tail=tail):
                    yield line.model_dump_json().encode() + b"\n"
            except ContainerNotFound:
                return
        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry) + extra_metrics().encode(), media_type=CONTENT_TYPE_LATEST)

    return BodyLimit(app, max_request_bytes)


def create_admin_app(start_evacuation: Callable[[], None]) -> Any:
    app = FastAPI(title="pydiego rep admin", version="1", docs_url=None, openapi_url=None)
    api_errors.install(app)

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/evacuate", status_code=202, response_model=EvacuateAnswer)
    async def evacuate(request: Request) -> EvacuateAnswer:
        host = request.client.host if request.client else ""
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise Forbidden("the admin API answers loopback clients only")
        start_evacuation()
        return EvacuateAnswer()

    return BodyLimit(app, 64 * 1024)
