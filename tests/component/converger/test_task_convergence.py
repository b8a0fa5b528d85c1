"""Task convergence (reference §5.3) through the real shell and store, with a fake clock."""
from __future__ import annotations

from control.converger.actions import CELL_DISAPPEARED, EXPIRED_PENDING
from control.converger.planner import plan
from control.models.task import Task, TaskState
from tests import factories

from .conftest import SEC, World

T = TaskState
MIN = 60 * SEC


async def make_task(world: World, guid: str, age_s: float = 0, **fields: object) -> Task:
    created = world.clock.now_ns() - int(age_s * SEC)
    body = factories.task_request(task_guid=guid)
    callback = fields.pop("callback", "")
    if callback:
        body["task_definition"]["completion_callback_url"] = callback
    data = {**body, "created_at": created, "updated_at": created, **fields}
    task = Task.model_validate(data)
    await world.tasks.create(task)
    return task


async def test_pending_tasks_are_kicked_in_one_batch_and_expire_after_30_minutes(world: World) -> None:
    await world.add_cell("cell-1")
    await make_task(world, "young-1", age_s=10)
    await make_task(world, "young-2", age_s=29 * 60)
    await make_task(world, "old", age_s=30 * 60 + 1, callback="http://127.0.0.1:1/cb")

    await world.converge()

    assert [sorted(r.task_guid for r in batch) for batch in world.auctioneer.task_batches] == [["young-1", "young-2"]]
    old = await world.tasks.get("old")
    assert (old.state, old.failed, old.failure_reason, old.first_completed_at) == (
        T.COMPLETED, True, EXPIRED_PENDING, world.clock.now_ns())
    assert [t.task_guid for t in world.completed] == ["old"]  # handed to the callback worker
    assert (await world.tasks.get("young-1")).state is T.PENDING


async def test_running_tasks_of_a_vanished_cell_fail(world: World) -> None:
    await world.add_cell("cell-1")
    await make_task(world, "here", state="RUNNING", cell_id="cell-1")
    await make_task(world, "lost", state="RUNNING", cell_id="cell-2")
    await world.converge()
    assert (await world.tasks.get("here")).state is T.RUNNING
    lost = await world.tasks.get("lost")
    assert (lost.state, lost.failed, lost.failure_reason, lost.cell_id) == (T.COMPLETED, True, CELL_DISAPPEARED, "")


async def test_stuck_resolving_is_demoted_and_its_callback_kicked_and_old_completed_deleted(world: World) -> None:
    await world.add_cell("cell-1")
    now = world.clock.now_ns()
    await make_task(world, "stuck", state="RESOLVING", failed=True, updated_at=now - 31 * SEC,
                    first_completed_at=now - MIN, callback="http://127.0.0.1:1/cb")
    await make_task(world, "busy", state="RESOLVING", failed=True, updated_at=now - 10 * SEC, first_completed_at=now - MIN)
    await make_task(world, "expired", state="COMPLETED", failed=True, updated_at=now - 121 * SEC,
                    first_completed_at=now - 121 * SEC)
    await make_task(world, "recent", state="COMPLETED", failed=True, updated_at=now - 10 * SEC,
                    first_completed_at=now - 10 * SEC)

    report = await world.converge()

    stuck = await world.tasks.get("stuck")
    assert (stuck.state, stuck.updated_at) == (T.COMPLETED, now - 31 * SEC)
    assert [t.task_guid for t in world.completed] == ["stuck"] and world.completed[0].state is T.COMPLETED
    assert (await world.tasks.get("busy")).state is T.RESOLVING
    assert (await world.tasks.get("recent")).state is T.COMPLETED
    assert {t.task_guid for t in await world.tasks.list()} == {"stuck", "busy", "recent"}
    assert report.outcome.applied == {"demote-resolving": 1, "kick-completed": 1, "delete-task": 1}


async def test_completed_tasks_are_deleted_two_minutes_after_they_first_completed(world: World) -> None:
    await world.add_cell("cell-1")
    now = world.clock.now_ns()
    await make_task(world, "done", state="COMPLETED", updated_at=now, first_completed_at=now)
    world.clock.advance(120)
    await world.converge()
    assert [t.task_guid for t in await world.tasks.list()] == ["done"]
    world.clock.advance(1)
    await world.converge()
    assert await world.tasks.list() == []


async def test_a_task_that_does_not_deserialize_is_pruned(world: World) -> None:
    await world.add_cell("cell-1")
    await world.etcd.put(world.keys.task("broken"), b'{"task_guid": "broken", "state": "SIDEWAYS"}')
    await world.converge()
    assert await world.etcd.get(world.keys.task("broken")) is None


async def test_a_task_changed_after_the_snapshot_is_left_alone(world: World) -> None:
    await world.add_cell("cell-1")
    await make_task(world, "lost", state="RUNNING", cell_id="cell-2")
    snap = await world.converger.load()
    now = world.clock.now_ns()
    actions = plan(snap, now, world.cfg)
    assert [a.kind for a in actions] == ["fail-task"]
    # the rep completes it meanwhile
    await world.tasks.update("lost", lambda t: t.model_copy(update={"state": T.COMPLETED, "result": "42", "cell_id": ""}))
    outcome = await world.converger.apply(snap, actions, now)
    assert outcome.noop == {"fail-task": 1}
    done = await world.tasks.get("lost")
    assert (done.state, done.failed, done.result) == (T.COMPLETED, False, "42")
    assert world.completed == []
