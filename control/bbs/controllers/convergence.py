"""The writes of a convergence pass (reference §5.2, §5.3, §2.6), for the converger's shell.

Every method is one store transaction guarded by what the converger planned on: the index's
rows go through LRPStore.apply_index with a rule of convergence_rules (modification tags
compared), missing instances are created only while the DesiredLRP's schedule keeps its
revision, and task writes compare the task's mod_revision. A concurrent change therefore makes
the method a no-op (False / None / fewer indices), never a partial write. Nothing here emits
events: the BBS derives them from the etcd watch, whoever wrote.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from control.models.cell import CellPresence
from control.models.task import Task

from ..peers import RepClient
from ..store.changes import IndexChange, Rows
from ..store.lrp_store import LRPStore
from . import convergence_rules as rules
from .lifecycle import new_unclaimed
from .lrp_controller import RETIRE_ATTEMPTS
from .task_controller import TaskController

log = structlog.get_logger("bbs.convergence")
Tag = rules.Tag
CREATE_CHUNK = 1000  # rows per creation transaction, well under etcd's --max-txn-ops


class ConvergenceController:
    def __init__(self, store: LRPStore, tasks: TaskController, reps: RepClient,
                 new_guid: Callable[[], str]) -> None:
        self.store = store
        self.tasks = tasks
        self.reps = reps
        self.new_guid = new_guid

    async def _apply(self, guid: str, index: int, decide: Callable[[Rows], IndexChange]) -> bool:
        _, change = await self.store.apply_index(guid, index, decide)
        return not change.empty

    # ---- ActualLRPs -------------------------------------------------------------------------
    async def mark_suspect(self, guid: str, index: int, ordinary: Tag, now: int) -> bool:
        epoch = self.new_guid()
        return await self._apply(guid, index, lambda rows: rules.mark_suspect(rows, ordinary, now, epoch))

    async def unclaim_replacement(self, guid: str, index: int, ordinary: Tag, suspect: Tag, now: int) -> bool:
        return await self._apply(guid, index, lambda rows: rules.unclaim_replacement(rows, ordinary, suspect, now))

    async def promote_suspect(self, guid: str, index: int, suspect: Tag, ordinary: Tag | None, now: int) -> bool:
        return await self._apply(guid, index, lambda rows: rules.promote_suspect(rows, suspect, ordinary, now))

    async def remove_suspect(self, guid: str, index: int, suspect: Tag) -> bool:
        return await self._apply(guid, index, lambda rows: rules.remove_suspect(rows, suspect))

    async def prune_evacuating(self, guid: str, index: int, evacuating: Tag) -> bool:
        return await self._apply(guid, index, lambda rows: rules.prune_evacuating(rows, evacuating))

    async def restart_crashed(self, guid: str, index: int, ordinary: Tag, now: int) -> bool:
        return await self._apply(guid, index, lambda rows: rules.restart_crashed(rows, ordinary, now))

    async def delete_ordinary(self, guid: str, index: int, ordinary: Tag) -> bool:
        return await self._apply(guid, index, lambda rows: rules.delete_ordinary(rows, ordinary))

    async def create_missing(self, guid: str, domain: str, schedule_rev: int, indices: list[int],
                             now: int) -> list[int]:
        """The indices actually created (a chunk whose transaction was refused creates none)."""
        created: list[int] = []
        for start in range(0, len(indices), CREATE_CHUNK):
            chunk = indices[start:start + CREATE_CHUNK]
            rows = [new_unclaimed(guid, i, domain, now, self.new_guid()) for i in chunk]
            if await self.store.create_missing(guid, schedule_rev, rows):
                created += chunk
        return created

    async def stop_instance(self, cell: CellPresence, guid: str, instance_guid: str) -> bool:
        """Retire a CLAIMED/RUNNING instance on a live cell: its rep stops the container and
        then removes the row (reference §2.2). Retried as RetireActualLRP is; False if the rep
        could not be reached (the next pass tries again)."""
        for attempt in range(RETIRE_ATTEMPTS):
            try:
                await self.reps.stop_lrp_instance(cell, guid, instance_guid)
                return True
            except Exception as exc:  # any transport failure: try again, as Diego does
                log.warning("retire-stop-failed", process_guid=guid, instance_guid=instance_guid,
                            cell_id=cell.cell_id, attempt=attempt, error=str(exc))
                if attempt + 1 < RETIRE_ATTEMPTS:
                    await asyncio.sleep(0.1 * (attempt + 1))
        return False

    # ---- tasks ------------------------------------------------------------------------------
    async def fail_task(self, task: Task, rev: int, reason: str, now: int) -> Task | None:
        return await self.tasks.fail_if_unchanged(task, rev, reason, now)

    async def demote_task(self, task: Task, rev: int) -> Task | None:
        return await self.tasks.demote_if_unchanged(task, rev)

    async def delete_task(self, guid: str, rev: int) -> bool:
        return await self.tasks.delete_if_unchanged(guid, rev)
