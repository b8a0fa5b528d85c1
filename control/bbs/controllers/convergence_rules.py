"""Pure convergence decisions for one ActualLRP index (reference §5.2, §2.6), the converger's
counterpart of lifecycle.py.

The converger plans on a snapshot; by the time it applies an action the rows may have moved on.
Each function here takes the index's *current* rows (read inside LRPStore.apply_index) and the
modification tags the plan was made on, and returns the IndexChange to commit — or an empty
change (a no-op) unless every row the decision depends on is exactly as planned (same tag, or
still absent). Every write bumps the tag, so "same tag" means "unchanged"; and apply_index
commits only if none of the index's keys changed since it read them, so a decision is never
half-applied and never applied to rows it was not made for. `result` is True when the
decision applies; `auction` asks the caller to auction the index.
"""
from __future__ import annotations

from collections.abc import Mapping

from control.models.actual_lrp import ActualLRP, ActualLRPState, Presence

from ..store.changes import IndexChange, Rows
from .lifecycle import _bump, new_unclaimed, unclaim

S = ActualLRPState
P = Presence
Tag = tuple[str, int]
ACTIVE = (S.RUNNING, S.CLAIMED)


def tag_of(lrp: ActualLRP) -> Tag:
    return (lrp.modification_tag.epoch, lrp.modification_tag.index)


def unchanged(rows: Rows, expected: Mapping[Presence, Tag | None]) -> bool:
    """Every listed presence holds the row with that tag (None: still no row)."""
    for presence, tag in expected.items():
        lrp = rows.get(presence)
        if (None if lrp is None else tag_of(lrp)) != tag:
            return False
    return True


def mark_suspect(rows: Rows, ordinary: Tag, now: int, epoch: str) -> IndexChange:
    """§2.6.1: the ORDINARY RUNNING/CLAIMED row on a missing cell becomes SUSPECT (it keeps its
    instance key and net info, so routes stay up) and a new UNCLAIMED replacement takes the
    ORDINARY slot; the caller auctions it."""
    if not unchanged(rows, {P.ORDINARY: ordinary, P.SUSPECT: None}):
        return IndexChange()
    lrp = rows[P.ORDINARY]
    if lrp.state not in ACTIVE:
        return IndexChange()
    suspect = _bump(lrp, now, presence=P.SUSPECT)
    replacement = new_unclaimed(lrp.process_guid, lrp.index, lrp.domain, now, epoch)
    return IndexChange(puts={P.SUSPECT: suspect, P.ORDINARY: replacement}, auction=True, result=True)


def unclaim_replacement(rows: Rows, ordinary: Tag, suspect: Tag, now: int) -> IndexChange:
    """§2.6.1, suspect already present: the replacement's cell is missing too; unclaim it."""
    if not unchanged(rows, {P.ORDINARY: ordinary, P.SUSPECT: suspect}):
        return IndexChange()
    lrp = rows[P.ORDINARY]
    if lrp.state not in ACTIVE:
        return IndexChange()
    return IndexChange(puts={P.ORDINARY: unclaim(lrp, now)}, auction=True, result=True)


def promote_suspect(rows: Rows, suspect: Tag, ordinary: Tag | None, now: int) -> IndexChange:
    """§2.6.2: the suspect's cell is back: delete the ORDINARY replacement (if any) and make the
    suspect ORDINARY again."""
    if not unchanged(rows, {P.SUSPECT: suspect, P.ORDINARY: ordinary}):
        return IndexChange()
    promoted = _bump(rows[P.SUSPECT], now, presence=P.ORDINARY)
    return IndexChange(puts={P.ORDINARY: promoted}, deletes={P.SUSPECT}, result=True)


def remove_suspect(rows: Rows, suspect: Tag) -> IndexChange:
    """§2.6.3–4: an extra (its replacement runs) or orphaned suspect row is deleted."""
    if not unchanged(rows, {P.SUSPECT: suspect}):
        return IndexChange()
    return IndexChange(deletes={P.SUSPECT}, result=True)


def prune_evacuating(rows: Rows, evacuating: Tag) -> IndexChange:
    """§5.2 step 2: the evacuating row's cell is gone; nothing serves it any more."""
    if not unchanged(rows, {P.EVACUATING: evacuating}):
        return IndexChange()
    return IndexChange(deletes={P.EVACUATING}, result=True)


def restart_crashed(rows: Rows, ordinary: Tag, now: int) -> IndexChange:
    """§5.2 step 10: CRASHED → UNCLAIMED once the backoff has passed (the caller checked it on
    the same row); crash_count is kept so the next crash continues the schedule."""
    if not unchanged(rows, {P.ORDINARY: ordinary}):
        return IndexChange()
    lrp = rows[P.ORDINARY]
    if lrp.state is not S.CRASHED:
        return IndexChange()
    return IndexChange(puts={P.ORDINARY: unclaim(lrp, now)}, auction=True, result=True)


def delete_ordinary(rows: Rows, ordinary: Tag) -> IndexChange:
    """Retire by deletion (reference §2.2 RetireActualLRP): an UNCLAIMED or CRASHED row, or one
    whose cell is gone, is deleted — only if it is still the row the retirement was decided on."""
    if not unchanged(rows, {P.ORDINARY: ordinary}):
        return IndexChange()
    return IndexChange(deletes={P.ORDINARY}, result=True)
