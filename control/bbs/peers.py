"""The BBS's view of the processes it calls: the auctioneer, the reps, and the cell registry.

Declared as small Protocols next to their consumer (the controllers); the HTTP
implementations live here too. Calls to peers are best effort: a failed auction request is
logged and left to convergence to re-send (reference §2.7, §5.2), exactly as Diego does.
"""
from __future__ import annotations

import ssl
from typing import Protocol

import httpx
import structlog

from control.coordination.base import Coordinator
from control.models.auction import LRPStartRequest, TaskStartRequest
from control.models.cell import CellPresence


log = structlog.get_logger("bbs.peers")


class AuctioneerClient(Protocol):
    async def request_lrp_auctions(self, requests: list[LRPStartRequest]) -> None: ...

    async def request_task_auctions(self, requests: list[TaskStartRequest]) -> None: ...


class RepClient(Protocol):
    async def stop_lrp_instance(self, cell: CellPresence, process_guid: str, instance_guid: str) -> None: ...

    async def cancel_task(self, cell: CellPresence, task_guid: str) -> None: ...


class CellDirectory(Protocol):
    async def cells(self) -> list[CellPresence]: ...

    async def cell(self, cell_id: str) -> CellPresence | None: ...


class NullAuctioneer:
    """Used when no auctioneer is configured (before the auctioneer joins the cluster):
    requests are logged, and convergence re-sends them once an auctioneer exists."""

    async def request_lrp_auctions(self, requests: list[LRPStartRequest]) -> None:
        log.info("auction-request-dropped", kind="lrp", count=len(requests), reason="no auctioneer configured")

    async def request_task_auctions(self, requests: list[TaskStartRequest]) -> None:
        log.info("auction-request-dropped", kind="task", count=len(requests), reason="no auctioneer configured")


class PooledClient:
    """One lazily made httpx client per peer kind (a TLS handshake per call costs milliseconds)."""

    def __init__(self, tls: ssl.SSLContext | None, timeout_s: float) -> None:
        self._tls = tls
        self._timeout = timeout_s
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(verify=self._tls or True, timeout=self._timeout)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class HTTPAuctioneer(PooledClient):
    def __init__(self, url: str, tls: ssl.SSLContext | None, timeout_s: float = 10.0) -> None:
        super().__init__(tls, timeout_s)
        self._url = url.rstrip("/")

    async def _post(self, path: str, body: list[dict[str, object]]) -> None:
        try:
            resp = await self.client.post(self._url + path, json=body)
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("auction-request-failed", path=path, count=len(body), error=str(exc))

    async def request_lrp_auctions(self, requests: list[LRPStartRequest]) -> None:
        await self._post("/v1/lrps/auctions", [r.model_dump(mode="json") for r in requests])

    async def request_task_auctions(self, requests: list[TaskStartRequest]) -> None:
        await self._post("/v1/tasks/auctions", [r.model_dump(mode="json") for r in requests])


class LocatingAuctioneer(HTTPAuctioneer):
    """The active auctioneer, found through its `auctioneer` lock (the value holds its address,
    reference §4.1: only the lock holder serves). The address is cached and looked up again
    after a failed request; with no holder the request is dropped (convergence re-sends)."""

    def __init__(self, coordinator: Coordinator, tls: ssl.SSLContext | None, timeout_s: float = 10.0,
                 lock: str = "auctioneer") -> None:
        super().__init__("", tls, timeout_s)
        self._coordinator = coordinator
        self._lock = lock

    async def _locate(self) -> str:
        try:
            info = await self._coordinator.holder(self._lock)
        except Exception as exc:  # the coordination store is away
            log.warning("auctioneer-locate-failed", error=str(exc))
            return ""
        address = info.doc.get("address") if info else None
        return str(address).rstrip("/") if address else ""

    async def _post(self, path: str, body: list[dict[str, object]]) -> None:
        for attempt in range(2):
            if not self._url or attempt:
                self._url = await self._locate()
            if not self._url:
                log.info("auction-request-dropped", path=path, count=len(body), reason="no active auctioneer")
                return
            try:
                resp = await self.client.post(self._url + path, json=body)
                resp.raise_for_status()
                return
            except httpx.HTTPError as exc:
                log.warning("auction-request-failed", path=path, count=len(body), url=self._url, error=str(exc))


class HTTPRepClient(PooledClient):
    """Stop and cancel calls to reps, over one connection pool (a TLS handshake per call made
    removing an LRP with hundreds of instances take seconds)."""

    def __init__(self, tls: ssl.SSLContext | None, timeout_s: float = 10.0) -> None:
        super().__init__(tls, timeout_s)

    async def _post(self, cell: CellPresence, path: str) -> None:
        base = (cell.rep_url or f"http://{cell.rep_address}").rstrip("/")
        resp = await self.client.post(base + path)
        resp.raise_for_status()

    async def stop_lrp_instance(self, cell: CellPresence, process_guid: str, instance_guid: str) -> None:
        await self._post(cell, f"/v1/lrps/{process_guid}/instances/{instance_guid}/stop")

    async def cancel_task(self, cell: CellPresence, task_guid: str) -> None:
        await self._post(cell, f"/v1/tasks/{task_guid}/cancel")


class PresenceCellDirectory:
    """Cells are the presences the coordination layer holds (Consul or etcd)."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator

    async def cells(self) -> list[CellPresence]:
        out = []
        for key, value in (await self._coordinator.presences()).items():
            try:
                out.append(CellPresence.model_validate_json(value))
            except ValueError:
                log.warning("invalid-cell-presence", key=key)
        return out

    async def cell(self, cell_id: str) -> CellPresence | None:
        for cell in await self.cells():
            if cell.cell_id == cell_id:
                return cell
        return None
