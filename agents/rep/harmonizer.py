"""The harmonizer: keeps the BBS's view of this cell equal to its containers (reference §2.9, §6.3).

Two paths (CONVENTIONS: reconcile in two paths): executor events handle one container at once;
a bulk pass every `polling_interval` (30 s) lists every container and every BBS record of this
cell and handles them all, catching whatever an event missed (a dropped subscriber, a BBS that
was away, a rep restart). Work is keyed by guid and serialised per guid, and every step is
idempotent (a second START is a no-op in the BBS), so the two paths may overlap freely.

The decisions are pure (decisions.py); this module runs them against the BBS and the executor.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from control.models.actual_lrp import ActualLRP
from control.models.desired_lrp import DesiredLRP
from control.models.errors import InvalidTransition, NotFound, PydiegoError, RunningOnDifferentCell
from control.models.task import Task

from agents.executor.api import ContainerNotFound, ExecutorAPI, ExecutorError
from agents.executor.models import Container, EventKind

from . import conversion
from .decisions import (LRPDecision, TaskDecision, decide_lrp, decide_task, orphan_rows, orphan_tasks)

log = structlog.get_logger("rep.harmonizer")
TASK_CONTAINER_MISSING = "task container does not exist"


class BBS(Protocol):
    """The BBS calls a cell makes (control.client.BBSClient has them all)."""

    async def actual_lrps(self, domain: str | None = None, cell_id: str | None = None,
                          process_guid: str | None = None, index: int | None = None) -> list[ActualLRP]: ...
    async def desired_lrp(self, process_guid: str) -> DesiredLRP: ...
    async def actual_lrp_call(self, process_guid: str, index: int, verb: str, body: dict[str, Any]) -> Any: ...
    async def tasks(self, domain: str | None = None, cell_id: str | None = None) -> list[Task]: ...
    async def task(self, task_guid: str) -> Task: ...
    async def task_call(self, task_guid: str, verb: str, body: dict[str, Any] | None = None) -> Any: ...


class Harmonizer:
    def __init__(self, bbs: BBS, executor: ExecutorAPI, cell_id: str, polling_interval: float,
                 evacuating: Callable[[], bool]) -> None:
        self.bbs = bbs
        self.executor = executor
        self.cell_id = cell_id
        self.polling_interval = polling_interval
        self.evacuating = evacuating
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._kick = asyncio.Event()
        self.passes = 0
        self.errors = 0

    # ---- runner --------------------------------------------------------------------------------
    async def run(self, ready: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._consume_events(ready))
            tg.create_task(self._bulk_loop())

    def kick(self) -> None:
        """Run a bulk pass now (evacuation start, tests)."""
        self._kick.set()

    async def _consume_events(self, ready: asyncio.Event) -> None:
        pending: set[asyncio.Task[None]] = set()
        try:
            while True:
                events = self.executor.subscribe()
                ready.set()
                async for event in events:
                    if event.kind in (EventKind.RESERVED, EventKind.RUNNING, EventKind.COMPLETED,
                                      EventKind.ROUTABLE_CHANGED):
                        task = asyncio.create_task(self.process(event.container.guid))
                        pending.add(task)
                        task.add_done_callback(pending.discard)
                log.warning("executor-subscription-dropped")
                self.kick()
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    async def _bulk_loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.polling_interval)
            self._kick.clear()
            try:
                await self.bulk_pass()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the BBS is away: the next pass retries
                self.errors += 1
                log.warning("bulk-pass-failed", error=repr(exc))

    # ---- one container -------------------------------------------------------------------------
    async def process(self, guid: str) -> None:
        """Handle one container now (event path); errors are logged, the bulk pass retries."""
        try:
            async with self._locks[guid]:
                try:
                    container = self.executor.get(guid)
                except ContainerNotFound:
                    return
                if container.tags.get("lifecycle") == conversion.TASK:
                    task = await self._task_or_none(guid)
                    await self._task(container, task)
                else:
                    rows = await self._rows(container)
                    await self._lrp(container, rows)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.errors += 1
            log.warning("process-container-failed", guid=guid, error=repr(exc))
        finally:
            lock = self._locks.get(guid)
            if lock is not None and not lock.locked():
                self._locks.pop(guid, None)

    async def bulk_pass(self) -> None:
        rows = await self.bbs.actual_lrps(cell_id=self.cell_id)
        tasks = await self.bbs.tasks(cell_id=self.cell_id)
        containers = self.executor.list()  # after the BBS reads: a row claimed by us has its container
        guids = {c.guid for c in containers}
        by_index: defaultdict[tuple[str, int], list[ActualLRP]] = defaultdict(list)
        for row in rows:
            by_index[(row.process_guid, row.index)].append(row)
        by_task = {t.task_guid: t for t in tasks}
        for container in containers:
            async with self._locks[container.guid]:
                try:
                    current = self.executor.get(container.guid)
                except ContainerNotFound:
                    continue
                try:
                    if current.tags.get("lifecycle") == conversion.TASK:
                        task = by_task.get(current.guid) or await self._task_or_none(current.guid)
                        await self._task(current, task)
                    else:
                        key = (current.tags.get("process_guid", ""), int(current.tags.get("index", "-1")))
                        await self._lrp(current, by_index.get(key, []))
                except (PydiegoError, ExecutorError) as exc:
                    self.errors += 1
                    log.warning("bulk-container-failed", guid=current.guid, error=repr(exc))
        remove, remove_evac = orphan_rows(rows, guids)
        for row in remove:
            await self._call_quietly(row, "remove", self._key(row.instance_guid))
        for row in remove_evac:
            await self._call_quietly(row, "remove_evacuating", self._key(row.instance_guid))
        for task in orphan_tasks(tasks, guids, self.cell_id):
            with contextlib.suppress(PydiegoError):
                await self.bbs.task_call(task.task_guid, "complete", {
                    "cell_id": self.cell_id, "failed": True, "failure_reason": TASK_CONTAINER_MISSING})
                log.info("task-container-missing", task_guid=task.task_guid)
        self.passes += 1

    # ---- LRPs ----------------------------------------------------------------------------------
    def _key(self, instance_guid: str) -> dict[str, Any]:
        return {"instance_guid": instance_guid, "cell_id": self.cell_id}

    async def _rows(self, container: Container) -> list[ActualLRP]:
        pg, index = container.tags.get("process_guid", ""), int(container.tags.get("index", "-1"))
        rows = await self.bbs.actual_lrps(process_guid=pg, index=index)
        return [r for r in rows if r.cell_id == self.cell_id]

    async def _lrp(self, container: Container, rows: list[ActualLRP]) -> None:
        decision = decide_lrp(container, rows, self.evacuating())
        pg, index = container.tags["process_guid"], int(container.tags["index"])
        bound = log.bind(process_guid=pg, index=index, instance_guid=container.guid, decision=str(decision))
        key = self._key(container.guid)
        if decision is LRPDecision.CLAIM_AND_RUN:
            try:
                await self.bbs.actual_lrp_call(pg, index, "claim", key)
                desired = await self.bbs.desired_lrp(pg)
            except (InvalidTransition, NotFound) as exc:
                bound.info("claim-refused", error=str(exc))
                await self.executor.delete(container.guid)
                return
            await self.executor.run_container(container.guid, conversion.lrp_run_request(desired, index, container.guid))
            bound.info("lrp-claimed")
        elif decision is LRPDecision.RECLAIM:
            try:
                await self.bbs.actual_lrp_call(pg, index, "claim", key)
            except (InvalidTransition, NotFound) as exc:
                bound.info("reclaim-refused", error=str(exc))
                await self.executor.delete(container.guid)
        elif decision is LRPDecision.START:
            body = {**key, **conversion.net_info(container), "routable": container.routable}
            try:
                await self.bbs.actual_lrp_call(pg, index, "start", body)
            except (InvalidTransition, RunningOnDifferentCell, NotFound) as exc:
                bound.info("start-refused", error=str(exc))
                await self.executor.delete(container.guid)
        elif decision is LRPDecision.REMOVE_AND_DELETE:
            await self._call_quietly_key(pg, index, "remove", key)
            await self.executor.delete(container.guid)
        elif decision is LRPDecision.CRASH_AND_DELETE:
            reason = container.run_result.failure_reason if container.run_result else "container completed"
            await self._call_quietly_key(pg, index, "crash", {**key, "error_message": reason[:1024]})
            bound.info("lrp-crashed", reason=reason[:200])
            await self.executor.delete(container.guid)
        elif decision is LRPDecision.DELETE:
            await self.executor.delete(container.guid)
        else:
            await self._evacuate(container, decision, pg, index, key)

    async def _evacuate(self, container: Container, decision: LRPDecision, pg: str, index: int,
                        key: dict[str, Any]) -> None:
        keep = False
        if decision is LRPDecision.EVACUATE_CLAIMED:
            keep = await self._keep(pg, index, "evacuate_claimed", key)
        elif decision is LRPDecision.EVACUATE_RUNNING:
            body = {**key, **conversion.net_info(container), "routable": container.routable}
            keep = await self._keep(pg, index, "evacuate_running", body)
        elif decision is LRPDecision.EVACUATE_STOPPED:
            keep = await self._keep(pg, index, "evacuate_stopped", key)
        elif decision is LRPDecision.EVACUATE_CRASHED:
            reason = container.run_result.failure_reason if container.run_result else "container completed"
            keep = await self._keep(pg, index, "evacuate_crashed", {**key, "error_message": reason[:1024]})
        if not keep:
            log.info("evacuated-container", process_guid=pg, index=index, instance_guid=container.guid,
                     decision=str(decision))
            await self.executor.delete(container.guid)

    async def _keep(self, pg: str, index: int, verb: str, body: dict[str, Any]) -> bool:
        try:
            answer = await self.bbs.actual_lrp_call(pg, index, verb, body)
        except NotFound:
            return False
        return bool(answer and answer.get("keep_container"))

    async def _call_quietly_key(self, pg: str, index: int, verb: str, body: dict[str, Any]) -> None:
        try:
            await self.bbs.actual_lrp_call(pg, index, verb, body)
        except (InvalidTransition, NotFound) as exc:
            log.info("lrp-call-refused", verb=verb, process_guid=pg, index=index, error=str(exc))

    async def _call_quietly(self, row: ActualLRP, verb: str, body: dict[str, Any]) -> None:
        await self._call_quietly_key(row.process_guid, row.index, verb, body)

    # ---- tasks ---------------------------------------------------------------------------------
    async def _task_or_none(self, guid: str) -> Task | None:
        try:
            return await self.bbs.task(guid)
        except NotFound:
            return None

    async def _task(self, container: Container, task: Task | None) -> None:
        decision = decide_task(container, task, self.cell_id)
        bound = log.bind(task_guid=container.guid, decision=str(decision))
        if decision is TaskDecision.START_AND_RUN:
            assert task is not None
            try:
                should = (await self.bbs.task_call(task.task_guid, "start", {"cell_id": self.cell_id}))["should_start"]
            except (InvalidTransition, NotFound) as exc:
                bound.info("task-start-refused", error=str(exc))
                should = False
            if not should:
                await self.executor.delete(container.guid)
                return
            await self.executor.run_container(container.guid, conversion.task_run_request(task))
            bound.info("task-started")
        elif decision is TaskDecision.COMPLETE_AND_DELETE:
            result = container.run_result
            body = {"cell_id": self.cell_id, "failed": bool(result and result.failed),
                    "failure_reason": (result.failure_reason if result else "")[:1024],
                    "result": result.result if result else ""}
            with contextlib.suppress(InvalidTransition, NotFound, RunningOnDifferentCell):
                await self.bbs.task_call(container.guid, "complete", body)
            bound.info("task-completed", failed=body["failed"])
            await self.executor.delete(container.guid)
        elif decision is TaskDecision.REJECT_AND_DELETE:
            reason = container.run_result.failure_reason if container.run_result else "failed to run container"
            with contextlib.suppress(InvalidTransition, NotFound):
                await self.bbs.task_call(container.guid, "reject", {"error_message": reason[:1024]})
            bound.info("task-rejected", reason=reason[:200])
            await self.executor.delete(container.guid)
        elif decision in (TaskDecision.DELETE, TaskDecision.STOP_AND_DELETE):
            await self.executor.delete(container.guid)

