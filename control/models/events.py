"""Event names (Diego's, reference §3.3) and the pure event calculators.

Events are derived from etcd watch changes, so every writer's change is an event. The
calculators here turn a (before, after) pair into the events Diego emits (reference §2.4).
"""
from __future__ import annotations

from enum import StrEnum
from typing import Any

from .actual_lrp import ActualLRP, ActualLRPState


class EventType(StrEnum):
    DESIRED_LRP_CREATED = "desired_lrp_created"
    DESIRED_LRP_CHANGED = "desired_lrp_changed"
    DESIRED_LRP_REMOVED = "desired_lrp_removed"
    ACTUAL_LRP_INSTANCE_CREATED = "actual_lrp_instance_created"
    ACTUAL_LRP_INSTANCE_CHANGED = "actual_lrp_instance_changed"
    ACTUAL_LRP_INSTANCE_REMOVED = "actual_lrp_instance_removed"
    ACTUAL_LRP_CRASHED = "actual_lrp_crashed"
    TASK_CREATED = "task_created"
    TASK_CHANGED = "task_changed"
    TASK_REMOVED = "task_removed"


Event = tuple[EventType, dict[str, Any]]


def _dump(lrp: ActualLRP) -> dict[str, Any]:
    return lrp.model_dump(mode="json")


def _key(lrp: ActualLRP) -> dict[str, Any]:
    return {"process_guid": lrp.process_guid, "index": lrp.index, "domain": lrp.domain}


def _instance_key(lrp: ActualLRP) -> dict[str, Any]:
    return {"instance_guid": lrp.instance_guid, "cell_id": lrp.cell_id}


def _crashed(before: ActualLRP, after: ActualLRP) -> bool:
    """A crash ended a claimed/running incarnation: the row is now CRASHED (only a crash gets
    there), or back in UNCLAIMED (immediate restart) with a new crash count; BBS-internal
    unclaims (evacuation, suspect) keep the count unchanged."""
    if before.state not in (ActualLRPState.CLAIMED, ActualLRPState.RUNNING):
        return False
    if after.state is ActualLRPState.CRASHED:
        return True
    return (after.state is ActualLRPState.UNCLAIMED
            and after.crash_count != before.crash_count and after.crash_count > 0)


def actual_lrp_events(before: ActualLRP | None, after: ActualLRP | None) -> list[Event]:
    """Instance events for one row (or one row moved between presences) — reference §2.4."""
    if before is None and after is None:
        return []
    if before is None:
        assert after is not None
        return [(EventType.ACTUAL_LRP_INSTANCE_CREATED, {"actual_lrp": _dump(after)})]
    if after is None:
        return [(EventType.ACTUAL_LRP_INSTANCE_REMOVED, {"actual_lrp": _dump(before)})]
    events: list[Event] = []
    if _crashed(before, after):
        events.append((EventType.ACTUAL_LRP_CRASHED, {
            "actual_lrp_key": _key(after), "actual_lrp_instance_key": _instance_key(before),
            "crash_count": after.crash_count, "crash_reason": after.crash_reason, "since": after.since,
        }))
    if after.state is ActualLRPState.UNCLAIMED and before.state is not ActualLRPState.UNCLAIMED:
        # the incarnation is over (the next one gets a new instance key): removed + created.
        # Every other change, a crash to CRASHED and a claim stolen by another cell included,
        # is one changed event (reference §2.4; Diego decides by the state after, too).
        events.append((EventType.ACTUAL_LRP_INSTANCE_REMOVED, {"actual_lrp": _dump(before)}))
        events.append((EventType.ACTUAL_LRP_INSTANCE_CREATED, {"actual_lrp": _dump(after)}))
    else:
        events.append((EventType.ACTUAL_LRP_INSTANCE_CHANGED, {
            "actual_lrp_key": _key(after), "actual_lrp_instance_key": _instance_key(after),
            "before": _dump(before), "after": _dump(after),
        }))
    return events


def event_cell_ids(event: Event) -> set[str]:
    """The cells an instance event concerns, for per-cell streams (created on, removed from,
    changed to or from, crashed on)."""
    kind, payload = event
    cells: set[str] = set()
    for part in ("actual_lrp", "before", "after", "actual_lrp_instance_key"):
        value = payload.get(part)
        if isinstance(value, dict) and value.get("cell_id"):
            cells.add(value["cell_id"])
    return cells
