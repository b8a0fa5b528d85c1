"""BBS routes (pinned by issue #2; later components and acceptance checks depend on them).

Handlers only translate HTTP to controller calls. List endpoints return the stored JSON
documents as they are (they are already the wire form), which keeps 100k-instance lists fast.
"""
from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from control.models.actual_lrp import (ClaimRequest, CrashRequest, FailRequest, InstanceKey,
                                       KeepContainer, RemoveRequest, StartRequest)
from control.models.base import GUID_PATTERN
from control.models.desired_lrp import DesiredLRP, DesiredLRPUpdate
from control.models.domain import Domain, DomainUpsert
from control.models.task import (CompleteTaskRequest, DesireTaskRequest, StartTaskRequest,
                                 StartTaskResponse, Task, TaskErrorRequest)

from ..events.hub import Stream
from .deps import Services

GuidPath = Annotated[str, Path(pattern=GUID_PATTERN, max_length=255)]
IndexPath = Annotated[int, Path(ge=0, le=1_000_000)]
DomainPath = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[^/\s]+$")]
OptGuid = Annotated[str | None, Query(pattern=GUID_PATTERN, max_length=255)]
OptText = Annotated[str | None, Query(max_length=255)]


def raw_list(items: list[bytes]) -> Response:
    """A JSON array of stored documents, built with one join (a 100k list is ~40 MB)."""
    if len(items) <= 1:
        return Response(b"[" + b"".join(items) + b"]", media_type="application/json")
    items = list(items)
    items[0], items[-1] = b"[" + items[0], items[-1] + b"]"
    return Response(b",".join(items), media_type="application/json")


def model(obj: Any, status: int = 200) -> Response:
    return Response(obj.model_dump_json(exclude_none=True), status_code=status, media_type="application/json")


def build(svc: Services) -> APIRouter:
    r = APIRouter()
    lrps, tasks = svc.lrps, svc.tasks

    @r.get("/v1/ping", tags=["ping"])
    async def ping() -> dict[str, bool]:
        return {"available": True}

    # ---- domains ---------------------------------------------------------------------------
    @r.put("/v1/domains/{domain}", tags=["domains"], response_model=Domain)
    async def upsert_domain(domain: DomainPath, body: DomainUpsert) -> Response:
        return model(await svc.domains.upsert(domain, body.ttl, svc.clock.now_ns()))

    @r.get("/v1/domains", tags=["domains"], response_model=list[Domain])
    async def list_domains() -> Response:
        return raw_list([d.to_json() for d in await svc.domains.fresh()])

    # ---- desired LRPs ----------------------------------------------------------------------
    @r.post("/v1/desired_lrps", status_code=201, tags=["desired_lrps"], response_model=DesiredLRP)
    async def desire_lrp(body: DesiredLRP) -> Response:
        return model(await lrps.desire(body), 201)

    @r.get("/v1/desired_lrps", tags=["desired_lrps"], response_model=list[DesiredLRP])
    async def list_desired(domain: OptText = None) -> Response:
        return raw_list([d.to_json() for d in await lrps.store.list_desired(domain)])

    @r.get("/v1/desired_lrps/{process_guid}", tags=["desired_lrps"], response_model=DesiredLRP)
    async def get_desired(process_guid: GuidPath) -> Response:
        return model(await lrps.store.get_desired(process_guid))

    @r.get("/v1/scheduling_infos", tags=["desired_lrps"])
    async def list_scheduling_infos(domain: OptText = None) -> Response:
        return raw_list(await lrps.store.list_scheduling_info_json(domain))

    @r.patch("/v1/desired_lrps/{process_guid}", tags=["desired_lrps"], response_model=DesiredLRP)
    async def update_desired(process_guid: GuidPath, body: DesiredLRPUpdate) -> Response:
        _, after = await lrps.update(process_guid, body)
        return model(after)

    @r.delete("/v1/desired_lrps/{process_guid}", status_code=204, tags=["desired_lrps"])
    async def remove_desired(process_guid: GuidPath) -> Response:
        await lrps.remove(process_guid)
        return Response(status_code=204)

    # ---- actual LRPs -----------------------------------------------------------------------
    @r.get("/v1/actual_lrps", tags=["actual_lrps"])
    async def list_actual(domain: OptText = None, cell_id: OptText = None, process_guid: OptGuid = None,
                          index: Annotated[int | None, Query(ge=0)] = None) -> Response:
        return raw_list(await lrps.store.list_actual_json(domain=domain, cell_id=cell_id,
                                                          process_guid=process_guid, index=index))

    @r.post("/v1/actual_lrps/{process_guid}/{index}/retire", status_code=204, tags=["actual_lrps"])
    async def retire(process_guid: GuidPath, index: IndexPath) -> Response:
        await lrps.retire(process_guid, index)
        return Response(status_code=204)

    @r.post("/v1/actual_lrps/{process_guid}/{index}/claim", status_code=204, tags=["cells"])
    async def claim(process_guid: GuidPath, index: IndexPath, body: ClaimRequest) -> Response:
        await lrps.claim(process_guid, index, InstanceKey(**body.model_dump()))
        return Response(status_code=204)

    @r.post("/v1/actual_lrps/{process_guid}/{index}/start", status_code=204, tags=["cells"])
    async def start(process_guid: GuidPath, index: IndexPath, body: StartRequest) -> Response:
        await lrps.start(process_guid, index, body)
        return Response(status_code=204)

    @r.post("/v1/actual_lrps/{process_guid}/{index}/crash", status_code=204, tags=["cells"])
    async def crash(process_guid: GuidPath, index: IndexPath, body: CrashRequest) -> Response:
        await lrps.crash(process_guid, index, body)
        return Response(status_code=204)

    @r.post("/v1/actual_lrps/{process_guid}/{index}/fail", status_code=204, tags=["cells"])
    async def fail(process_guid: GuidPath, index: IndexPath, body: FailRequest) -> Response:
        await lrps.fail(process_guid, index, body.error_message)
        return Response(status_code=204)

    @r.post("/v1/actual_lrps/{process_guid}/{index}/remove", status_code=204, tags=["cells"])
    async def remove(process_guid: GuidPath, index: IndexPath, body: RemoveRequest) -> Response:
        await lrps.remove_actual(process_guid, index, InstanceKey(**body.model_dump()))
        return Response(status_code=204)

    @r.post("/v1/actual_lrps/{process_guid}/{index}/evacuate_claimed", tags=["evacuation"], response_model=KeepContainer)
    async def evacuate_claimed(process_guid: GuidPath, index: IndexPath, body: ClaimRequest) -> Response:
        keep = await lrps.evacuate_claimed(process_guid, index, InstanceKey(**body.model_dump()))
        return model(KeepContainer(keep_container=keep))

    @r.post("/v1/actual_lrps/{process_guid}/{index}/evacuate_running", tags=["evacuation"], response_model=KeepContainer)
    async def evacuate_running(process_guid: GuidPath, index: IndexPath, body: StartRequest) -> Response:
        return model(KeepContainer(keep_container=await lrps.evacuate_running(process_guid, index, body)))

    @r.post("/v1/actual_lrps/{process_guid}/{index}/evacuate_stopped", tags=["evacuation"], response_model=KeepContainer)
    async def evacuate_stopped(process_guid: GuidPath, index: IndexPath, body: ClaimRequest) -> Response:
        keep = await lrps.evacuate_stopped(process_guid, index, InstanceKey(**body.model_dump()))
        return model(KeepContainer(keep_container=keep))

    @r.post("/v1/actual_lrps/{process_guid}/{index}/evacuate_crashed", tags=["evacuation"], response_model=KeepContainer)
    async def evacuate_crashed(process_guid: GuidPath, index: IndexPath, body: CrashRequest) -> Response:
        return model(KeepContainer(keep_container=await lrps.evacuate_crashed(process_guid, index, body)))

    @r.post("/v1/actual_lrps/{process_guid}/{index}/remove_evacuating", status_code=204, tags=["evacuation"])
    async def remove_evacuating(process_guid: GuidPath, index: IndexPath, body: ClaimRequest) -> Response:
        await lrps.remove_evacuating(process_guid, index, InstanceKey(**body.model_dump()))
        return Response(status_code=204)

    # ---- tasks -----------------------------------------------------------------------------
    @r.post("/v1/tasks", status_code=201, tags=["tasks"], response_model=Task)
    async def desire_task(body: DesireTaskRequest) -> Response:
        return model(await tasks.desire(body), 201)

    @r.get("/v1/tasks", tags=["tasks"], response_model=list[Task])
    async def list_tasks(domain: OptText = None, cell_id: OptText = None) -> Response:
        return raw_list(await tasks.store.list_json(domain=domain, cell_id=cell_id))

    @r.get("/v1/tasks/{task_guid}", tags=["tasks"], response_model=Task)
    async def get_task(task_guid: GuidPath) -> Response:
        return model(await tasks.store.get(task_guid))

    @r.post("/v1/tasks/{task_guid}/start", tags=["tasks"], response_model=StartTaskResponse)
    async def start_task(task_guid: GuidPath, body: StartTaskRequest) -> Response:
        return model(StartTaskResponse(should_start=await tasks.start(task_guid, body.cell_id)))

    @r.post("/v1/tasks/{task_guid}/complete", tags=["tasks"], response_model=Task)
    async def complete_task(task_guid: GuidPath, body: CompleteTaskRequest) -> Response:
        return model(await tasks.complete(task_guid, body))

    @r.post("/v1/tasks/{task_guid}/fail", tags=["tasks"], response_model=Task)
    async def fail_task(task_guid: GuidPath, body: TaskErrorRequest) -> Response:
        return model(await tasks.fail(task_guid, body.error_message))

    @r.post("/v1/tasks/{task_guid}/reject", tags=["tasks"], response_model=Task)
    async def reject_task(task_guid: GuidPath, body: TaskErrorRequest) -> Response:
        return model(await tasks.reject(task_guid, body.error_message))

    @r.post("/v1/tasks/{task_guid}/cancel", tags=["tasks"], response_model=Task)
    async def cancel_task(task_guid: GuidPath) -> Response:
        return model(await tasks.cancel(task_guid))

    @r.post("/v1/tasks/{task_guid}/resolving", tags=["tasks"], response_model=Task)
    async def resolving_task(task_guid: GuidPath) -> Response:
        return model(await tasks.resolving(task_guid))

    @r.delete("/v1/tasks/{task_guid}", status_code=204, tags=["tasks"])
    async def delete_task(task_guid: GuidPath) -> Response:
        await tasks.delete(task_guid)
        return Response(status_code=204)

    # ---- cells -----------------------------------------------------------------------------
    @r.get("/v1/cells", tags=["cells"])
    async def cells() -> Response:
        return raw_list([c.to_json() for c in await svc.cells.cells()])

    # ---- events ----------------------------------------------------------------------------
    def sse(request: Request, stream: Stream, cell_id: str = "") -> StreamingResponse:
        sub = svc.hub.subscribe(stream, cell_id)

        async def body() -> Any:
            n = 0
            try:
                yield b": subscribed\n\n"  # lets clients know the subscription is live
                while True:
                    event = await sub.next()
                    if event is None:
                        return  # dropped as a slow consumer, or the BBS is stopping
                    n += 1
                    kind, payload = event
                    yield f"id: {n}\nevent: {kind.value}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()
            finally:
                svc.hub.unsubscribe(sub)

        return StreamingResponse(body(), media_type="text/event-stream; charset=utf-8",
                                 headers={"Cache-Control": "no-cache"})

    @r.get("/v1/events", tags=["events"])
    async def lrp_events(request: Request) -> StreamingResponse:
        return sse(request, Stream.LRP)

    @r.get("/v1/events/tasks", tags=["events"])
    async def task_events(request: Request) -> StreamingResponse:
        return sse(request, Stream.TASK)

    @r.get("/v1/events/instances", tags=["events"])
    async def instance_events(request: Request, cell_id: OptText = None) -> StreamingResponse:
        return sse(request, Stream.INSTANCE, cell_id or "")

    return r
