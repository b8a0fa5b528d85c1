"""The cells as the auction sees them: fetch `/state` from every live cell in parallel, turn
each answer into a CellSnapshot for the pure scheduler, and post `/work` (reference §4.1, §4.7).

A cell that errors, times out, answers garbage (not a CellState), reports another cell id or
`evacuating` is skipped for this batch; the others are unaffected (each fetch has its own
timeout, so one bad cell costs at most `cell_state_timeout`, never a failed batch).
"""
from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Protocol

import httpx
import structlog
from pydantic import ValidationError

from control.models.cell import CellPresence
from control.models.rep import CellState, Work

from .placement import CellSnapshot

log = structlog.get_logger("auctioneer.cells")
FIXED_SET_PROVIDERS = ("preloaded", "preloaded+layer")


class CellClient(Protocol):
    async def state(self, cell: CellPresence) -> CellState: ...

    async def perform(self, cell: CellPresence, work: Work) -> Work: ...


class HTTPCellClient:
    """mTLS client of the reps' cell API; one connection pool for all cells."""

    def __init__(self, tls: ssl.SSLContext | None, state_timeout: float, work_timeout: float) -> None:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        self._http = httpx.AsyncClient(verify=tls if tls is not None else True, limits=limits)
        self._state_timeout = state_timeout
        self._work_timeout = work_timeout

    @staticmethod
    def _base(cell: CellPresence) -> str:
        return (cell.rep_url or f"http://{cell.rep_address}").rstrip("/")

    async def state(self, cell: CellPresence) -> CellState:
        resp = await self._http.get(self._base(cell) + "/state", timeout=self._state_timeout)
        resp.raise_for_status()
        return CellState.model_validate_json(resp.content)

    async def perform(self, cell: CellPresence, work: Work) -> Work:
        resp = await self._http.post(self._base(cell) + "/work", content=work.to_json(),
                                     headers={"content-type": "application/json"}, timeout=self._work_timeout)
        resp.raise_for_status()
        return Work.model_validate_json(resp.content)

    async def aclose(self) -> None:
        await self._http.aclose()


@dataclass
class FetchedCell:
    presence: CellPresence
    state: CellState


MAX_IN_FLIGHT = 64  # concurrent requests to cells: httpx's pool scans every connection per request


async def fetch_states(client: CellClient, cells: list[CellPresence], timeout: float) -> list[FetchedCell]:
    """Every cell's state, at most MAX_IN_FLIGHT at a time; each fetch has its own timeout."""
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def one(cell: CellPresence) -> FetchedCell | None:
        try:
            async with gate:
                state = await asyncio.wait_for(client.state(cell), timeout)
        except (httpx.HTTPError, ValidationError, ValueError, asyncio.TimeoutError, OSError) as exc:
            log.warning("cell-state-failed", cell_id=cell.cell_id, error=repr(exc)[:300])
            return None
        if state.cell_id != cell.cell_id:
            log.warning("cell-state-mismatch", cell_id=cell.cell_id, reported=state.cell_id)
            return None
        if state.evacuating:
            log.info("cell-evacuating-skipped", cell_id=cell.cell_id)
            return None
        return FetchedCell(cell, state)

    results = await asyncio.gather(*(one(c) for c in cells))
    return [r for r in results if r is not None]


def snapshot(fetched: FetchedCell) -> CellSnapshot:
    s = fetched.state
    providers: dict[str, set[str] | None] = {}
    for provider in s.rootfs_providers:
        providers[provider.name] = set(provider.properties) if provider.name in FIXED_SET_PROVIDERS else None
    lrps: dict[str, int] = {}
    for lrp in s.lrps:
        lrps[lrp.process_guid] = lrps.get(lrp.process_guid, 0) + 1
    return CellSnapshot(
        cell_id=s.cell_id, zone=s.zone,
        total_memory=s.total_resources.memory_mb, total_disk=s.total_resources.disk_mb,
        total_containers=s.total_resources.containers, memory=s.available_resources.memory_mb,
        disk=s.available_resources.disk_mb, containers=s.available_resources.containers,
        starting=s.starting_container_count, providers=providers,
        placement_tags=frozenset(s.placement_tags), optional_tags=frozenset(s.optional_placement_tags),
        lrps=lrps, tasks=len(s.tasks))


def index_zones(snapshots: list[CellSnapshot]) -> None:
    """Number cells 0..n-1 within each zone by cell id (the bin-pack order, reference §4.3)."""
    by_zone: dict[str, list[CellSnapshot]] = {}
    for snap in snapshots:
        by_zone.setdefault(snap.zone, []).append(snap)
    for members in by_zone.values():
        for i, snap in enumerate(sorted(members, key=lambda c: c.cell_id)):
            snap.index = i
