"""Table tests of the rep's pure reconciliation decisions (reference §2.5, §2.9)."""
from __future__ import annotations

import pytest

from agents.executor.models import Container, ContainerState, RunResult
from agents.rep.decisions import (LRPDecision, TaskDecision, decide_lrp, decide_task, orphan_rows,
                                  orphan_tasks)
from control.models.actual_lrp import ActualLRP, ActualLRPState, Presence
from control.models.task import Task, TaskDefinition, TaskState

CELL = "cell-a"
C = ContainerState
D = LRPDecision


def container(state: ContainerState, guid: str = "ig-1", result: RunResult | None = None, task: bool = False) -> Container:
    tags = {"lifecycle": "task"} if task else {"lifecycle": "lrp", "process_guid": "pg", "index": "0"}
    return Container(guid=guid, state=state, allocated_at=0.0, tags=tags, run_result=result)


def row(state: ActualLRPState, guid: str = "ig-1", cell: str = CELL, presence: Presence = Presence.ORDINARY) -> ActualLRP:
    fields: dict[str, object] = {"process_guid": "pg", "index": 0, "domain": "d", "state": state, "presence": presence}
    if state in (ActualLRPState.CLAIMED, ActualLRPState.RUNNING):
        fields.update(instance_guid=guid, cell_id=cell)
    if state is ActualLRPState.RUNNING:
        fields.update(address="10.0.0.1")
    return ActualLRP.model_validate(fields)


CRASHED = RunResult(failed=True, failure_reason="Exit status 3")
STOPPED = RunResult(stopped=True)
R = ActualLRPState


@pytest.mark.parametrize("state,rows,result,expected", [
    (C.RESERVED, [], None, D.CLAIM_AND_RUN),
    (C.INITIALIZING, [row(R.CLAIMED)], None, D.RECLAIM),
    (C.CREATED, [row(R.CLAIMED)], None, D.RECLAIM),
    (C.RUNNING, [row(R.CLAIMED)], None, D.START),
    (C.RUNNING, [], None, D.START),  # the BBS refuses if it runs elsewhere; the rep then deletes
    (C.COMPLETED, [row(R.RUNNING)], STOPPED, D.REMOVE_AND_DELETE),
    (C.COMPLETED, [row(R.RUNNING)], CRASHED, D.CRASH_AND_DELETE),
    (C.COMPLETED, [row(R.CLAIMED)], CRASHED, D.CRASH_AND_DELETE),
    (C.COMPLETED, [row(R.RUNNING, guid="other")], CRASHED, D.DELETE),  # replaced: not ours any more
    (C.COMPLETED, [], CRASHED, D.DELETE),
    (C.COMPLETED, [row(R.RUNNING, presence=Presence.EVACUATING)], CRASHED, D.CRASH_AND_DELETE),
])
def test_lrp_decisions(state: ContainerState, rows: list[ActualLRP], result: RunResult | None, expected: LRPDecision) -> None:
    assert decide_lrp(container(state, result=result), rows, evacuating=False) is expected


@pytest.mark.parametrize("state,result,expected", [
    (C.RESERVED, None, D.EVACUATE_CLAIMED),
    (C.INITIALIZING, None, D.EVACUATE_CLAIMED),
    (C.CREATED, None, D.EVACUATE_CLAIMED),
    (C.RUNNING, None, D.EVACUATE_RUNNING),
    (C.COMPLETED, STOPPED, D.EVACUATE_STOPPED),
    (C.COMPLETED, CRASHED, D.EVACUATE_CRASHED),
])
def test_lrp_decisions_while_evacuating(state: ContainerState, result: RunResult | None, expected: LRPDecision) -> None:
    assert decide_lrp(container(state, result=result), [row(R.RUNNING)], evacuating=True) is expected


def test_orphan_rows_split_ordinary_and_evacuating() -> None:
    rows = [row(R.RUNNING, guid="gone"), row(R.CLAIMED, guid="gone2"), row(R.RUNNING, guid="here"),
            row(R.RUNNING, guid="evac", presence=Presence.EVACUATING),
            row(R.RUNNING, guid="sus", presence=Presence.SUSPECT), row(R.UNCLAIMED)]
    remove, remove_evac = orphan_rows(rows, {"here"})
    assert [r.instance_guid for r in remove] == ["gone", "gone2"]
    assert [r.instance_guid for r in remove_evac] == ["evac"]


def task(state: TaskState, cell: str = CELL) -> Task:
    definition = TaskDefinition.model_validate({"rootfs": "preloaded:busybox",
                                                "action": {"run": {"path": "true", "user": "root"}}})
    return Task(task_guid="t1", domain="d", task_definition=definition, state=state,
                cell_id=cell if state is TaskState.RUNNING else "")


T = TaskDecision


@pytest.mark.parametrize("state,the_task,result,expected", [
    (C.RESERVED, task(TaskState.PENDING), None, T.START_AND_RUN),
    (C.RESERVED, None, None, T.DELETE),
    (C.RESERVED, task(TaskState.COMPLETED), None, T.DELETE),
    (C.RESERVED, task(TaskState.RUNNING), None, T.NOTHING),
    (C.RUNNING, task(TaskState.RUNNING), None, T.NOTHING),
    (C.INITIALIZING, task(TaskState.RUNNING), None, T.NOTHING),
    (C.RUNNING, task(TaskState.COMPLETED), None, T.STOP_AND_DELETE),   # cancelled
    (C.RUNNING, task(TaskState.RUNNING, cell="other"), None, T.STOP_AND_DELETE),
    (C.RUNNING, None, None, T.STOP_AND_DELETE),
    (C.COMPLETED, task(TaskState.RUNNING), RunResult(result="42"), T.COMPLETE_AND_DELETE),
    (C.COMPLETED, task(TaskState.RUNNING), RunResult(failed=True, retryable=True, failure_reason="x"), T.REJECT_AND_DELETE),
    (C.COMPLETED, task(TaskState.COMPLETED), RunResult(result="42"), T.DELETE),
    (C.COMPLETED, task(TaskState.RESOLVING), RunResult(), T.DELETE),
])
def test_task_decisions(state: ContainerState, the_task: Task | None, result: RunResult | None, expected: TaskDecision) -> None:
    assert decide_task(container(state, guid="t1", result=result, task=True), the_task, CELL) is expected


def test_orphan_tasks_are_running_tasks_of_this_cell_without_container() -> None:
    tasks = [task(TaskState.RUNNING), task(TaskState.RUNNING, cell="other"), task(TaskState.PENDING)]
    assert [t.task_guid for t in orphan_tasks(tasks, set(), CELL)] == ["t1"]
    assert orphan_tasks(tasks, {"t1"}, CELL) == []
