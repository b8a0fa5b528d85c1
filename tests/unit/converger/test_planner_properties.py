"""Properties of the planner over random snapshots (Hypothesis):

- after the planned creations, retirements and suspect moves are applied to an in-memory model
  of the ORDINARY rows, every DesiredLRP in a fresh domain has exactly its instances (apart from
  a suspect promoted at an index ≥ instances, which the next pass retires), and every
  DesiredLRP has at least them;
- nothing is ever retired or removed in a stale domain;
- no index gets two conflicting decisions about its ORDINARY row;
- no cells known → nothing planned.
"""
from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from control.converger.actions import (Action, CreateMissing, MarkSuspect, PromoteSuspect, RemoveSuspect,
                                       RestartCrashed, RetireExtra, RetireOrphaned, UnclaimReplacement)
from control.converger.config import ConvergerConfig
from control.converger.planner import plan
from control.converger.snapshot import Row, Snapshot

from .builders import NOW, SEC, desired, group, row

CFG = ConvergerConfig()
GUIDS = ("a", "b", "c", "d")
DOMAINS = ("fresh", "stale")
CELLS = ("c1", "c2", "c3")


@st.composite
def snapshots(draw: Any) -> Snapshot:
    rows: list[Row] = []
    lrps = []
    for guid in GUIDS:
        domain = draw(st.sampled_from(DOMAINS))
        if draw(st.booleans()):
            lrps.append(desired(guid, instances=draw(st.integers(0, 5)), domain=domain))
        for index in range(draw(st.integers(0, 7))):
            state = draw(st.sampled_from([None, "UNCLAIMED", "CLAIMED", "RUNNING", "CRASHED"]))
            since = NOW - draw(st.integers(0, 3600)) * SEC
            if state is not None:
                cell = draw(st.sampled_from(CELLS)) if state in ("CLAIMED", "RUNNING") else ""
                rows.append(row(guid, index, state, cell=cell, domain=domain, since=since,
                                crash_count=draw(st.integers(0, 210)) if state == "CRASHED" else 0))
            if draw(st.integers(0, 3)) == 0:
                rows.append(row(guid, index, draw(st.sampled_from(["RUNNING", "CLAIMED"])), "SUSPECT",
                                cell=draw(st.sampled_from(CELLS)), domain=domain))
            if draw(st.integers(0, 3)) == 0:
                rows.append(row(guid, index, "RUNNING", "EVACUATING", cell=draw(st.sampled_from(CELLS)), domain=domain))
    cells = draw(st.frozensets(st.sampled_from(CELLS)))
    return Snapshot(desired={d.process_guid: d for d in lrps}, actual=group(rows), cells=cells,
                    fresh_domains=frozenset({"fresh"}))


def ordinary_after(snap: Snapshot, actions: list[Action]) -> dict[str, set[int]]:
    """Which indices have an ORDINARY row once every planned write is applied."""
    model = {guid: {i for i, slot in slots.items() if slot.ordinary is not None} for guid, slots in snap.actual.items()}
    for action in actions:
        match action:
            case CreateMissing(process_guid=guid, indices=indices):
                assert not model.setdefault(guid, set()) & set(indices), "creates over an existing row"
                model[guid] |= set(indices)
            case RetireExtra(row=r) | RetireOrphaned(row=r):
                model[r.process_guid].discard(r.index)  # retired: deleted or stopped by its rep
            case PromoteSuspect(suspect=s):
                model.setdefault(s.process_guid, set()).add(s.index)
            # MarkSuspect / UnclaimReplacement keep an ORDINARY row (the replacement)
    return model


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_after_the_plan_every_fresh_lrp_has_exactly_its_instances(snap: Snapshot) -> None:
    actions = plan(snap, NOW, CFG)
    model = ordinary_after(snap, actions)
    # a suspect promoted at an index >= instances is an ORDINARY extra the *next* pass retires
    promoted = {(a.suspect.process_guid, a.suspect.index) for a in actions if isinstance(a, PromoteSuspect)}
    for guid, d in snap.desired.items():
        have = model.get(guid, set())
        assert set(range(d.instances)) <= have
        if d.domain == "fresh":
            assert {i for i in have if (guid, i) not in promoted} | set(range(d.instances)) == set(range(d.instances))
    for guid in snap.actual.keys() - snap.desired.keys():
        stale_rows = {i for i, slot in snap.actual[guid].items() if slot.ordinary and slot.ordinary.domain == "stale"}
        assert model.get(guid, set()) == stale_rows  # orphans: only the stale-domain ones survive


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_nothing_is_ever_retired_in_a_stale_domain(snap: Snapshot) -> None:
    for action in plan(snap, NOW, CFG):
        match action:
            case RetireExtra(row=r):
                assert snap.desired[r.process_guid].domain == "fresh"
            case RetireOrphaned(row=r) | RemoveSuspect(row=r, reason="orphaned"):
                assert r.domain == "fresh" and r.process_guid not in snap.desired


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_an_index_gets_at_most_one_decision_about_its_ordinary_row(snap: Snapshot) -> None:
    seen: set[tuple[str, int]] = set()
    for action in plan(snap, NOW, CFG):
        match action:
            case MarkSuspect(row=r) | UnclaimReplacement(row=r) | RetireExtra(row=r) | RetireOrphaned(row=r) \
                    | RestartCrashed(row=r) | PromoteSuspect(suspect=r):
                key = (r.process_guid, r.index)
            case CreateMissing(process_guid=guid, indices=indices):
                for i in indices:
                    assert (guid, i) not in seen
                    seen.add((guid, i))
                continue
            case _:
                continue
        assert key not in seen, f"two decisions for {key}"
        seen.add(key)


@settings(max_examples=100, deadline=None)
@given(snapshots())
def test_unknown_cells_plan_nothing(snap: Snapshot) -> None:
    snap.cells = None
    assert plan(snap, NOW, CFG) == []
