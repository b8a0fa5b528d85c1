"""Pure ActualLRP lifecycle decisions (reference §2.1–§2.6).

Each function takes the rows of one index (by presence) and a request, and returns the
IndexChange to commit, or raises a typed error. No I/O: the store runs them inside its
compare-and-swap loop, and unit tests run them directly.
"""
from __future__ import annotations

from collections.abc import Callable

from control.models.actual_lrp import (ActualLRP, ActualLRPState, CrashRequest, InstanceKey,
                                       Presence, StartRequest, allows_transition)
from control.models.base import truncate
from control.models.crash_policy import next_crash_count, restarts_immediately
from control.models.desired_lrp import ModificationTag
from control.models.errors import (CannotBeClaimed, CannotBeCrashed, CannotBeFailed,
                                   CannotBeRemoved, CannotBeStarted, NotFound)

from ..store.changes import IndexChange, Rows

S = ActualLRPState
P = Presence
NO_NET = {"address": "", "ports": [], "instance_address": "", "preferred_address": "UNKNOWN"}


def _bump(lrp: ActualLRP, now: int, **changes: object) -> ActualLRP:
    """A new version of the row: since = now and modification_tag.index + 1 (reference §2.1)."""
    data = lrp.model_dump()
    data.update(changes)
    data["since"] = now
    data["modification_tag"] = lrp.modification_tag.incremented().model_dump()
    return ActualLRP.model_validate(data)


def new_unclaimed(guid: str, index: int, domain: str, now: int, epoch: str) -> ActualLRP:
    return ActualLRP(process_guid=guid, index=index, domain=domain, state=S.UNCLAIMED, since=now,
                     modification_tag=ModificationTag(epoch=epoch, index=0))


def _ordinary(rows: Rows, guid: str, index: int) -> ActualLRP:
    lrp = rows.get(P.ORDINARY)
    if lrp is None:
        raise NotFound(f"actual LRP {guid}/{index} not found")
    return lrp


def _from_suspect(rows: Rows, key: InstanceKey) -> bool:
    suspect = rows.get(P.SUSPECT)
    return suspect is not None and suspect.instance_key == key


def claim(rows: Rows, guid: str, index: int, key: InstanceKey, now: int) -> IndexChange:
    if _from_suspect(rows, key):
        return IndexChange()  # requests from a SUSPECT instance are ignored (§2.6 step 5)
    lrp = _ordinary(rows, guid, index)
    if not allows_transition(lrp.state, lrp.instance_key, S.CLAIMED, key):
        raise CannotBeClaimed(f"actual LRP {guid}/{index} is {lrp.state} on {lrp.cell_id or 'no cell'}")
    if lrp.state is S.CLAIMED and lrp.instance_key == key:
        return IndexChange()  # idempotent re-claim
    claimed = _bump(lrp, now, state=S.CLAIMED, instance_guid=key.instance_guid, cell_id=key.cell_id,
                    placement_error="", **NO_NET)
    return IndexChange(puts={P.ORDINARY: claimed})


def start(rows: Rows, guid: str, index: int, req: StartRequest, now: int,
          domain: str | None, epoch: Callable[[], str]) -> IndexChange:
    """→ RUNNING. Creates the row when the BBS lost it (`domain` comes from the DesiredLRP),
    and removes the index's EVACUATING and SUSPECT rows: this incarnation replaces them."""
    key = InstanceKey(instance_guid=req.instance_guid, cell_id=req.cell_id)
    if _from_suspect(rows, key):
        return IndexChange()
    lrp = rows.get(P.ORDINARY)
    net = {"address": req.address, "ports": [p.model_dump() for p in req.ports],
           "instance_address": req.instance_address, "preferred_address": req.preferred_address}
    routable = True if req.routable is None else req.routable
    change = IndexChange(deletes={p for p in (P.EVACUATING, P.SUSPECT) if p in rows})
    if lrp is None:
        if domain is None:
            raise NotFound(f"desired LRP {guid} not found")
        base = ActualLRP(process_guid=guid, index=index, domain=domain, state=S.UNCLAIMED,
                         modification_tag=ModificationTag(epoch=epoch(), index=0))
        running = _bump(base, now, state=S.RUNNING, instance_guid=key.instance_guid,
                        cell_id=key.cell_id, routable=routable,
                        availability_zone=req.availability_zone, metric_tags=req.metric_tags, **net)
        change.puts[P.ORDINARY] = running
        return change
    if not allows_transition(lrp.state, lrp.instance_key, S.RUNNING, key):
        raise CannotBeStarted(f"actual LRP {guid}/{index} is {lrp.state} on {lrp.cell_id or 'no cell'}")
    unchanged = (lrp.state is S.RUNNING and lrp.instance_key == key and lrp.address == req.address
                 and lrp.ports == list(req.ports) and lrp.instance_address == req.instance_address
                 and lrp.preferred_address == req.preferred_address
                 and lrp.availability_zone == req.availability_zone
                 and lrp.metric_tags == (req.metric_tags or lrp.metric_tags)
                 and lrp.routable == routable)
    if not unchanged:
        change.puts[P.ORDINARY] = _bump(
            lrp, now, state=S.RUNNING, instance_guid=key.instance_guid, cell_id=key.cell_id,
            placement_error="", routable=routable, availability_zone=req.availability_zone,
            metric_tags=req.metric_tags or lrp.metric_tags, **net)
    return change


def crash(rows: Rows, guid: str, index: int, req: CrashRequest, now: int,
          auction: bool = True) -> IndexChange:
    """Crash policy (reference §2.3): the first and second crash in a row go straight back to
    UNCLAIMED with an auction; later ones stay CRASHED for the converger's backoff."""
    key = InstanceKey(instance_guid=req.instance_guid, cell_id=req.cell_id)
    if _from_suspect(rows, key):
        return IndexChange(deletes={P.SUSPECT})
    lrp = _ordinary(rows, guid, index)
    if not allows_transition(lrp.state, lrp.instance_key, S.CRASHED, key):
        raise CannotBeCrashed(f"actual LRP {guid}/{index} is {lrp.state} on {lrp.cell_id or 'no cell'}")
    count = next_crash_count(lrp.state is S.RUNNING, lrp.since, now, lrp.crash_count)
    immediate = restarts_immediately(count)
    crashed = _bump(lrp, now, state=S.UNCLAIMED if immediate else S.CRASHED, instance_guid="",
                    cell_id="", crash_count=count, crash_reason=truncate(req.error_message),
                    routable=False, placement_error="", **NO_NET)
    return IndexChange(puts={P.ORDINARY: crashed}, auction=immediate and auction, result=immediate)


def fail(rows: Rows, guid: str, index: int, error_message: str, now: int) -> IndexChange:
    lrp = _ordinary(rows, guid, index)
    if lrp.state is not S.UNCLAIMED:
        raise CannotBeFailed(f"actual LRP {guid}/{index} is {lrp.state}, not UNCLAIMED")
    return IndexChange(puts={P.ORDINARY: _bump(lrp, now, placement_error=truncate(error_message))})


def remove(rows: Rows, guid: str, index: int, key: InstanceKey) -> IndexChange:
    lrp = _ordinary(rows, guid, index)
    if lrp.instance_key != key:
        raise CannotBeRemoved(f"actual LRP {guid}/{index} belongs to another instance")
    return IndexChange(deletes={P.ORDINARY})


def unclaim(lrp: ActualLRP, now: int) -> ActualLRP:
    """BBS-internal: back to UNCLAIMED so the index is auctioned again (new incarnation)."""
    return _bump(lrp, now, state=S.UNCLAIMED, instance_guid="", cell_id="", routable=False,
                 placement_error="", **NO_NET)


# ---- evacuation (reference §2.5) --------------------------------------------------------------

def _drop_evacuating_and_suspect(rows: Rows, key: InstanceKey) -> IndexChange:
    """An evacuating cell's call removes its own EVACUATING and SUSPECT rows; keep_container
    is false unless the caller decides otherwise."""
    change = IndexChange(result=False)
    evac = rows.get(P.EVACUATING)
    if evac is not None and evac.instance_key == key:
        change.deletes.add(P.EVACUATING)
    if _from_suspect(rows, key):
        change.deletes.add(P.SUSPECT)
    return change


def evacuate_claimed(rows: Rows, guid: str, index: int, key: InstanceKey, now: int) -> IndexChange:
    change = _drop_evacuating_and_suspect(rows, key)
    if P.SUSPECT in change.deletes:
        return change
    lrp = rows.get(P.ORDINARY)
    if lrp is not None and lrp.instance_key == key and lrp.state in (S.CLAIMED, S.RUNNING):
        change.puts[P.ORDINARY] = unclaim(lrp, now)
        change.auction = True
    return change


def evacuate_running(rows: Rows, guid: str, index: int, req: StartRequest, now: int,
                     domain: str | None, recreate_all_running: bool | None = None) -> IndexChange:
    """Returns keep_container in `result`. `domain` is the DesiredLRP's (None once it was
    deleted); `recreate_all_running` is None for ROLLING LRPs, and for RECREATE ones whether
    every desired instance is RUNNING."""
    key = InstanceKey(instance_guid=req.instance_guid, cell_id=req.cell_id)
    lrp, evac, suspect = rows.get(P.ORDINARY), rows.get(P.EVACUATING), rows.get(P.SUSPECT)
    net = {"address": req.address, "ports": [p.model_dump() for p in req.ports],
           "instance_address": req.instance_address, "preferred_address": req.preferred_address}
    drop_evac = {P.EVACUATING} if evac is not None and evac.instance_key == key else set()
    if domain is None or lrp is None:
        # the DesiredLRP is gone (Diego reads a missing ORDINARY row the same way)
        return IndexChange(deletes=drop_evac, result=False)
    if lrp.instance_key != key and lrp.state in (S.RUNNING, S.CRASHED):
        return IndexChange(deletes=drop_evac, result=False)  # the replacement runs elsewhere
    ours = lrp if (lrp is not None and lrp.instance_key == key) else (suspect if _from_suspect(rows, key) else None)
    if recreate_all_running is not None:
        # RECREATE never has an evacuating row (reference §2.5): one instance moves at a time
        if ours is not None and ours is lrp:
            if not recreate_all_running:
                return IndexChange(result=True)  # keep the container and retry
            return IndexChange(puts={P.ORDINARY: unclaim(lrp, now)}, auction=True, result=False)
        # our row is EVACUATING or SUSPECT, or there is none: drop it and delete the container
        return IndexChange(deletes=drop_evac | ({P.SUSPECT} if ours is not None else set()), result=False)
    if evac is not None and evac.instance_key != key:
        return IndexChange(result=False)  # only one evacuating row per index
    base = ours or evac or lrp or new_unclaimed(guid, index, domain, now, "")
    evacuating = _bump(base, now, state=S.RUNNING, presence=P.EVACUATING,
                       instance_guid=key.instance_guid, cell_id=key.cell_id, placement_error="",
                       routable=True if req.routable is None else req.routable, **net)
    change = IndexChange(puts={P.EVACUATING: evacuating}, result=True)
    if ours is lrp and lrp is not None and lrp.state in (S.RUNNING, S.CLAIMED):
        change.puts[P.ORDINARY] = unclaim(lrp, now)
        change.auction = True
    elif ours is suspect and suspect is not None:
        change.deletes.add(P.SUSPECT)
    return change


def evacuate_stopped(rows: Rows, guid: str, index: int, key: InstanceKey) -> IndexChange:
    deletes = {p for p, lrp in rows.items() if lrp.instance_key == key}
    return IndexChange(deletes=deletes, result=False)


def evacuate_crashed(rows: Rows, guid: str, index: int, req: CrashRequest, now: int) -> IndexChange:
    """The crash logic runs but no auction is requested; convergence picks it up."""
    key = InstanceKey(instance_guid=req.instance_guid, cell_id=req.cell_id)
    change = _drop_evacuating_and_suspect(rows, key)
    lrp = rows.get(P.ORDINARY)
    if lrp is not None and lrp.instance_key == key:
        crashed = crash({P.ORDINARY: lrp}, guid, index, req, now, auction=False)
        change.puts.update(crashed.puts)
    return change


def remove_evacuating(rows: Rows, guid: str, index: int, key: InstanceKey) -> IndexChange:
    evac = rows.get(P.EVACUATING)
    if evac is None:
        raise NotFound(f"no evacuating actual LRP for {guid}/{index}")
    if evac.instance_key != key:
        raise CannotBeRemoved(f"the evacuating actual LRP {guid}/{index} belongs to another instance")
    return IndexChange(deletes={P.EVACUATING})
