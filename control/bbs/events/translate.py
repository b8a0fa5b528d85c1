"""Turn one etcd watch batch (the changes of one revision) into Diego events.

Pure apart from `fetch_run`, which reads a DesiredLRP's run half when an update touched only
the schedule half. An incarnation that moved between presence rows in one transaction is one
`actual_lrp_instance_changed`: ORDINARY → SUSPECT (a delete and a put with the same instance
guid), and evacuation (an EVACUATING copy created while the ORDINARY row is unclaimed, which
also yields `actual_lrp_instance_created` for the new UNCLAIMED row).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from control.kit.etcd import Change
from control.models.actual_lrp import ActualLRP
from control.models.desired_lrp import DesiredLRP, RunInfo, SchedulingInfo
from control.models.events import Event, EventType, actual_lrp_events
from control.models.task import Task

from ..store.keys import Keys

FetchRun = Callable[[str], Awaitable[bytes | None]]


def _lrp(raw: bytes | None) -> ActualLRP | None:
    return None if raw is None else ActualLRP.model_validate_json(raw)


def actual_events(keys: Keys, changes: list[Change]) -> list[Event]:
    by_index: dict[tuple[str, int], list[tuple[ActualLRP | None, ActualLRP | None]]] = {}
    for change in changes:
        guid, index, _ = keys.parse_actual(change.key)
        by_index.setdefault((guid, index), []).append((_lrp(change.prev), _lrp(change.value)))
    events: list[Event] = []
    for pairs in by_index.values():
        used: set[int] = set()
        for i, (gone, moved_from) in enumerate(pairs):
            # an incarnation that moved to another presence row: either its row was deleted
            # (ORDINARY → SUSPECT), or its row was reused for the next incarnation (evacuation:
            # ORDINARY → EVACUATING copy + the ORDINARY row unclaimed)
            if gone is None or not gone.instance_guid:
                continue
            if moved_from is not None and moved_from.instance_guid == gone.instance_guid:
                continue
            for j, (none_before, new) in enumerate(pairs):
                if j not in used and j != i and none_before is None and new is not None \
                        and new.instance_guid == gone.instance_guid:
                    events.extend(actual_lrp_events(gone, new))
                    if moved_from is not None:
                        events.extend(actual_lrp_events(None, moved_from))
                    used.update({i, j})
                    break
        for i, (before, after) in enumerate(pairs):
            if i not in used:
                events.extend(actual_lrp_events(before, after))
    return events


async def desired_events(keys: Keys, changes: list[Change], fetch_run: FetchRun) -> list[Event]:
    by_guid: dict[str, dict[str, Change]] = {}
    for change in changes:
        guid, part = keys.parse_desired(change.key)
        by_guid.setdefault(guid, {})[part] = change
    events: list[Event] = []
    for guid, parts in by_guid.items():
        sched, run = parts.get("schedule"), parts.get("run")
        if sched is None:
            continue  # run-only changes (credentials) are not desired events in Diego either
        run_now = run.value if run is not None else await fetch_run(guid)
        run_before = run.prev if run is not None else run_now
        after = _join(sched.value, run_now)
        before = _join(sched.prev, run_before)
        if before is None and after is not None:
            events.append((EventType.DESIRED_LRP_CREATED, {"desired_lrp": after}))
        elif before is not None and after is None:
            events.append((EventType.DESIRED_LRP_REMOVED, {"desired_lrp": before}))
        elif before is not None and after is not None:
            events.append((EventType.DESIRED_LRP_CHANGED, {"before": before, "after": after}))
    return events


def _join(sched: bytes | None, run: bytes | None) -> dict[str, object] | None:
    if sched is None or run is None:
        return None
    desired = DesiredLRP.join(SchedulingInfo.model_validate_json(sched), RunInfo.model_validate_json(run))
    return desired.model_dump(mode="json", exclude_none=True)


def task_events(changes: list[Change]) -> list[Event]:
    events: list[Event] = []
    for change in changes:
        if change.prev is None and change.value is not None:
            events.append((EventType.TASK_CREATED, {"task": _task(change.value)}))
        elif change.value is None and change.prev is not None:
            events.append((EventType.TASK_REMOVED, {"task": _task(change.prev)}))
        elif change.value is not None and change.prev is not None:
            events.append((EventType.TASK_CHANGED, {"before": _task(change.prev), "after": _task(change.value)}))
    return events


def _task(raw: bytes) -> dict[str, object]:
    return Task.model_validate_json(raw).model_dump(mode="json", exclude_none=True)
