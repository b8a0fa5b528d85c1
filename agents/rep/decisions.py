"""The rep's desired-vs-actual diff (reference §2.5, §2.9): pure functions of one container and
the BBS rows that concern it, returning what to do. The harmonizer (harmonizer.py) runs the
decision against the BBS and the executor, including the error branches (a failed claim deletes
the container, a refused start stops it).

Rows passed in are those of the container's (process_guid, index) whose cell is this cell.
"""
from __future__ import annotations

from enum import StrEnum

from control.models.actual_lrp import ActualLRP, ActualLRPState, Presence
from control.models.task import Task, TaskState

from agents.executor.models import Container, ContainerState

C = ContainerState


class LRPDecision(StrEnum):
    CLAIM_AND_RUN = "claim-and-run"            # reserved: claim, fetch the DLRP, run the container
    RECLAIM = "reclaim"                        # initializing/created: (re)claim; on refusal delete
    START = "start"                            # running: report RUNNING with net info (every poll)
    REMOVE_AND_DELETE = "remove-and-delete"    # completed after stop(): remove the row, delete
    CRASH_AND_DELETE = "crash-and-delete"      # completed by failure: crash the row, delete
    DELETE = "delete"                          # completed and no row of ours: just delete
    EVACUATE_CLAIMED = "evacuate-claimed"      # evacuating, not yet running: hand back, delete
    EVACUATE_RUNNING = "evacuate-running"      # evacuating, running: keep serving until replaced
    EVACUATE_STOPPED = "evacuate-stopped"
    EVACUATE_CRASHED = "evacuate-crashed"
    NOTHING = "nothing"


class TaskDecision(StrEnum):
    START_AND_RUN = "start-and-run"            # reserved + PENDING: StartTask, then run
    COMPLETE_AND_DELETE = "complete-and-delete"
    REJECT_AND_DELETE = "reject-and-delete"    # failed before the action ran: re-auction
    DELETE = "delete"                          # the task is gone, done, or another cell's
    STOP_AND_DELETE = "stop-and-delete"        # running for a task that is no longer ours
    NOTHING = "nothing"


def _ours(rows: list[ActualLRP], guid: str) -> ActualLRP | None:
    for presence in (Presence.ORDINARY, Presence.EVACUATING, Presence.SUSPECT):
        for row in rows:
            if row.presence is presence and row.instance_guid == guid:
                return row
    return None


def decide_lrp(container: Container, rows: list[ActualLRP], evacuating: bool) -> LRPDecision:
    state = container.state
    if evacuating:
        if state in (C.RESERVED, C.INITIALIZING, C.CREATED):
            return LRPDecision.EVACUATE_CLAIMED
        if state is C.RUNNING:
            return LRPDecision.EVACUATE_RUNNING
        result = container.run_result
        stopped = result is not None and result.stopped
        return LRPDecision.EVACUATE_STOPPED if stopped else LRPDecision.EVACUATE_CRASHED
    if state is C.RESERVED:
        return LRPDecision.CLAIM_AND_RUN
    if state in (C.INITIALIZING, C.CREATED):
        return LRPDecision.RECLAIM
    if state is C.RUNNING:
        return LRPDecision.START
    row = _ours(rows, container.guid)
    if row is None or row.state not in (ActualLRPState.CLAIMED, ActualLRPState.RUNNING):
        return LRPDecision.DELETE
    result = container.run_result
    if result is not None and result.stopped:
        return LRPDecision.REMOVE_AND_DELETE
    return LRPDecision.CRASH_AND_DELETE


def orphan_rows(rows: list[ActualLRP], container_guids: set[str]) -> tuple[list[ActualLRP], list[ActualLRP]]:
    """Rows of this cell with no container: (ORDINARY claimed/running -> remove,
    EVACUATING -> remove_evacuating). Suspect rows are left to convergence."""
    remove, remove_evac = [], []
    for row in rows:
        if row.instance_guid in container_guids:
            continue
        if row.presence is Presence.ORDINARY and row.state in (ActualLRPState.CLAIMED, ActualLRPState.RUNNING):
            remove.append(row)
        elif row.presence is Presence.EVACUATING:
            remove_evac.append(row)
    return remove, remove_evac


def decide_task(container: Container, task: Task | None, cell_id: str) -> TaskDecision:
    ours = task is not None and task.cell_id == cell_id and task.state is TaskState.RUNNING
    if container.state is C.RESERVED:
        if task is not None and task.state is TaskState.PENDING:
            return TaskDecision.START_AND_RUN
        return TaskDecision.NOTHING if ours else TaskDecision.DELETE
    if container.state is C.COMPLETED:
        if not ours:
            return TaskDecision.DELETE
        result = container.run_result
        if result is not None and result.retryable:
            return TaskDecision.REJECT_AND_DELETE
        return TaskDecision.COMPLETE_AND_DELETE
    return TaskDecision.NOTHING if ours else TaskDecision.STOP_AND_DELETE


def orphan_tasks(tasks: list[Task], container_guids: set[str], cell_id: str) -> list[Task]:
    """RUNNING tasks of this cell with no container: completed as failed by the harmonizer."""
    return [t for t in tasks if t.cell_id == cell_id and t.state is TaskState.RUNNING
            and t.task_guid not in container_guids]
