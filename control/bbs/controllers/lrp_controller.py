"""DesiredLRP and ActualLRP verbs: desire, update, remove, retire, and the cell and auctioneer
calls (claim, start, crash, fail, remove, evacuate_*), following reference §1.1 and §2."""
from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from control.kit.clock import Clock
from control.models.actual_lrp import (ActualLRP, ActualLRPState, CrashRequest, InstanceKey,
                                       Presence, StartRequest)
from control.models.auction import LRPStartRequest, Resource
from control.models.desired_lrp import (DesiredLRP, DesiredLRPUpdate, ModificationTag,
                                        SchedulingInfo, UpdateStrategy)
from control.models.base import MAX_INSTANCES
from control.models.errors import InvalidRequest, NotFound, PydiegoError, ResourceConflict

from ..peers import AuctioneerClient, CellDirectory, RepClient
from ..store.changes import IndexChange, Rows
from ..store.lrp_store import CAS_ATTEMPTS, LRPStore
from . import lifecycle

log = structlog.get_logger("bbs.lrp")
S = ActualLRPState
RETIRE_ATTEMPTS = 5
# Desiring (or scaling up) writes the new UNCLAIMED rows in the same etcd transaction as the
# LRP, and etcd runs with --max-txn-ops 20000 (README): more instances than MAX_INSTANCES cannot
# be written at once. The models refuse it too; this keeps the controller safe on its own.


def _check_instances(guid: str, instances: int) -> None:
    if instances > MAX_INSTANCES:
        raise InvalidRequest(f"desired LRP {guid}: instances {instances} is over the maximum of {MAX_INSTANCES}",
                             errors=[{"field": "instances", "problem": f"must be at most {MAX_INSTANCES}"}])


def start_request(sched: SchedulingInfo, indices: list[int]) -> LRPStartRequest:
    return LRPStartRequest(
        process_guid=sched.process_guid, domain=sched.domain, indices=sorted(indices),
        resource=Resource(memory_mb=sched.memory_mb, disk_mb=sched.disk_mb, max_pids=sched.max_pids),
        rootfs=sched.rootfs, placement_tags=sched.placement_tags, volume_drivers=sched.volume_placement)


STOP_CONCURRENCY = 32


class LRPController:
    def __init__(self, store: LRPStore, auctioneer: AuctioneerClient, reps: RepClient,
                 cells: CellDirectory, clock: Clock, new_guid: Callable[[], str]) -> None:
        self.store = store
        self.auctioneer = auctioneer
        self.reps = reps
        self.cells = cells
        self.clock = clock
        self.new_guid = new_guid

    # ---- desired ------------------------------------------------------------------------------
    async def desire(self, desired: DesiredLRP) -> DesiredLRP:
        _check_instances(desired.process_guid, desired.instances)
        now = self.clock.now_ns()
        desired = desired.model_copy(update={"modification_tag": ModificationTag(epoch=self.new_guid(), index=0)})
        actuals = [lifecycle.new_unclaimed(desired.process_guid, i, desired.domain, now, self.new_guid())
                   for i in range(desired.instances)]
        await self.store.create_desired(desired, actuals)
        log.info("desired-lrp-created", process_guid=desired.process_guid, instances=desired.instances)
        if desired.instances:
            sched, _ = desired.split()
            await self.auctioneer.request_lrp_auctions([start_request(sched, list(range(desired.instances)))])
        return desired

    async def update(self, guid: str, update: DesiredLRPUpdate) -> tuple[DesiredLRP, DesiredLRP]:
        if update.instances is not None:
            _check_instances(guid, update.instances)
        before_full = await self.store.get_desired(guid)
        for _ in range(CAS_ATTEMPTS):
            sched, rev = await self.store.get_scheduling_info(guid)
            changes = update.model_dump(exclude_none=True, include={"instances", "routes", "annotation", "metric_tags"})
            tag = (sched.modification_tag or ModificationTag()).incremented()
            after = SchedulingInfo.model_validate({**sched.model_dump(mode="json"), **changes,
                                                   "modification_tag": tag.model_dump()})
            now = self.clock.now_ns()
            existing = await self.store.indices(guid)
            new_rows = [lifecycle.new_unclaimed(guid, i, sched.domain, now, self.new_guid())
                        for i in range(sched.instances, after.instances)
                        if Presence.ORDINARY not in existing.get(i, {})]
            if await self.store.update_schedule(guid, sched, rev, after, new_rows):
                break
        else:
            raise ResourceConflict(f"desired LRP {guid} is changing too fast; retry")
        if update.image_username is not None and update.image_password is not None:
            await self.store.update_run_credentials(guid, update.image_username, update.image_password)
        if new_rows:
            await self.auctioneer.request_lrp_auctions([start_request(after, [r.index for r in new_rows])])
        if after.instances < sched.instances:
            for index, rows in existing.items():
                if index >= after.instances and Presence.ORDINARY in rows:
                    await self._stop_or_delete(rows[Presence.ORDINARY])
        log.info("desired-lrp-updated", process_guid=guid, instances=after.instances)
        return before_full, await self.store.get_desired(guid)

    async def remove(self, guid: str) -> DesiredLRP:
        desired = await self.store.delete_desired(guid)
        gate = asyncio.Semaphore(STOP_CONCURRENCY)  # one LRP may have thousands of instances

        async def stop(lrp: ActualLRP) -> None:
            async with gate:
                await self._stop_or_delete(lrp)
        rows = [r[Presence.ORDINARY] for r in (await self.store.indices(guid)).values() if Presence.ORDINARY in r]
        await asyncio.gather(*(stop(lrp) for lrp in rows))
        log.info("desired-lrp-removed", process_guid=guid, instances=len(rows))
        return desired

    async def _stop_or_delete(self, lrp: ActualLRP) -> None:
        """UNCLAIMED/CRASHED rows are deleted; CLAIMED/RUNNING ones are stopped by their rep
        (deleted when the cell is gone). Failures are logged: convergence retries."""
        try:
            await self.retire(lrp.process_guid, lrp.index)
        except PydiegoError as exc:
            log.warning("failed-to-stop-instance", process_guid=lrp.process_guid, index=lrp.index, error=str(exc))

    async def retire(self, guid: str, index: int) -> None:
        """RetireActualLRP (reference §2.2): the desired count is unchanged, so convergence
        restarts the index later."""
        for attempt in range(RETIRE_ATTEMPTS):
            rows, _ = await self.store.read_index(guid, index)
            lrp = rows.get(Presence.ORDINARY)
            if lrp is None:
                raise NotFound(f"actual LRP {guid}/{index} not found")
            if lrp.state in (S.UNCLAIMED, S.CRASHED):
                if await self._delete_if_unchanged(lrp):
                    return
                continue
            cell = await self.cells.cell(lrp.cell_id)
            if cell is None:
                if await self._delete_if_unchanged(lrp):
                    return
                continue
            try:
                await self.reps.stop_lrp_instance(cell, guid, lrp.instance_guid)
                return
            except Exception as exc:  # any transport failure: try again, as Diego does
                log.warning("retire-stop-failed", process_guid=guid, index=index, attempt=attempt, error=str(exc))
                await asyncio.sleep(0.1 * (attempt + 1))
        raise ResourceConflict(f"could not retire actual LRP {guid}/{index} after {RETIRE_ATTEMPTS} attempts")

    async def _delete_if_unchanged(self, lrp: ActualLRP) -> bool:
        def decide(rows: Rows) -> IndexChange:
            current = rows.get(Presence.ORDINARY)
            if current is None:
                return IndexChange(result=True)  # already gone
            if current.modification_tag != lrp.modification_tag:
                return IndexChange(result=False)
            return IndexChange(deletes={Presence.ORDINARY}, result=True)
        _, change = await self.store.apply_index(lrp.process_guid, lrp.index, decide)
        return bool(change.result)

    # ---- cell and auctioneer calls ------------------------------------------------------------
    async def _apply(self, guid: str, index: int, decide: Callable[[Rows], IndexChange]) -> IndexChange:
        _, change = await self.store.apply_index(guid, index, decide)
        if change.auction:
            try:
                sched, _ = await self.store.get_scheduling_info(guid)
                await self.auctioneer.request_lrp_auctions([start_request(sched, [index])])
            except NotFound:
                pass  # the LRP was deleted meanwhile: nothing to place
        return change

    async def claim(self, guid: str, index: int, key: InstanceKey) -> None:
        now = self.clock.now_ns()
        await self._apply(guid, index, lambda rows: lifecycle.claim(rows, guid, index, key, now))

    async def start(self, guid: str, index: int, req: StartRequest) -> None:
        now = self.clock.now_ns()

        async def decide(rows: Rows) -> IndexChange:
            # the DesiredLRP's domain is only needed to re-create a row the BBS lost
            domain = await self._domain(guid) if Presence.ORDINARY not in rows else None
            return lifecycle.start(rows, guid, index, req, now, domain, self.new_guid)
        await self._apply(guid, index, decide)  # type: ignore[arg-type]

    async def crash(self, guid: str, index: int, req: CrashRequest) -> None:
        now = self.clock.now_ns()
        await self._apply(guid, index, lambda rows: lifecycle.crash(rows, guid, index, req, now))

    async def fail(self, guid: str, index: int, error_message: str) -> None:
        now = self.clock.now_ns()
        await self._apply(guid, index, lambda rows: lifecycle.fail(rows, guid, index, error_message, now))

    async def remove_actual(self, guid: str, index: int, key: InstanceKey) -> None:
        await self._apply(guid, index, lambda rows: lifecycle.remove(rows, guid, index, key))

    async def _domain(self, guid: str) -> str | None:
        try:
            sched, _ = await self.store.get_scheduling_info(guid)
        except NotFound:
            return None
        return sched.domain

    # ---- evacuation ---------------------------------------------------------------------------
    async def evacuate_claimed(self, guid: str, index: int, key: InstanceKey) -> bool:
        now = self.clock.now_ns()
        change = await self._apply(guid, index, lambda rows: lifecycle.evacuate_claimed(rows, guid, index, key, now))
        return bool(change.result)

    async def evacuate_running(self, guid: str, index: int, req: StartRequest) -> bool:
        now = self.clock.now_ns()
        try:
            sched, _ = await self.store.get_scheduling_info(guid)
        except NotFound:
            sched = None
        all_running: bool | None = None
        if sched is not None and sched.update_strategy is UpdateStrategy.RECREATE:
            rows_by_index = await self.store.indices(guid)
            all_running = all(rows_by_index.get(i, {}).get(Presence.ORDINARY) is not None
                              and rows_by_index[i][Presence.ORDINARY].state is S.RUNNING
                              for i in range(sched.instances))
        domain = sched.domain if sched else None
        change = await self._apply(guid, index, lambda rows: lifecycle.evacuate_running(
            rows, guid, index, req, now, domain, all_running))
        return bool(change.result)

    async def evacuate_stopped(self, guid: str, index: int, key: InstanceKey) -> bool:
        change = await self._apply(guid, index, lambda rows: lifecycle.evacuate_stopped(rows, guid, index, key))
        return bool(change.result)

    async def evacuate_crashed(self, guid: str, index: int, req: CrashRequest) -> bool:
        now = self.clock.now_ns()
        change = await self._apply(guid, index, lambda rows: lifecycle.evacuate_crashed(rows, guid, index, req, now))
        return bool(change.result)

    async def remove_evacuating(self, guid: str, index: int, key: InstanceKey) -> None:
        await self._apply(guid, index, lambda rows: lifecycle.remove_evacuating(rows, guid, index, key))
