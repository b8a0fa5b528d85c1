"""Typed async client of the BBS HTTP API.

Errors come back as the same typed classes the server raised (`control.models.errors`).
Requests that fail with 503 or a connection error are retried with backoff (a standby BBS is
taking over, or etcd is briefly away); other errors are raised at once. With a `locate`
function (e.g. `LockLocator`), the client asks where the active BBS is before each retry, so it
follows a failover by itself.

A retried write may have been applied before the connection broke; callers see the typed
outcome of the retry (e.g. ResourceExists for a desire that did land) and decide.
"""
from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from control.models.actual_lrp import ActualLRP
from control.models.cell import CellPresence
from control.models.desired_lrp import DesiredLRP, DesiredLRPUpdate
from control.models.domain import Domain
from control.models.errors import Unavailable, error_from_body
from control.models.task import Task, TaskDefinition


class BBSClient:
    def __init__(self, url: str, tls: ssl.SSLContext | None = None, timeout_s: float = 10.0,
                 retries: int = 5, backoff_s: float = 0.2,
                 locate: Callable[[], Awaitable[str | None]] | None = None) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, verify=tls if tls is not None else True,
                                       timeout=timeout_s)
        self.retries = retries
        self.backoff_s = backoff_s
        self.locate = locate

    async def _relocate(self) -> None:
        if self.locate is None:
            return
        try:
            url = await self.locate()
        except Exception:  # the coordination store is away too: keep the old address
            return
        if url and url.rstrip("/") != self.url:
            self.url = url.rstrip("/")
            self._http.base_url = httpx.URL(self.url)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "BBSClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                resp = await self._http.request(method, path, json=body, params=params)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectTimeout) as exc:
                if attempt == self.retries:
                    raise Unavailable(f"BBS at {self.url} is unreachable: {exc}") from exc
            else:
                if resp.status_code < 400:
                    return resp.json() if resp.content else None
                if resp.status_code != 503 or attempt == self.retries:
                    try:
                        payload = resp.json()
                    except ValueError:
                        payload = resp.text
                    raise error_from_body(resp.status_code, payload)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            await self._relocate()
        raise AssertionError("unreachable")

    # ---- ping, domains, cells ------------------------------------------------------------------
    async def ping(self) -> bool:
        return bool((await self._call("GET", "/v1/ping"))["available"])

    async def upsert_domain(self, domain: str, ttl: int = 0) -> Domain:
        return Domain.model_validate(await self._call("PUT", f"/v1/domains/{domain}", {"ttl": ttl}))

    async def domains(self) -> list[Domain]:
        return [Domain.model_validate(d) for d in await self._call("GET", "/v1/domains")]

    async def cells(self) -> list[CellPresence]:
        return [CellPresence.model_validate(c) for c in await self._call("GET", "/v1/cells")]

    # ---- desired LRPs --------------------------------------------------------------------------
    async def desire_lrp(self, desired: DesiredLRP | dict[str, Any]) -> DesiredLRP:
        body = desired.model_dump(mode="json", exclude_none=True) if isinstance(desired, DesiredLRP) else desired
        return DesiredLRP.model_validate(await self._call("POST", "/v1/desired_lrps", body))

    async def desired_lrps(self, domain: str | None = None) -> list[DesiredLRP]:
        return [DesiredLRP.model_validate(d) for d in await self._call("GET", "/v1/desired_lrps", params={"domain": domain})]

    async def desired_lrp(self, process_guid: str) -> DesiredLRP:
        return DesiredLRP.model_validate(await self._call("GET", f"/v1/desired_lrps/{process_guid}"))

    async def scheduling_infos(self, domain: str | None = None) -> list[dict[str, Any]]:
        return await self._call("GET", "/v1/scheduling_infos", params={"domain": domain})  # type: ignore[no-any-return]

    async def update_desired_lrp(self, process_guid: str, update: DesiredLRPUpdate | dict[str, Any]) -> DesiredLRP:
        body = update.model_dump(mode="json", exclude_none=True) if isinstance(update, DesiredLRPUpdate) else update
        return DesiredLRP.model_validate(await self._call("PATCH", f"/v1/desired_lrps/{process_guid}", body))

    async def remove_desired_lrp(self, process_guid: str) -> None:
        await self._call("DELETE", f"/v1/desired_lrps/{process_guid}")

    # ---- actual LRPs ---------------------------------------------------------------------------
    async def actual_lrps(self, domain: str | None = None, cell_id: str | None = None,
                          process_guid: str | None = None, index: int | None = None) -> list[ActualLRP]:
        raw = await self._call("GET", "/v1/actual_lrps", params={
            "domain": domain, "cell_id": cell_id, "process_guid": process_guid, "index": index})
        return [ActualLRP.model_validate(a) for a in raw]

    async def retire_actual_lrp(self, process_guid: str, index: int) -> None:
        await self._call("POST", f"/v1/actual_lrps/{process_guid}/{index}/retire")

    async def actual_lrp_call(self, process_guid: str, index: int, verb: str, body: dict[str, Any]) -> Any:
        """Cell and auctioneer calls: claim, start, crash, fail, remove, evacuate_*, remove_evacuating."""
        return await self._call("POST", f"/v1/actual_lrps/{process_guid}/{index}/{verb}", body)

    async def claim(self, process_guid: str, index: int, instance_guid: str, cell_id: str) -> None:
        await self.actual_lrp_call(process_guid, index, "claim", {"instance_guid": instance_guid, "cell_id": cell_id})

    async def start(self, process_guid: str, index: int, instance_guid: str, cell_id: str, address: str,
                    ports: list[dict[str, int]] | None = None, instance_address: str = "",
                    routable: bool | None = None) -> None:
        body: dict[str, Any] = {"instance_guid": instance_guid, "cell_id": cell_id, "address": address,
                                "ports": ports or [], "instance_address": instance_address}
        if routable is not None:
            body["routable"] = routable
        await self.actual_lrp_call(process_guid, index, "start", body)

    async def crash(self, process_guid: str, index: int, instance_guid: str, cell_id: str, error_message: str) -> None:
        await self.actual_lrp_call(process_guid, index, "crash", {
            "instance_guid": instance_guid, "cell_id": cell_id, "error_message": error_message})

    async def fail_actual_lrp(self, process_guid: str, index: int, error_message: str) -> None:
        await self.actual_lrp_call(process_guid, index, "fail", {"error_message": error_message})

    async def remove_actual_lrp(self, process_guid: str, index: int, instance_guid: str, cell_id: str) -> None:
        await self.actual_lrp_call(process_guid, index, "remove", {"instance_guid": instance_guid, "cell_id": cell_id})

    # ---- tasks ---------------------------------------------------------------------------------
    async def desire_task(self, task_guid: str, domain: str, definition: TaskDefinition | dict[str, Any]) -> Task:
        d = definition.model_dump(mode="json", exclude_none=True) if isinstance(definition, TaskDefinition) else definition
        return Task.model_validate(await self._call("POST", "/v1/tasks", {
            "task_guid": task_guid, "domain": domain, "task_definition": d}))

    async def tasks(self, domain: str | None = None, cell_id: str | None = None) -> list[Task]:
        return [Task.model_validate(t) for t in await self._call("GET", "/v1/tasks", params={"domain": domain, "cell_id": cell_id})]

    async def task(self, task_guid: str) -> Task:
        return Task.model_validate(await self._call("GET", f"/v1/tasks/{task_guid}"))

    async def task_call(self, task_guid: str, verb: str, body: dict[str, Any] | None = None) -> Any:
        """start, complete, fail, reject, cancel, resolving."""
        return await self._call("POST", f"/v1/tasks/{task_guid}/{verb}", body)

    async def start_task(self, task_guid: str, cell_id: str) -> bool:
        return bool((await self.task_call(task_guid, "start", {"cell_id": cell_id}))["should_start"])

    async def complete_task(self, task_guid: str, cell_id: str, failed: bool = False,
                            failure_reason: str = "", result: str = "") -> Task:
        return Task.model_validate(await self.task_call(task_guid, "complete", {
            "cell_id": cell_id, "failed": failed, "failure_reason": failure_reason, "result": result}))

    async def cancel_task(self, task_guid: str) -> Task:
        return Task.model_validate(await self.task_call(task_guid, "cancel"))

    async def delete_task(self, task_guid: str) -> None:
        await self._call("DELETE", f"/v1/tasks/{task_guid}")

    # ---- events --------------------------------------------------------------------------------
    async def events(self, stream: str = "lrp", cell_id: str | None = None) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Yield (event name, payload) from an SSE stream: "lrp", "tasks" or "instances"."""
        path = {"lrp": "/v1/events", "tasks": "/v1/events/tasks", "instances": "/v1/events/instances"}[stream]
        params = {"cell_id": cell_id} if cell_id else None
        async with self._http.stream("GET", path, params=params, timeout=httpx.Timeout(10.0, read=None)) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                raise error_from_body(resp.status_code, resp.json())
            name, data = "", []
            async for line in resp.aiter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and name:
                    yield name, json.loads("\n".join(data))
                    name, data = "", []
