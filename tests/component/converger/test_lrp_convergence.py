"""One convergence pass of the real shell over real etcd: the resulting ActualLRP rows, the
auction batches and the rep stops (reference §5.2, §2.6)."""
from __future__ import annotations

import pytest

from control.converger.planner import plan
from control.coordination import fence
from control.kit.etcd import FencedOut
from control.models.actual_lrp import ActualLRPState, Presence

from .conftest import World

S = ActualLRPState
P = Presence


async def test_a_vanished_cells_instances_turn_suspect_and_are_promoted_when_it_returns(world: World) -> None:
    await world.domain()
    await world.desire("web", 2)
    await world.put(world.running("web", 0, "cell-1"), world.running("web", 1, "cell-2"))
    await world.add_cell("cell-1")

    report = await world.converge()

    rows = await world.rows("web")
    assert set(rows[0]) == {P.ORDINARY} and rows[0][P.ORDINARY].cell_id == "cell-1"
    suspect, replacement = rows[1][P.SUSPECT], rows[1][P.ORDINARY]
    assert (suspect.state, suspect.cell_id, suspect.routable) == (S.RUNNING, "cell-2", True)
    assert (replacement.state, replacement.cell_id) == (S.UNCLAIMED, "")
    assert world.auctioneer.lrp_indices("web") == [1] and len(world.auctioneer.lrp_batches) == 1
    assert report.outcome.applied["mark-suspect"] == 1 and report.outcome.missing_cells == {"cell-2"}

    await world.add_cell("cell-2")
    await world.converge()

    rows = await world.rows("web")
    assert set(rows[1]) == {P.ORDINARY}
    promoted = rows[1][P.ORDINARY]
    assert (promoted.state, promoted.cell_id, promoted.instance_guid) == (S.RUNNING, "cell-2", suspect.instance_guid)
    assert promoted.modification_tag.index == suspect.modification_tag.index + 1


async def test_a_second_missing_cell_unclaims_the_replacement_and_keeps_the_suspect(world: World) -> None:
    await world.domain()
    await world.desire("web", 1)
    await world.put(world.running("web", 0, "cell-1", presence=P.SUSPECT),
                    world.running("web", 0, "cell-2", state=S.CLAIMED))
    await world.add_cell("cell-3")
    await world.converge()
    rows = (await world.rows("web"))[0]
    assert rows[P.SUSPECT].cell_id == "cell-1" and rows[P.ORDINARY].state is S.UNCLAIMED
    assert world.auctioneer.lrp_indices("web") == [0]


async def test_missing_instances_are_created_and_extras_retired(world: World) -> None:
    await world.domain()
    await world.add_cell("cell-1")
    await world.desire("web", 3)
    running_extra = world.running("web", 3, "cell-1")
    await world.put(world.running("web", 0, "cell-1"), running_extra, world.unclaimed("web", 4))

    await world.converge()

    rows = await world.rows("web")
    assert sorted(rows) == [0, 1, 2, 3]  # 4 (UNCLAIMED) deleted; 3 (RUNNING) is stopped by its rep
    assert rows[1][P.ORDINARY].state is S.UNCLAIMED and rows[2][P.ORDINARY].state is S.UNCLAIMED
    assert world.auctioneer.lrp_indices("web") == [1, 2]
    assert world.reps.stops == [("cell-1", "web", running_extra.instance_guid)]
    batch = world.auctioneer.lrp_batches[0][0]
    assert (batch.domain, batch.resource.memory_mb, batch.rootfs) == ("apps", 64, "preloaded:busybox")


async def test_nothing_is_retired_in_a_stale_domain(world: World) -> None:
    await world.add_cell("cell-1")  # no domain upserted: "apps" is not fresh
    await world.desire("web", 1)
    await world.put(world.running("web", 0, "cell-1"), world.unclaimed("web", 1),
                    world.running("orphan", 0, "cell-1"), world.unclaimed("orphan", 1))
    await world.converge()
    assert sorted(await world.rows("web")) == [0, 1]
    assert sorted(await world.rows("orphan")) == [0, 1]
    assert world.reps.stops == []


async def test_orphaned_instances_and_suspects_are_retired_in_a_fresh_domain(world: World) -> None:
    await world.domain()
    await world.add_cell("cell-1")
    orphan = world.running("orphan", 0, "cell-1")
    await world.put(orphan, world.running("orphan", 0, "cell-9", presence=P.SUSPECT), world.crashed("orphan", 1, 5))
    await world.converge()
    rows = await world.rows("orphan")
    assert set(rows) == {0} and set(rows[0]) == {P.ORDINARY}  # suspect and CRASHED row deleted
    assert world.reps.stops == [("cell-1", "orphan", orphan.instance_guid)]


async def test_crashed_instances_restart_on_the_backoff_schedule(world: World) -> None:
    await world.add_cell("cell-1")
    await world.desire("web", 1)
    await world.put(world.crashed("web", 0, count=4))   # 4th crash in a row: wait 60 s

    await world.converge()
    assert (await world.rows("web"))[0][P.ORDINARY].state is S.CRASHED
    world.clock.advance(59)
    await world.converge()
    assert (await world.rows("web"))[0][P.ORDINARY].state is S.CRASHED
    assert world.auctioneer.lrp_batches == []

    world.clock.advance(1)
    await world.converge()
    restarted = (await world.rows("web"))[0][P.ORDINARY]
    assert (restarted.state, restarted.crash_count, restarted.since) == (S.UNCLAIMED, 4, world.clock.now_ns())
    assert world.auctioneer.lrp_indices("web") == [0]


async def test_stale_unclaimed_instances_are_auctioned_again_without_a_write(world: World) -> None:
    await world.add_cell("cell-1")
    await world.desire("web", 3)
    stale = world.unclaimed("web", 0, age_s=31)
    await world.put(stale, world.unclaimed("web", 1, age_s=10), world.running("web", 2, "cell-1"))
    await world.converge()
    assert world.auctioneer.lrp_indices("web") == [0]
    assert (await world.rows("web"))[0][P.ORDINARY] == stale


async def test_evacuating_leftovers_on_missing_cells_are_pruned(world: World) -> None:
    await world.add_cell("cell-1")
    await world.desire("web", 2)
    await world.put(world.unclaimed("web", 0), world.running("web", 0, "cell-gone", presence=P.EVACUATING),
                    world.unclaimed("web", 1), world.running("web", 1, "cell-1", presence=P.EVACUATING))
    await world.converge()
    rows = await world.rows("web")
    assert set(rows[0]) == {P.ORDINARY} and set(rows[1]) == {P.ORDINARY, P.EVACUATING}


async def test_a_failed_cell_listing_skips_the_pass(world: World) -> None:
    class Broken:
        async def presences(self) -> dict[str, bytes]:
            raise ConnectionError("consul is down")
    world.converger.presences = Broken()
    await world.domain()
    await world.desire("web", 2)
    await world.put(world.running("web", 0, "cell-1"), world.unclaimed("orphan", 0))
    report = await world.converge()
    assert report.skipped and not report.planned
    assert sorted(await world.rows("web")) == [0] and sorted(await world.rows("orphan")) == [0]


# ---- a concurrent change between the snapshot and the apply --------------------------------------

async def test_a_row_changed_after_the_snapshot_makes_its_action_a_noop(world: World) -> None:
    await world.add_cell("cell-1")
    await world.desire("web", 2)
    lost, crashed = world.running("web", 0, "cell-2"), world.crashed("web", 1, count=1)
    await world.put(lost, crashed)

    snap = await world.converger.load()
    now = world.clock.now_ns()
    actions = plan(snap, now, world.cfg)
    assert {a.kind for a in actions} == {"mark-suspect", "restart-crashed"}
    # meanwhile the instance moves to a live cell and the crashed one is claimed elsewhere
    moved = world.running("web", 0, "cell-1")
    reclaimed = world.running("web", 1, "cell-1", state=S.CLAIMED)
    await world.put(moved, reclaimed)

    outcome = await world.converger.apply(snap, actions, now)

    assert outcome.noop == {"mark-suspect": 1, "restart-crashed": 1} and not outcome.applied
    rows = await world.rows("web")
    assert rows == {0: {P.ORDINARY: moved}, 1: {P.ORDINARY: reclaimed}}
    assert world.auctioneer.lrp_batches == []


async def test_a_creation_is_all_or_nothing(world: World) -> None:
    await world.add_cell("cell-1")
    await world.desire("web", 3)
    snap = await world.converger.load()
    now = world.clock.now_ns()
    actions = plan(snap, now, world.cfg)
    assert [a.kind for a in actions] == ["create-missing"]
    await world.put(world.unclaimed("web", 1))  # someone else created index 1 meanwhile

    outcome = await world.converger.apply(snap, actions, now)

    assert outcome.noop == {"create-missing": 1}
    assert sorted(await world.rows("web")) == [1]  # neither 0 nor 2 half-written
    await world.converge()  # the next pass plans on the new state
    assert sorted(await world.rows("web")) == [0, 1, 2]
    assert world.auctioneer.lrp_indices("web") == [0, 2]


async def test_a_scale_down_after_the_snapshot_refuses_the_creation(world: World) -> None:
    await world.add_cell("cell-1")
    await world.desire("web", 3)
    snap = await world.converger.load()
    now = world.clock.now_ns()
    actions = plan(snap, now, world.cfg)
    sched, rev = await world.lrps.get_scheduling_info("web")
    assert await world.lrps.update_schedule("web", sched, rev, sched.model_copy(update={"instances": 1}), [])
    outcome = await world.converger.apply(snap, actions, now)
    assert outcome.noop == {"create-missing": 1} and await world.rows("web") == {}


async def test_a_converger_that_lost_its_lock_writes_nothing(world: World) -> None:
    await world.add_cell("cell-1")
    await world.desire("web", 2)
    await world.put(world.running("web", 0, "cell-gone"))
    token = await fence.bump(world.etcd, world.keys.prefix, "converger")
    world.etcd.fence = (fence.fence_key(world.keys.prefix, "converger"), fence.encode(token))
    await fence.bump(world.etcd, world.keys.prefix, "converger")  # another converger took over
    try:
        with pytest.raises(FencedOut):
            await world.converge()
    finally:
        world.etcd.fence = None
    rows = await world.rows("web")
    assert set(rows) == {0} and set(rows[0]) == {P.ORDINARY} and rows[0][P.ORDINARY].cell_id == "cell-gone"
    assert world.auctioneer.lrp_batches == []
