"""The planner, step by step (reference §5.2, §2.6, §5.3): a snapshot and a fake `now` in, the
typed actions out. No I/O. Each case names the step it checks."""
from __future__ import annotations

from datetime import timedelta

import pytest

from control.converger.actions import (CELL_DISAPPEARED, EXPIRED_PENDING, AuctionUnclaimed, CreateMissing,
                                       DeleteTask, DemoteResolving, FailTask, KickCompleted, KickTasks,
                                       MarkSuspect, PromoteSuspect, PruneEvacuating, RemoveSuspect,
                                       RestartCrashed, RetireExtra, RetireOrphaned, UnclaimReplacement)
from control.converger.config import ConvergerConfig
from control.converger.planner import plan

from .builders import NOW, SEC, desired, row, snapshot, task

CFG = ConvergerConfig()
MIN = 60 * SEC


# ---- LRPs: instance counts (step 6) and orphans (step 7) ------------------------------------------

def test_a_converged_lrp_needs_nothing() -> None:
    snap = snapshot([row(index=0), row(index=1)], [desired(instances=2)])
    assert plan(snap, NOW, CFG) == []


def test_missing_indices_are_created_in_one_action_per_lrp() -> None:
    snap = snapshot([row(index=1)], [desired(instances=4), desired("other", instances=1)])
    assert plan(snap, NOW, CFG) == [CreateMissing("web", (0, 2, 3)), CreateMissing("other", (0,))]


def test_creating_missing_instances_is_never_gated_by_freshness() -> None:
    snap = snapshot([], [desired(instances=2)], fresh=())
    assert plan(snap, NOW, CFG) == [CreateMissing("web", (0, 1))]


def test_an_index_with_only_a_suspect_or_evacuating_row_is_missing() -> None:
    s = row(index=0, presence="SUSPECT", cell="gone")
    e = row(index=1, presence="EVACUATING", cell="cell-1")
    snap = snapshot([s, e], [desired(instances=2)])
    assert plan(snap, NOW, CFG) == [CreateMissing("web", (0, 1))]


def test_extra_instances_are_retired_when_the_domain_is_fresh() -> None:
    extra = row(index=2, state="UNCLAIMED", since=NOW - 5 * MIN)
    snap = snapshot([row(index=0), row(index=1), extra], [desired(instances=1)])
    assert plan(snap, NOW, CFG) == [RetireExtra(row(index=1)), RetireExtra(extra)]


def test_extra_instances_are_kept_while_the_domain_is_stale() -> None:
    snap = snapshot([row(index=0), row(index=1)], [desired(instances=1)], fresh=())
    assert plan(snap, NOW, CFG) == []


def test_extra_freshness_is_the_desired_lrps_domain() -> None:
    snap = snapshot([row(index=1, domain="other")], [desired(instances=1, domain="apps")], fresh=("apps",))
    assert RetireExtra(row(index=1, domain="other")) in plan(snap, NOW, CFG)


def test_a_retired_extra_gets_no_other_decision() -> None:
    lost = row(index=1, cell="gone")
    crashed = row(index=2, state="CRASHED", crash_count=1, since=NOW - 5 * MIN)
    snap = snapshot([row(index=0), lost, crashed], [desired(instances=1)])
    assert plan(snap, NOW, CFG) == [RetireExtra(lost), RetireExtra(crashed)]


def test_orphaned_instances_and_suspects_are_retired_only_in_fresh_domains() -> None:
    fresh_o = row("gone-app", 0, domain="apps")
    fresh_s = row("gone-app", 0, presence="SUSPECT", cell="cell-9", domain="apps")
    stale_o = row("old-app", 0, domain="old")
    stale_s = row("old-app", 1, presence="SUSPECT", cell="cell-9", domain="old")
    snap = snapshot([fresh_o, fresh_s, stale_o, stale_s], [], fresh=("apps",))
    assert plan(snap, NOW, CFG) == [RetireOrphaned(fresh_o), RemoveSuspect(fresh_s, "orphaned")]


def test_orphans_get_no_suspect_crash_or_stale_decisions() -> None:
    rows = [row("gone-app", 0, cell="gone"), row("gone-app", 1, state="CRASHED", crash_count=1),
            row("gone-app", 2, state="UNCLAIMED", since=NOW - 5 * MIN)]
    assert plan(snapshot(rows, [], fresh=()), NOW, CFG) == []


def test_an_unreadable_desired_lrp_protects_its_instances() -> None:
    snap = snapshot([row("broken", 0, cell="gone")], [], unreadable=("broken",))
    assert plan(snap, NOW, CFG) == []


# ---- stale UNCLAIMED (step 4) and CRASHED (step 10, §2.3) ----------------------------------------

@pytest.mark.parametrize("age_s, auctioned", [(29, False), (30, False), (31, True), (3600, True)])
def test_unclaimed_rows_older_than_the_threshold_are_auctioned_again(age_s: int, auctioned: bool) -> None:
    snap = snapshot([row(index=0, state="UNCLAIMED", since=NOW - age_s * SEC), row(index=1)], [desired(instances=2)])
    assert plan(snap, NOW, CFG) == ([AuctionUnclaimed("web", (0,))] if auctioned else [])


def test_stale_unclaimed_indices_of_one_lrp_share_one_action() -> None:
    old = NOW - MIN
    rows = [row(index=i, state="UNCLAIMED", since=old) for i in (0, 2, 10)] + [row(index=1), row(index=3, state="UNCLAIMED")]
    snap = snapshot(rows, [desired(instances=11)], cells=("cell-1",))
    actions = plan(snap, NOW, CFG)
    assert AuctionUnclaimed("web", (0, 2, 10)) in actions


def test_the_stale_threshold_comes_from_the_config() -> None:
    snap = snapshot([row(state="UNCLAIMED", since=NOW - 6 * SEC)], [desired()])
    assert plan(snap, NOW, ConvergerConfig(stale_unclaimed=timedelta(seconds=5))) == [AuctionUnclaimed("web", (0,))]


# count → (seconds since the crash, restarted?) on the backoff schedule of reference §2.3
@pytest.mark.parametrize("count, age_s, restarted", [
    (1, 0, True), (2, 0, True),
    (3, 29, False), (3, 30, True),
    (4, 59, False), (4, 60, True),
    (5, 119, False), (5, 120, True),
    (8, 959, False), (8, 960, True),
    (199, 960, True), (200, 10**6, False), (250, 10**6, False),
])
def test_crashed_rows_restart_on_the_backoff_schedule(count: int, age_s: int, restarted: bool) -> None:
    crashed = row(state="CRASHED", crash_count=count, since=NOW - age_s * SEC)
    assert plan(snapshot([crashed], [desired()]), NOW, CFG) == ([RestartCrashed(crashed)] if restarted else [])


# ---- missing cells and SUSPECT (step 5, §2.6) ---------------------------------------------------

@pytest.mark.parametrize("state", ["RUNNING", "CLAIMED"])
def test_an_instance_on_a_missing_cell_turns_suspect(state: str) -> None:
    lost = row(state=state, cell="cell-2")
    assert plan(snapshot([lost], [desired()]), NOW, CFG) == [MarkSuspect(lost)]


def test_unclaimed_and_crashed_rows_have_no_cell_to_lose() -> None:
    rows = [row(index=0, state="UNCLAIMED"), row(index=1, state="CRASHED", crash_count=5)]
    assert plan(snapshot(rows, [desired(instances=2)], cells=()), NOW, CFG) == []


def test_with_no_cells_at_all_every_running_or_claimed_instance_is_missing() -> None:
    a, b = row(index=0, cell="cell-1"), row(index=1, state="CLAIMED", cell="cell-1")
    assert plan(snapshot([a, b], [desired(instances=2)], cells=()), NOW, CFG) == [MarkSuspect(a), MarkSuspect(b)]


def test_when_the_cells_cannot_be_listed_nothing_is_planned() -> None:
    snap = snapshot([row(cell="gone"), row("orphan", 0)], [desired(instances=3)], cells=None,
                    tasks=[task("t1"), task("t2", state="RUNNING", cell="gone")])
    assert plan(snap, NOW, CFG) == []


def test_a_replacement_whose_cell_is_missing_too_is_unclaimed_again() -> None:
    suspect = row(presence="SUSPECT", cell="cell-2")
    replacement = row(state="CLAIMED", cell="cell-3")
    snap = snapshot([suspect, replacement], [desired()], cells=("cell-1",))
    assert plan(snap, NOW, CFG) == [UnclaimReplacement(replacement, suspect)]


@pytest.mark.parametrize("replacement_state", [None, "UNCLAIMED", "CLAIMED"])
def test_a_suspect_whose_cell_is_back_is_promoted(replacement_state: str | None) -> None:
    suspect = row(presence="SUSPECT", cell="cell-1", since=NOW - 5 * MIN)
    replacement = None if replacement_state is None else row(state=replacement_state, cell="cell-2", since=NOW - 5 * MIN)
    rows = [suspect] + ([replacement] if replacement else [])
    snap = snapshot(rows, [desired()], cells=("cell-1", "cell-2"))
    # the replacement is deleted: no stale-unclaimed auction for it, no creation of index 0
    assert plan(snap, NOW, CFG) == [PromoteSuspect(suspect, replacement)]


def test_a_suspect_at_an_extra_index_is_promoted_and_retired_by_the_next_pass() -> None:
    suspect = row(index=1, presence="SUSPECT", cell="cell-1")
    snap = snapshot([row(index=0), suspect], [desired(instances=1)])
    assert plan(snap, NOW, CFG) == [PromoteSuspect(suspect, None)]
    promoted = row(index=1, cell="cell-1", tag=("epoch-1", 4))
    assert plan(snapshot([row(index=0), promoted], [desired(instances=1)]), NOW, CFG) == [RetireExtra(promoted)]


def test_scaled_to_zero_every_instance_is_extra() -> None:
    rows = [row(index=0), row(index=1, state="UNCLAIMED")]
    assert plan(snapshot(rows, [desired(instances=0)]), NOW, CFG) == [RetireExtra(r) for r in rows]


def test_a_suspect_is_not_promoted_by_an_empty_cell_set() -> None:
    suspect = row(presence="SUSPECT", cell="cell-1")
    replacement = row(state="UNCLAIMED")
    assert plan(snapshot([suspect, replacement], [desired()], cells=()), NOW, CFG) == []


def test_a_suspect_whose_replacement_runs_is_extra() -> None:
    suspect = row(presence="SUSPECT", cell="cell-1")  # its cell is even back
    replacement = row(state="RUNNING", cell="cell-2")
    snap = snapshot([suspect, replacement], [desired()], cells=("cell-1", "cell-2"))
    assert plan(snap, NOW, CFG) == [RemoveSuspect(suspect, "extra")]


def test_a_running_suspect_waits_while_its_replacement_is_placed() -> None:
    suspect = row(presence="SUSPECT", cell="gone")
    for replacement in (row(state="UNCLAIMED", since=NOW - SEC), row(state="CLAIMED", cell="cell-1")):
        assert plan(snapshot([suspect, replacement], [desired()]), NOW, CFG) == []


def test_a_stale_replacement_is_auctioned_again_while_the_suspect_serves() -> None:
    suspect = row(presence="SUSPECT", cell="gone")
    replacement = row(state="UNCLAIMED", since=NOW - MIN)
    assert plan(snapshot([suspect, replacement], [desired()]), NOW, CFG) == [AuctionUnclaimed("web", (0,))]


def test_extra_suspect_with_both_cells_missing_unclaims_the_replacement() -> None:
    suspect = row(presence="SUSPECT", cell="gone-1")
    replacement = row(state="RUNNING", cell="gone-2")
    assert plan(snapshot([suspect, replacement], [desired()]), NOW, CFG) == [UnclaimReplacement(replacement, suspect)]


# ---- evacuating leftovers (step 2) --------------------------------------------------------------

def test_evacuating_rows_on_missing_cells_are_pruned() -> None:
    kept = row(index=0, presence="EVACUATING", cell="cell-1")
    pruned = row(index=1, presence="EVACUATING", cell="gone")
    orphan = row("gone-app", 0, presence="EVACUATING", cell="gone", domain="old")
    rows = [kept, pruned, orphan, row(index=0, state="UNCLAIMED"), row(index=1, state="UNCLAIMED")]
    snap = snapshot(rows, [desired(instances=2)], fresh=())
    assert plan(snap, NOW, CFG) == [PruneEvacuating(pruned), PruneEvacuating(orphan)]


def test_with_no_cells_every_evacuating_row_is_pruned() -> None:
    evac = row(presence="EVACUATING", cell="cell-1")
    snap = snapshot([evac, row(state="UNCLAIMED")], [desired()], cells=())
    assert plan(snap, NOW, CFG) == [PruneEvacuating(evac)]


# ---- tasks (§5.3) -------------------------------------------------------------------------------

def test_pending_tasks_are_kicked_every_pass_and_expire_after_30_minutes() -> None:
    young, fresh = task("young", created=NOW - 29 * MIN), task("fresh", created=NOW)
    old = task("old", created=NOW - 30 * MIN - SEC)
    assert plan(snapshot(tasks=[young, old, fresh]), NOW, CFG) == [
        FailTask("old", 11, EXPIRED_PENDING), KickTasks(("young", "fresh"))]


def test_running_tasks_fail_when_their_cell_is_gone() -> None:
    tasks = [task("here", state="RUNNING", cell="cell-1"), task("lost", state="RUNNING", cell="cell-2")]
    assert plan(snapshot(tasks=tasks), NOW, CFG) == [FailTask("lost", 11, CELL_DISAPPEARED)]
    assert plan(snapshot(tasks=tasks, cells=()), NOW, CFG) == [
        FailTask("here", 11, CELL_DISAPPEARED), FailTask("lost", 11, CELL_DISAPPEARED)]


def test_resolving_tasks_are_demoted_after_the_kick_duration() -> None:
    done = NOW - MIN
    tasks = [task("young", state="RESOLVING", updated=NOW - 29 * SEC, first_completed=done),
             task("stuck", state="RESOLVING", updated=NOW - 31 * SEC, first_completed=done),
             task("stuck-cb", state="RESOLVING", updated=NOW - 31 * SEC, first_completed=done, callback="http://cb/x"),
             task("expired", state="RESOLVING", updated=NOW - 31 * SEC, first_completed=NOW - 121 * SEC)]
    assert plan(snapshot(tasks=tasks), NOW, CFG) == [
        DemoteResolving("stuck", 11), DemoteResolving("stuck-cb", 11), KickCompleted("stuck-cb"),
        DeleteTask("expired", 11, "expired")]


def test_completed_tasks_are_deleted_after_two_minutes_and_their_callbacks_kicked() -> None:
    tasks = [task("done", state="COMPLETED", updated=NOW - 10 * SEC, first_completed=NOW - 10 * SEC),
             task("expired", state="COMPLETED", updated=NOW - 121 * SEC, first_completed=NOW - 121 * SEC),
             task("quiet", state="COMPLETED", updated=NOW - 31 * SEC, first_completed=NOW - 31 * SEC),
             task("cb", state="COMPLETED", updated=NOW - 31 * SEC, first_completed=NOW - 31 * SEC, callback="http://cb/")]
    assert plan(snapshot(tasks=tasks), NOW, CFG) == [DeleteTask("expired", 11, "expired"), KickCompleted("cb")]


def test_task_durations_come_from_the_config() -> None:
    cfg = ConvergerConfig(expire_pending_task=timedelta(seconds=5), expire_completed_task=timedelta(seconds=5),
                          kick_task=timedelta(seconds=1))
    tasks = [task("p", created=NOW - 6 * SEC), task("c", state="COMPLETED", first_completed=NOW - 6 * SEC),
             task("r", state="RESOLVING", updated=NOW - 2 * SEC, first_completed=NOW - 2 * SEC)]
    assert plan(snapshot(tasks=tasks), NOW, cfg) == [
        FailTask("p", 11, EXPIRED_PENDING), DeleteTask("c", 11, "expired"), DemoteResolving("r", 11)]


def test_tasks_that_do_not_deserialize_are_pruned() -> None:
    assert plan(snapshot(malformed_tasks=[("bad", 5)]), NOW, CFG) == [DeleteTask("bad", 5, "malformed")]
