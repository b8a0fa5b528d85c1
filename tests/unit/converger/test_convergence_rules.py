"""The per-index convergence decisions (control/bbs/controllers/convergence_rules.py): applied only
to the rows they were planned on, as one change, else a no-op."""
from __future__ import annotations

from typing import Any

import pytest

from control.bbs.controllers import convergence_rules as rules
from control.bbs.store.changes import IndexChange
from control.models.actual_lrp import ActualLRP, ActualLRPState, Presence
from control.models.desired_lrp import ModificationTag

S = ActualLRPState
P = Presence
SEC = 1_000_000_000
T0 = 1_700_000_000 * SEC
NOW = T0 + 60 * SEC


def lrp(state: S = S.RUNNING, presence: P = P.ORDINARY, cell: str = "cell-1", epoch: str = "e1", tag: int = 4,
        **fields: Any) -> ActualLRP:
    data: dict[str, Any] = dict(process_guid="web", index=0, domain="apps", state=state, presence=presence,
                                since=T0, modification_tag=ModificationTag(epoch=epoch, index=tag), crash_count=3)
    if state in (S.CLAIMED, S.RUNNING):
        data.update(instance_guid=f"ig-{cell}", cell_id=cell)
    if state is S.RUNNING:
        data.update(address="10.0.0.1", ports=[{"container_port": 8080, "host_port": 61001}], routable=True)
    data.update(fields)
    return ActualLRP(**data)


def tag(row: ActualLRP) -> tuple[str, int]:
    return rules.tag_of(row)


def test_mark_suspect_moves_the_row_and_creates_an_unclaimed_replacement() -> None:
    o = lrp()
    change = rules.mark_suspect({P.ORDINARY: o}, tag(o), NOW, "new-epoch")
    suspect, replacement = change.puts[P.SUSPECT], change.puts[P.ORDINARY]
    assert (suspect.presence, suspect.state, suspect.instance_key, suspect.address) == (P.SUSPECT, S.RUNNING, o.instance_key, o.address)
    assert suspect.modification_tag == ModificationTag(epoch="e1", index=5)
    assert (replacement.state, replacement.presence, replacement.since) == (S.UNCLAIMED, P.ORDINARY, NOW)
    assert replacement.modification_tag == ModificationTag(epoch="new-epoch", index=0)
    assert change.auction and change.result and not change.deletes


@pytest.mark.parametrize("rows", [
    {P.ORDINARY: lrp(tag=5)},                                       # changed since planned
    {P.ORDINARY: lrp(epoch="e2")},                                  # another incarnation
    {},                                                             # gone
    {P.ORDINARY: lrp(), P.SUSPECT: lrp(presence=P.SUSPECT, cell="cell-9")},  # a suspect appeared
])
def test_mark_suspect_is_a_noop_when_the_index_changed(rows: dict[P, ActualLRP]) -> None:
    assert rules.mark_suspect(rows, ("e1", 4), NOW, "x").empty


def test_unclaim_replacement_needs_both_rows_unchanged() -> None:
    o, s = lrp(S.CLAIMED, cell="cell-3"), lrp(presence=P.SUSPECT, cell="cell-2", epoch="s")
    change = rules.unclaim_replacement({P.ORDINARY: o, P.SUSPECT: s}, tag(o), tag(s), NOW)
    assert change.puts[P.ORDINARY].state is S.UNCLAIMED and change.puts[P.ORDINARY].cell_id == ""
    assert change.auction and set(change.puts) == {P.ORDINARY}
    assert rules.unclaim_replacement({P.ORDINARY: o}, tag(o), tag(s), NOW).empty


def test_promote_suspect_replaces_the_ordinary_row() -> None:
    s, o = lrp(presence=P.SUSPECT, epoch="s"), lrp(S.UNCLAIMED, cell="", epoch="o")
    change = rules.promote_suspect({P.ORDINARY: o, P.SUSPECT: s}, tag(s), tag(o), NOW)
    promoted = change.puts[P.ORDINARY]
    assert (promoted.presence, promoted.instance_key, promoted.modification_tag.epoch) == (P.ORDINARY, s.instance_key, "s")
    assert change.deletes == {P.SUSPECT} and not change.auction
    # planned without a replacement, but one appeared meanwhile: no-op
    assert rules.promote_suspect({P.ORDINARY: o, P.SUSPECT: s}, tag(s), None, NOW).empty
    assert not rules.promote_suspect({P.SUSPECT: s}, tag(s), None, NOW).empty


def test_restart_crashed_unclaims_and_keeps_the_crash_count() -> None:
    c = lrp(S.CRASHED, cell="", crash_count=4)
    change = rules.restart_crashed({P.ORDINARY: c}, tag(c), NOW)
    assert (change.puts[P.ORDINARY].state, change.puts[P.ORDINARY].crash_count) == (S.UNCLAIMED, 4)
    assert change.auction
    running = lrp()
    assert rules.restart_crashed({P.ORDINARY: running}, tag(running), NOW).empty  # not CRASHED (any more)


@pytest.mark.parametrize("decide, presence", [
    (lambda rows, t: rules.remove_suspect(rows, t), P.SUSPECT),
    (lambda rows, t: rules.prune_evacuating(rows, t), P.EVACUATING),
    (lambda rows, t: rules.delete_ordinary(rows, t), P.ORDINARY),
])
def test_deletions_delete_only_the_planned_row(decide: Any, presence: P) -> None:
    row = lrp(presence=presence)
    change: IndexChange = decide({presence: row}, tag(row))
    assert change.deletes == {presence} and not change.puts
    assert decide({presence: lrp(presence=presence, tag=9)}, tag(row)).empty
    assert decide({}, tag(row)).empty
