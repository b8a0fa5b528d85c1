"""Task verbs and the task state machine's rules (reference §2.7)."""
from __future__ import annotations

from collections.abc import Callable

import structlog

from control.kit.clock import Clock
from control.models.auction import Resource, TaskStartRequest
from control.models.base import truncate
from control.models.errors import InvalidTransition, RunningOnDifferentCell
from control.models.task import (MAX_TASK_RETRIES, CompleteTaskRequest, DesireTaskRequest, Task,
                                 TaskState, task_allows)

from ..peers import AuctioneerClient, CellDirectory, RepClient
from ..store.task_store import TaskStore

log = structlog.get_logger("bbs.task")
T = TaskState
CANCELLED = "task was cancelled"


def task_start_request(task: Task) -> TaskStartRequest:
    d = task.task_definition
    return TaskStartRequest(task_guid=task.task_guid, domain=task.domain,
                            resource=Resource(memory_mb=d.memory_mb, disk_mb=d.disk_mb, max_pids=d.max_pids),
                            rootfs=d.rootfs, placement_tags=d.placement_tags,
                            volume_drivers=sorted({m.driver for m in d.volume_mounts}))


def _require(task: Task, to: TaskState) -> None:
    if not task_allows(task.state, to):
        raise InvalidTransition(f"task {task.task_guid} cannot go from {task.state} to {to}")


def _completed(task: Task, now: int, failed: bool, reason: str, result: str = "") -> Task:
    return task.model_copy(update={
        "state": T.COMPLETED, "failed": failed, "failure_reason": truncate(reason) if failed else "",
        "result": "" if failed else result, "cell_id": "", "updated_at": now,
        "first_completed_at": task.first_completed_at or now})


class TaskController:
    def __init__(self, store: TaskStore, auctioneer: AuctioneerClient, reps: RepClient,
                 cells: CellDirectory, clock: Clock, on_completed: Callable[[Task], None],
                 max_retries: int = MAX_TASK_RETRIES) -> None:
        self.store = store
        self.auctioneer = auctioneer
        self.reps = reps
        self.cells = cells
        self.clock = clock
        self.on_completed = on_completed  # hands completed tasks with a callback URL to the worker
        self.max_retries = max_retries

    async def desire(self, req: DesireTaskRequest) -> Task:
        now = self.clock.now_ns()
        task = Task(task_guid=req.task_guid, domain=req.domain, task_definition=req.task_definition,
                    state=T.PENDING, created_at=now, updated_at=now)
        await self.store.create(task)
        log.info("task-created", task_guid=task.task_guid)
        await self.auctioneer.request_task_auctions([task_start_request(task)])
        return task

    async def start(self, guid: str, cell_id: str) -> bool:
        """PENDING → RUNNING on `cell_id`; False (no-op) when it already runs there."""
        now = self.clock.now_ns()
        should_start = True

        def decide(task: Task) -> Task:
            nonlocal should_start
            if task.state is T.RUNNING and task.cell_id == cell_id:
                should_start = False
                return task
            if task.state is not T.PENDING:
                raise InvalidTransition(f"task {guid} is {task.state}, not PENDING")
            return task.model_copy(update={"state": T.RUNNING, "cell_id": cell_id, "updated_at": now})
        await self.store.update(guid, decide)
        return should_start

    async def complete(self, guid: str, req: CompleteTaskRequest) -> Task:
        now = self.clock.now_ns()

        def decide(task: Task) -> Task:
            if task.state is T.RUNNING and task.cell_id != req.cell_id:
                raise RunningOnDifferentCell(f"task {guid} runs on {task.cell_id}, not {req.cell_id}")
            _require(task, T.COMPLETED)
            if task.state is not T.RUNNING:
                raise InvalidTransition(f"task {guid} is {task.state}, not RUNNING")
            return _completed(task, now, req.failed, req.failure_reason, req.result)
        _, after = await self.store.update(guid, decide)
        assert after is not None
        self.on_completed(after)
        return after

    async def fail(self, guid: str, reason: str) -> Task:
        before, after = await self._fail(guid, reason)
        return after

    async def _fail(self, guid: str, reason: str) -> tuple[Task, Task]:
        now = self.clock.now_ns()

        def decide(task: Task) -> Task:
            if task.state not in (T.PENDING, T.RUNNING):
                raise InvalidTransition(f"task {guid} is {task.state}; only PENDING or RUNNING tasks can fail")
            return _completed(task, now, True, reason)
        before, after = await self.store.update(guid, decide)
        assert after is not None
        self.on_completed(after)
        return before, after

    async def cancel(self, guid: str) -> Task:
        before, after = await self._fail(guid, CANCELLED)
        if before.state is T.RUNNING and before.cell_id:
            cell = await self.cells.cell(before.cell_id)
            if cell is not None:
                try:
                    await self.reps.cancel_task(cell, guid)
                except Exception as exc:  # best effort: the rep converges on its own
                    log.warning("cancel-on-rep-failed", task_guid=guid, cell_id=before.cell_id, error=str(exc))
        return after

    async def reject(self, guid: str, reason: str) -> Task:
        """Back to PENDING, or failed after `max_retries` rejections. No auction request here: task
        convergence re-auctions PENDING tasks (reference §4.6), so a cell-less cluster does not
        burn a task's retries in milliseconds."""
        now = self.clock.now_ns()

        def decide(task: Task) -> Task:
            if task.state not in (T.PENDING, T.RUNNING):
                raise InvalidTransition(f"task {guid} is {task.state}; only PENDING or RUNNING tasks can be rejected")
            if task.rejection_count >= self.max_retries:
                return _completed(task, now, True, reason)
            return task.model_copy(update={
                "state": T.PENDING, "cell_id": "", "rejection_count": task.rejection_count + 1,
                "rejection_reason": truncate(reason), "updated_at": now})
        _, after = await self.store.update(guid, decide)
        assert after is not None
        if after.state is not T.PENDING:
            self.on_completed(after)
        return after

    async def resolving(self, guid: str) -> Task:
        now = self.clock.now_ns()

        def decide(task: Task) -> Task:
            if task.state is not T.COMPLETED:
                raise InvalidTransition(f"task {guid} is {task.state}, not COMPLETED")
            return task.model_copy(update={"state": T.RESOLVING, "updated_at": now})
        _, after = await self.store.update(guid, decide)
        assert after is not None
        return after

    async def delete(self, guid: str) -> Task:
        def decide(task: Task) -> None:
            if task.state is not T.RESOLVING:
                raise InvalidTransition(f"task {guid} is {task.state}, not RESOLVING")
            return None
        before, _ = await self.store.update(guid, decide)
        return before

    # ---- convergence (reference §5.3): each write is one transaction that compares the task's
    # mod_revision as the converger read it, so a concurrent change makes it a no-op (None/False)
    async def fail_if_unchanged(self, task: Task, rev: int, reason: str, now: int) -> Task | None:
        """PENDING/RUNNING → COMPLETED(failed, reason); the callback follows as for any failure."""
        if task.state not in (T.PENDING, T.RUNNING):
            return None
        after = _completed(task, now, True, reason)
        if not await self.store.replace_if_unchanged(task.task_guid, rev, after):
            return None
        self.on_completed(after)
        return after

    async def demote_if_unchanged(self, task: Task, rev: int) -> Task | None:
        """RESOLVING → COMPLETED: its resolver died. updated_at is kept, as Diego does."""
        if task.state is not T.RESOLVING:
            return None
        after = task.model_copy(update={"state": T.COMPLETED})
        if not await self.store.replace_if_unchanged(task.task_guid, rev, after):
            return None
        return after

    async def delete_if_unchanged(self, guid: str, rev: int) -> bool:
        return await self.store.replace_if_unchanged(guid, rev, None)
