"""The auction runner (reference §4.1, §4.6, §4.7): one loop, one batch at a time.

Each round: list the live cells (presences), fetch their `/state` in parallel (up to 4
attempts while none answers), drain the batch, schedule it with the pure core (placement.py),
post one `/work` per winning cell in parallel, and report what could not be placed: `fail` on
the ActualLRP (it stays UNCLAIMED with the placement error) and `reject` for a task. A `/work`
request that errors is neither retried nor failed: convergence re-sends it (no duplicates).
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from control.models.auction import LRPStartRequest, TaskStartRequest
from control.models.cell import CellPresence
from control.models.rep import LRPWork, TaskWork, Work

from .batch import Batch
from .cells import MAX_IN_FLIGHT, CellClient, FetchedCell, fetch_states, index_zones, snapshot
from .placement import ERR_NO_CELLS, Failure, Unit, schedule

log = structlog.get_logger("auctioneer")
STATE_ATTEMPTS = 4


class Reporter(Protocol):
    """The BBS calls the auctioneer makes (control.client.BBSClient has them)."""

    async def actual_lrp_call(self, process_guid: str, index: int, verb: str, body: dict[str, Any]) -> Any: ...

    async def task_call(self, task_guid: str, verb: str, body: dict[str, Any] | None = None) -> Any: ...


@dataclass
class RoundResult:
    placed: int = 0
    failed: list[tuple[str, int, str]] = field(default_factory=list)  # (guid, index or -1, error)
    cells: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Settings:
    state_timeout: float = 10.0
    bin_pack_weight: float = 0.0
    starting_weight: float = 0.25
    max_in_flight: int = 0


class AuctionRunner:
    def __init__(self, batch: Batch, list_cells: Callable[[], Awaitable[list[CellPresence]]], client: CellClient,
                 reporter: Reporter, settings: Settings) -> None:
        self.batch = batch
        self.list_cells = list_cells
        self.client = client
        self.reporter = reporter
        self.settings = settings
        self.rounds = 0
        self.placed_total = 0
        self.failed_total = 0
        self.last: RoundResult | None = None

    async def run(self, ready: asyncio.Event) -> None:
        ready.set()
        while True:
            await self.batch.wait()
            try:
                await self.auction_round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("auction-round-failed", error=repr(exc))
                await asyncio.sleep(1)

    async def auction_round(self) -> RoundResult | None:
        started = time.perf_counter()
        try:
            presences = await self.list_cells()
        except Exception as exc:  # work stays queued: retried after a pause (reference §4.1 step 1)
            log.warning("list-cells-failed", error=repr(exc))
            await asyncio.sleep(1)
            return None
        fetched: list[FetchedCell] = []
        for _ in range(STATE_ATTEMPTS if presences else 1):
            fetched = await fetch_states(self.client, presences, self.settings.state_timeout)
            if fetched:
                break
        lrps, tasks = self.batch.drain()
        result = await self._schedule_and_commit(fetched, lrps, tasks)
        result.seconds = time.perf_counter() - started
        self.rounds += 1
        self.placed_total += result.placed
        self.failed_total += len(result.failed)
        self.last = result
        log.info("auction-round", lrps=len(lrps), tasks=len(tasks), cells=result.cells, placed=result.placed,
                 failed=len(result.failed), ms=round(result.seconds * 1000, 1))
        return result

    async def _schedule_and_commit(self, fetched: list[FetchedCell], lrps: list[LRPStartRequest],
                                   tasks: list[TaskStartRequest]) -> RoundResult:
        by_key: dict[tuple[str, int], LRPStartRequest | TaskStartRequest] = {}
        units = []
        for req in lrps:
            index = req.indices[0]
            by_key[(req.process_guid, index)] = req
            units.append(Unit(req.process_guid, index, req.resource.memory_mb, req.resource.disk_mb, req.rootfs,
                              frozenset(req.placement_tags), frozenset(req.volume_drivers)))
        for task in tasks:
            by_key[(task.task_guid, -1)] = task
            units.append(Unit(task.task_guid, -1, task.resource.memory_mb, task.resource.disk_mb, task.rootfs,
                              frozenset(task.placement_tags), frozenset(task.volume_drivers), is_task=True))
        snaps = [snapshot(f) for f in fetched]
        index_zones(snaps)
        outcome = schedule(snaps, units, self.settings.bin_pack_weight, self.settings.max_in_flight,
                           self.settings.starting_weight)
        if not fetched:
            outcome.failed = [Failure(u, ERR_NO_CELLS) for u in units]
            outcome.placed = []
        lrp_work: defaultdict[str, list[LRPWork]] = defaultdict(list)
        task_work: defaultdict[str, list[TaskWork]] = defaultdict(list)
        for placement in outcome.placed:
            req = by_key[(placement.unit.guid, placement.unit.index)]
            if isinstance(req, LRPStartRequest):
                lrp_work[placement.cell_id].append(LRPWork(process_guid=req.process_guid, index=placement.unit.index, domain=req.domain,
                                         resource=req.resource, rootfs=req.rootfs, placement_tags=req.placement_tags))
            else:
                task_work[placement.cell_id].append(TaskWork(task_guid=req.task_guid, domain=req.domain, resource=req.resource,
                                           rootfs=req.rootfs, placement_tags=req.placement_tags))
        works = {cid: Work(cell_id=cid, lrps=lrp_work.get(cid, []), tasks=task_work.get(cid, []))
                 for cid in set(lrp_work) | set(task_work)}
        cells = {f.presence.cell_id: f.presence for f in fetched}
        refused = await self._commit(cells, works)
        failures = [(f.unit.guid, f.unit.index, f.error) for f in outcome.failed] + refused
        await self._report(failures)
        return RoundResult(placed=len(outcome.placed) - len(refused), failed=failures, cells=len(fetched))

    async def _commit(self, cells: dict[str, CellPresence], works: dict[str, Work]) -> list[tuple[str, int, str]]:
        gate = asyncio.Semaphore(MAX_IN_FLIGHT)

        async def post(cell_id: str, work: Work) -> list[tuple[str, int, str]]:
            try:
                async with gate:
                    failed = await self.client.perform(cells[cell_id], work)
            except Exception as exc:  # unknown outcome: convergence re-sends (reference §4.7)
                log.warning("work-post-failed", cell_id=cell_id, lrps=len(work.lrps), tasks=len(work.tasks),
                            error=repr(exc)[:300])
                return []
            return ([(w.process_guid, w.index, w.reason or "cell refused the work") for w in failed.lrps]
                    + [(w.task_guid, -1, w.reason or "cell refused the work") for w in failed.tasks])
        results = await asyncio.gather(*(post(cid, w) for cid, w in works.items()))
        return [item for chunk in results for item in chunk]

    async def _report(self, failures: list[tuple[str, int, str]]) -> None:
        semaphore = asyncio.Semaphore(64)

        async def one(guid: str, index: int, error: str) -> None:
            async with semaphore:
                try:
                    if index >= 0:
                        await self.reporter.actual_lrp_call(guid, index, "fail", {"error_message": error[:1024]})
                    else:
                        await self.reporter.task_call(guid, "reject", {"error_message": error[:1024]})
                except Exception as exc:  # the row moved on meanwhile, or the BBS is away: convergence
                    log.info("report-failure-failed", guid=guid, index=index, error=repr(exc)[:200])
        await asyncio.gather(*(one(*f) for f in failures))
