"""The pure ActualLRP lifecycle decisions (reference §2.1–§2.6): rows of one index in, the
IndexChange to commit (or a typed error) out. No store, no clock: `now` is a parameter."""
from __future__ import annotations

import itertools
from typing import Any

import pytest

from control.bbs.controllers import lifecycle
from control.bbs.store.changes import IndexChange, Rows
from control.models.actual_lrp import (ActualLRP, ActualLRPState, CrashRequest, InstanceKey, Presence,
                                       StartRequest)
from control.models.desired_lrp import ModificationTag
from control.models.errors import (CannotBeClaimed, CannotBeCrashed, CannotBeFailed, CannotBeRemoved,
                                   CannotBeStarted, InvalidTransition, NotFound)

S = ActualLRPState
P = Presence
SEC = 1_000_000_000
T0 = 1_700_000_000 * SEC
NOW = T0 + 10 * SEC
GUID, INDEX, DOMAIN = "web", 0, "apps"
OURS = InstanceKey(instance_guid="ig-1", cell_id="cell-1")
OTHER = InstanceKey(instance_guid="ig-2", cell_id="cell-2")
THIRD = InstanceKey(instance_guid="ig-3", cell_id="cell-3")


def row(state: S, key: InstanceKey | None = None, presence: P = P.ORDINARY, **fields: Any) -> ActualLRP:
    """A valid row of web/0; CLAIMED and RUNNING rows belong to OURS unless `key` says otherwise."""
    data: dict[str, Any] = dict(process_guid=GUID, index=INDEX, domain=DOMAIN, state=state, presence=presence,
                                since=T0, modification_tag=ModificationTag(epoch="epoch-1", index=4))
    if state in (S.CLAIMED, S.RUNNING):
        key = key or OURS
        data.update(instance_guid=key.instance_guid, cell_id=key.cell_id)
    if state is S.RUNNING:
        data.update(address="10.0.0.1", ports=[{"container_port": 8080, "host_port": 61001}],
                    instance_address="10.255.0.1", routable=True)
    data.update(fields)
    return ActualLRP(**data)


def start_req(key: InstanceKey = OURS, address: str = "10.0.0.7", **fields: Any) -> StartRequest:
    data: dict[str, Any] = dict(instance_guid=key.instance_guid, cell_id=key.cell_id, address=address,
                                ports=[{"container_port": 8080, "host_port": 61007}], instance_address="10.255.0.7")
    data.update(fields)
    return StartRequest(**data)


def crash_req(key: InstanceKey = OURS, message: str = "Exit status 1") -> CrashRequest:
    return CrashRequest(instance_guid=key.instance_guid, cell_id=key.cell_id, error_message=message)


def assert_bumped(before: ActualLRP, after: ActualLRP, now: int = NOW) -> None:
    """Every successful write bumps modification_tag.index and sets since = now (§2.1)."""
    assert after.modification_tag == ModificationTag(epoch=before.modification_tag.epoch,
                                                     index=before.modification_tag.index + 1)
    assert after.since == now


def epochs() -> Any:
    counter = itertools.count(1)
    return lambda: f"new-epoch-{next(counter)}"


# ---- claim ---------------------------------------------------------------------------------------

def test_claim_of_an_unclaimed_row_writes_claimed_and_clears_the_placement_error() -> None:
    before = row(S.UNCLAIMED, placement_error="insufficient resources")
    change = lifecycle.claim({P.ORDINARY: before}, GUID, INDEX, OURS, NOW)
    claimed = change.puts[P.ORDINARY]
    assert (claimed.state, claimed.instance_key, claimed.placement_error) == (S.CLAIMED, OURS, "")
    assert not change.deletes and not change.auction
    assert_bumped(before, claimed)


def test_claim_is_idempotent_for_the_same_cell() -> None:
    rows = {P.ORDINARY: row(S.CLAIMED)}
    assert lifecycle.claim(rows, GUID, INDEX, OURS, NOW).empty


@pytest.mark.parametrize("current", [row(S.CLAIMED), row(S.RUNNING), row(S.CRASHED, crash_count=3)])
def test_claim_by_another_cell_is_refused(current: ActualLRP) -> None:
    with pytest.raises(CannotBeClaimed) as exc:
        lifecycle.claim({P.ORDINARY: current}, GUID, INDEX, OTHER, NOW)
    assert isinstance(exc.value, InvalidTransition) and exc.value.status == 409


def test_claim_of_a_running_row_by_its_own_cell_goes_back_to_claimed_without_net_info() -> None:
    before = row(S.RUNNING)
    claimed = lifecycle.claim({P.ORDINARY: before}, GUID, INDEX, OURS, NOW).puts[P.ORDINARY]
    assert claimed.state is S.CLAIMED and claimed.instance_key == OURS
    assert not claimed.has_net_info
    assert_bumped(before, claimed)


def test_claim_of_a_missing_row_is_not_found() -> None:
    with pytest.raises(NotFound):
        lifecycle.claim({}, GUID, INDEX, OURS, NOW)


def test_claim_from_the_suspect_instance_is_ignored_without_error() -> None:
    rows = {P.SUSPECT: row(S.RUNNING, presence=P.SUSPECT), P.ORDINARY: row(S.UNCLAIMED)}
    assert lifecycle.claim(rows, GUID, INDEX, OURS, NOW).empty


# ---- start ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("current", "key"), [
    (row(S.UNCLAIMED, placement_error="no cell"), OURS),
    (row(S.CLAIMED), OURS),
    (row(S.CLAIMED, key=OTHER), OURS),    # another cell may take a claimed instance
])
def test_start_writes_running_with_the_requested_net_info(current: ActualLRP, key: InstanceKey) -> None:
    change = lifecycle.start({P.ORDINARY: current}, GUID, INDEX, start_req(key), NOW, DOMAIN, epochs())
    running = change.puts[P.ORDINARY]
    assert (running.state, running.instance_key, running.address) == (S.RUNNING, key, "10.0.0.7")
    assert running.ports[0].host_port == 61007 and running.instance_address == "10.255.0.7"
    assert running.placement_error == "" and running.routable is True  # no readiness check: routable
    assert_bumped(current, running)


def test_start_keeps_routable_false_until_readiness_passes() -> None:
    change = lifecycle.start({P.ORDINARY: row(S.CLAIMED)}, GUID, INDEX, start_req(routable=False), NOW, DOMAIN, epochs())
    assert change.puts[P.ORDINARY].routable is False


def test_start_heartbeat_with_nothing_changed_writes_nothing() -> None:
    current = row(S.RUNNING)
    same = start_req(address=current.address, ports=[p.model_dump() for p in current.ports],
                     instance_address=current.instance_address)
    assert lifecycle.start({P.ORDINARY: current}, GUID, INDEX, same, NOW, DOMAIN, epochs()).empty


def test_start_refreshes_a_running_row_whose_net_info_changed() -> None:
    current = row(S.RUNNING)
    running = lifecycle.start({P.ORDINARY: current}, GUID, INDEX, start_req(), NOW, DOMAIN, epochs()).puts[P.ORDINARY]
    assert running.address == "10.0.0.7"
    assert_bumped(current, running)


@pytest.mark.parametrize("changed", [
    {"preferred_address": "INSTANCE"}, {"availability_zone": "z2"}, {"metric_tags": {"app": "web"}},
    {"routable": False}, {"instance_address": "10.255.0.99"},
])
def test_a_heartbeat_that_changes_anything_the_rep_reports_is_written(changed: dict[str, Any]) -> None:
    current = row(S.RUNNING)
    same: dict[str, Any] = dict(address=current.address, ports=[p.model_dump() for p in current.ports],
                                instance_address=current.instance_address)
    change = lifecycle.start({P.ORDINARY: current}, GUID, INDEX, start_req(**{**same, **changed}), NOW, DOMAIN, epochs())
    after = change.puts[P.ORDINARY]
    for name, value in changed.items():
        assert getattr(after, name) == value
    assert_bumped(current, after)


@pytest.mark.parametrize("current", [row(S.RUNNING, key=OTHER), row(S.CRASHED, crash_count=3)])
def test_start_is_refused_when_running_elsewhere_or_crashed(current: ActualLRP) -> None:
    rows = {P.ORDINARY: current, P.EVACUATING: row(S.RUNNING, key=THIRD, presence=P.EVACUATING)}
    with pytest.raises(CannotBeStarted):
        lifecycle.start(rows, GUID, INDEX, start_req(), NOW, DOMAIN, epochs())


def test_start_creates_the_row_the_bbs_lost() -> None:
    change = lifecycle.start({}, GUID, INDEX, start_req(), NOW, DOMAIN, epochs())
    created = change.puts[P.ORDINARY]
    assert (created.state, created.instance_key, created.domain) == (S.RUNNING, OURS, DOMAIN)
    assert created.modification_tag.epoch == "new-epoch-1" and created.since == NOW


def test_start_of_a_lost_row_without_a_desired_lrp_is_not_found() -> None:
    with pytest.raises(NotFound):
        lifecycle.start({}, GUID, INDEX, start_req(), NOW, None, epochs())


def test_start_deletes_the_evacuating_and_suspect_rows_it_replaces() -> None:
    rows = {P.ORDINARY: row(S.CLAIMED),
            P.EVACUATING: row(S.RUNNING, key=OTHER, presence=P.EVACUATING),
            P.SUSPECT: row(S.RUNNING, key=THIRD, presence=P.SUSPECT)}
    change = lifecycle.start(rows, GUID, INDEX, start_req(), NOW, DOMAIN, epochs())
    assert change.deletes == {P.EVACUATING, P.SUSPECT}
    assert change.puts[P.ORDINARY].state is S.RUNNING


def test_an_unchanged_heartbeat_still_deletes_a_leftover_evacuating_row() -> None:
    current = row(S.RUNNING)
    same = start_req(address=current.address, ports=[p.model_dump() for p in current.ports],
                     instance_address=current.instance_address)
    rows = {P.ORDINARY: current, P.EVACUATING: row(S.RUNNING, key=OTHER, presence=P.EVACUATING)}
    change = lifecycle.start(rows, GUID, INDEX, same, NOW, DOMAIN, epochs())
    assert change.deletes == {P.EVACUATING} and not change.puts


def test_start_from_the_suspect_instance_is_ignored() -> None:
    rows = {P.SUSPECT: row(S.RUNNING, presence=P.SUSPECT), P.ORDINARY: row(S.CLAIMED, key=OTHER)}
    assert lifecycle.start(rows, GUID, INDEX, start_req(OURS), NOW, DOMAIN, epochs()).empty


# ---- crash ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("state", "count", "after_state", "after_count", "auction"), [
    (S.RUNNING, 0, S.UNCLAIMED, 1, True),    # first crash: straight back to the auction
    (S.RUNNING, 1, S.UNCLAIMED, 2, True),    # second crash: the same
    (S.RUNNING, 2, S.CRASHED, 3, False),     # third: CRASHED, the converger backs off
    (S.CLAIMED, 0, S.UNCLAIMED, 1, True),
    (S.CLAIMED, 2, S.CRASHED, 3, False),
    (S.RUNNING, 150, S.CRASHED, 151, False),
])
def test_crash_policy(state: S, count: int, after_state: S, after_count: int, auction: bool) -> None:
    before = row(state, crash_count=count)
    change = lifecycle.crash({P.ORDINARY: before}, GUID, INDEX, crash_req(), NOW)
    after = change.puts[P.ORDINARY]
    assert (after.state, after.crash_count, after.crash_reason) == (after_state, after_count, "Exit status 1")
    assert after.instance_key.empty and not after.has_net_info and after.routable is False
    assert change.auction is auction and change.result is auction
    assert_bumped(before, after)


def test_crash_after_more_than_five_minutes_running_resets_the_count() -> None:
    before = row(S.RUNNING, crash_count=6, since=T0)
    late = T0 + 5 * 60 * SEC + 1
    change = lifecycle.crash({P.ORDINARY: before}, GUID, INDEX, crash_req(), late)
    after = change.puts[P.ORDINARY]
    assert (after.state, after.crash_count, change.auction) == (S.UNCLAIMED, 1, True)
    on_time = lifecycle.crash({P.ORDINARY: before}, GUID, INDEX, crash_req(), T0 + 5 * 60 * SEC)
    assert on_time.puts[P.ORDINARY].crash_count == 7


def test_crash_reason_is_truncated_to_1024_characters() -> None:
    change = lifecycle.crash({P.ORDINARY: row(S.RUNNING)}, GUID, INDEX, crash_req(message="x" * 5000), NOW)
    assert change.puts[P.ORDINARY].crash_reason == "x" * 1024


def test_crash_without_auction_is_what_evacuation_uses() -> None:
    change = lifecycle.crash({P.ORDINARY: row(S.RUNNING)}, GUID, INDEX, crash_req(), NOW, auction=False)
    assert change.puts[P.ORDINARY].state is S.UNCLAIMED and change.auction is False


@pytest.mark.parametrize(("current", "key"), [
    (row(S.RUNNING), OTHER), (row(S.CLAIMED), OTHER), (row(S.UNCLAIMED), OURS), (row(S.CRASHED, crash_count=3), OURS),
])
def test_crash_is_refused_for_another_instance_or_a_row_that_is_not_running(current: ActualLRP, key: InstanceKey) -> None:
    with pytest.raises(CannotBeCrashed):
        lifecycle.crash({P.ORDINARY: current}, GUID, INDEX, crash_req(key), NOW)


def test_crash_from_the_suspect_instance_only_deletes_the_suspect_row() -> None:
    rows = {P.SUSPECT: row(S.RUNNING, presence=P.SUSPECT), P.ORDINARY: row(S.UNCLAIMED)}
    change = lifecycle.crash(rows, GUID, INDEX, crash_req(), NOW)
    assert change.deletes == {P.SUSPECT} and not change.puts and not change.auction


# ---- fail (placement error) ----------------------------------------------------------------------

def test_fail_sets_the_placement_error_on_an_unclaimed_row() -> None:
    before = row(S.UNCLAIMED)
    after = lifecycle.fail({P.ORDINARY: before}, GUID, INDEX, "found no compatible cell" + "!" * 2000, NOW).puts[P.ORDINARY]
    assert after.state is S.UNCLAIMED
    assert after.placement_error.startswith("found no compatible cell") and len(after.placement_error) == 1024
    assert_bumped(before, after)


@pytest.mark.parametrize("current", [row(S.CLAIMED), row(S.RUNNING), row(S.CRASHED, crash_count=3)])
def test_fail_is_refused_unless_unclaimed(current: ActualLRP) -> None:
    with pytest.raises(CannotBeFailed):
        lifecycle.fail({P.ORDINARY: current}, GUID, INDEX, "no room", NOW)


def test_fail_of_a_missing_row_is_not_found() -> None:
    with pytest.raises(NotFound):
        lifecycle.fail({}, GUID, INDEX, "no room", NOW)


# ---- remove --------------------------------------------------------------------------------------

def test_remove_deletes_the_ordinary_row_of_the_same_instance() -> None:
    change = lifecycle.remove({P.ORDINARY: row(S.RUNNING)}, GUID, INDEX, OURS)
    assert change.deletes == {P.ORDINARY} and not change.puts


@pytest.mark.parametrize("current", [row(S.RUNNING, key=OTHER), row(S.UNCLAIMED)])
def test_remove_is_refused_for_another_instance(current: ActualLRP) -> None:
    with pytest.raises(CannotBeRemoved):
        lifecycle.remove({P.ORDINARY: current}, GUID, INDEX, OURS)


def test_unclaim_clears_the_incarnation_but_keeps_the_crash_count() -> None:
    before = row(S.RUNNING, crash_count=2, crash_reason="boom")
    after = lifecycle.unclaim(before, NOW)
    assert after.state is S.UNCLAIMED and after.instance_key.empty and not after.has_net_info
    assert (after.crash_count, after.crash_reason) == (2, "boom")
    assert_bumped(before, after)


# ---- evacuation (§2.5) ---------------------------------------------------------------------------

def evacuate_running(rows: Rows, key: InstanceKey = OURS, domain: str | None = DOMAIN,
                     recreate_all_running: bool | None = None) -> IndexChange:
    return lifecycle.evacuate_running(rows, GUID, INDEX, start_req(key), NOW, domain, recreate_all_running)


@pytest.mark.parametrize("state", [S.RUNNING, S.CLAIMED])
def test_evacuate_running_of_our_ordinary_row_does_the_evacuation_dance(state: S) -> None:
    before = row(state)
    change = evacuate_running({P.ORDINARY: before})
    evac, ordinary = change.puts[P.EVACUATING], change.puts[P.ORDINARY]
    assert (evac.state, evac.presence, evac.instance_key, evac.address) == (S.RUNNING, P.EVACUATING, OURS, "10.0.0.7")
    assert ordinary.state is S.UNCLAIMED and ordinary.instance_key.empty
    assert change.auction is True and change.result is True  # keep the container meanwhile
    assert not change.deletes


@pytest.mark.parametrize("replacement", [row(S.RUNNING, key=OTHER), row(S.CRASHED, crash_count=3)])
def test_evacuate_running_drops_our_evacuating_row_once_the_replacement_ran(replacement: ActualLRP) -> None:
    rows = {P.ORDINARY: replacement, P.EVACUATING: row(S.RUNNING, presence=P.EVACUATING)}
    change = evacuate_running(rows)
    assert change.deletes == {P.EVACUATING} and not change.puts and change.result is False


def test_evacuate_running_after_the_desired_lrp_was_deleted_drops_the_row_and_the_container() -> None:
    rows = {P.ORDINARY: row(S.UNCLAIMED), P.EVACUATING: row(S.RUNNING, presence=P.EVACUATING)}
    change = evacuate_running(rows, domain=None)
    assert change.deletes == {P.EVACUATING} and not change.puts and change.result is False


@pytest.mark.parametrize("rows", [{}, {P.EVACUATING: row(S.RUNNING, presence=P.EVACUATING)}])
def test_evacuate_running_without_an_ordinary_row_reads_it_as_removed(rows: Rows) -> None:
    change = evacuate_running(dict(rows))  # the DesiredLRP still exists, its ORDINARY row does not
    assert not change.puts and change.result is False
    assert change.deletes == ({P.EVACUATING} if rows else set())


@pytest.mark.parametrize("replacement", [row(S.UNCLAIMED), row(S.CLAIMED, key=OTHER)])
def test_evacuate_running_refreshes_our_evacuating_row_while_the_replacement_is_pending(replacement: ActualLRP) -> None:
    mine = row(S.RUNNING, presence=P.EVACUATING)
    change = evacuate_running({P.ORDINARY: replacement, P.EVACUATING: mine})
    evac = change.puts[P.EVACUATING]
    assert (evac.instance_key, evac.address, evac.state) == (OURS, "10.0.0.7", S.RUNNING)
    assert_bumped(mine, evac)
    assert P.ORDINARY not in change.puts and not change.auction and change.result is True


def test_evacuate_running_with_no_row_of_ours_creates_an_evacuating_row() -> None:
    change = evacuate_running({P.ORDINARY: row(S.UNCLAIMED)})
    assert change.puts[P.EVACUATING].instance_key == OURS
    assert P.ORDINARY not in change.puts and change.result is True


def test_evacuate_running_keeps_only_one_evacuating_row_per_index() -> None:
    rows = {P.ORDINARY: row(S.UNCLAIMED), P.EVACUATING: row(S.RUNNING, key=OTHER, presence=P.EVACUATING)}
    change = evacuate_running(rows)
    assert change.empty and change.result is False


def test_evacuate_running_of_a_suspect_row_moves_it_to_evacuating() -> None:
    replacement = row(S.CLAIMED, key=OTHER)
    rows = {P.ORDINARY: replacement, P.SUSPECT: row(S.RUNNING, presence=P.SUSPECT)}
    change = evacuate_running(rows)
    assert change.puts[P.EVACUATING].instance_key == OURS
    assert change.deletes == {P.SUSPECT}
    assert P.ORDINARY not in change.puts and change.result is True


def test_evacuate_running_recreate_waits_until_every_instance_runs() -> None:
    change = evacuate_running({P.ORDINARY: row(S.RUNNING)}, recreate_all_running=False)
    assert change.empty and change.result is True


def test_evacuate_running_recreate_unclaims_without_an_evacuating_row() -> None:
    change = evacuate_running({P.ORDINARY: row(S.RUNNING)}, recreate_all_running=True)
    assert set(change.puts) == {P.ORDINARY} and change.puts[P.ORDINARY].state is S.UNCLAIMED
    assert change.auction is True and change.result is False


@pytest.mark.parametrize("rows", [
    {P.ORDINARY: row(S.UNCLAIMED)},                                                     # no row of ours
    {P.ORDINARY: row(S.CLAIMED, key=OTHER), P.EVACUATING: row(S.RUNNING, presence=P.EVACUATING)},
    {P.ORDINARY: row(S.CLAIMED, key=OTHER), P.SUSPECT: row(S.RUNNING, presence=P.SUSPECT)},
])
def test_evacuate_running_recreate_never_creates_an_evacuating_row(rows: Rows) -> None:
    change = evacuate_running(rows, recreate_all_running=True)
    assert P.EVACUATING not in change.puts and change.result is False
    assert change.deletes == {p for p in (P.EVACUATING, P.SUSPECT) if p in rows}


def test_evacuate_claimed_unclaims_our_row_and_asks_for_an_auction() -> None:
    before = row(S.CLAIMED)
    change = lifecycle.evacuate_claimed({P.ORDINARY: before}, GUID, INDEX, OURS, NOW)
    assert change.puts[P.ORDINARY].state is S.UNCLAIMED
    assert change.auction is True and change.result is False  # delete the container
    assert_bumped(before, change.puts[P.ORDINARY])


def test_evacuate_claimed_of_another_instance_changes_nothing() -> None:
    change = lifecycle.evacuate_claimed({P.ORDINARY: row(S.CLAIMED, key=OTHER)}, GUID, INDEX, OURS, NOW)
    assert change.empty and change.result is False and not change.auction


def test_evacuate_claimed_drops_our_evacuating_or_suspect_row() -> None:
    rows = {P.ORDINARY: row(S.UNCLAIMED), P.EVACUATING: row(S.RUNNING, presence=P.EVACUATING)}
    assert lifecycle.evacuate_claimed(rows, GUID, INDEX, OURS, NOW).deletes == {P.EVACUATING}
    rows = {P.ORDINARY: row(S.UNCLAIMED), P.SUSPECT: row(S.RUNNING, presence=P.SUSPECT)}
    change = lifecycle.evacuate_claimed(rows, GUID, INDEX, OURS, NOW)
    assert change.deletes == {P.SUSPECT} and not change.puts


def test_evacuate_stopped_deletes_our_rows_only() -> None:
    rows = {P.ORDINARY: row(S.RUNNING, key=OTHER), P.EVACUATING: row(S.RUNNING, presence=P.EVACUATING)}
    change = lifecycle.evacuate_stopped(rows, GUID, INDEX, OURS)
    assert change.deletes == {P.EVACUATING} and change.result is False
    change = lifecycle.evacuate_stopped({P.ORDINARY: row(S.RUNNING)}, GUID, INDEX, OURS)
    assert change.deletes == {P.ORDINARY}


@pytest.mark.parametrize(("count", "after_state"), [(0, S.UNCLAIMED), (2, S.CRASHED)])
def test_evacuate_crashed_runs_the_crash_logic_without_an_auction(count: int, after_state: S) -> None:
    change = lifecycle.evacuate_crashed({P.ORDINARY: row(S.RUNNING, crash_count=count)}, GUID, INDEX, crash_req(), NOW)
    after = change.puts[P.ORDINARY]
    assert (after.state, after.crash_count) == (after_state, count + 1)
    assert change.auction is False and change.result is False


def test_evacuate_crashed_of_our_evacuating_row_deletes_it() -> None:
    rows = {P.ORDINARY: row(S.CLAIMED, key=OTHER), P.EVACUATING: row(S.RUNNING, presence=P.EVACUATING)}
    change = lifecycle.evacuate_crashed(rows, GUID, INDEX, crash_req(), NOW)
    assert change.deletes == {P.EVACUATING} and not change.puts


def test_remove_evacuating() -> None:
    rows = {P.ORDINARY: row(S.RUNNING, key=OTHER), P.EVACUATING: row(S.RUNNING, presence=P.EVACUATING)}
    assert lifecycle.remove_evacuating(rows, GUID, INDEX, OURS).deletes == {P.EVACUATING}
    with pytest.raises(CannotBeRemoved):
        lifecycle.remove_evacuating(rows, GUID, INDEX, THIRD)
    with pytest.raises(NotFound):
        lifecycle.remove_evacuating({P.ORDINARY: row(S.RUNNING)}, GUID, INDEX, OURS)
