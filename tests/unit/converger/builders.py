"""Builders of planner inputs: rows, desired LRPs, tasks and snapshots, valid by default."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from control.converger.snapshot import Desired, Row, Slot, Snapshot, TaskRow
from control.models.task import Task

SEC = 1_000_000_000
NOW = 1_700_000_000 * SEC
POS = {"ORDINARY": 0, "EVACUATING": 1, "SUSPECT": 2}


def row(guid: str = "web", index: int = 0, state: str = "RUNNING", presence: str = "ORDINARY",
        cell: str | None = None, domain: str = "apps", since: int = NOW - 10 * SEC, crash_count: int = 0,
        tag: tuple[str, int] = ("epoch-1", 3)) -> Row:
    if cell is None:
        cell = "cell-1" if state in ("RUNNING", "CLAIMED") else ""
    instance = f"ig-{guid}-{index}-{presence.lower()}" if cell else ""
    return Row(guid, index, presence, state, domain, cell, instance, since, crash_count, tag[0], tag[1])


def desired(guid: str = "web", instances: int = 1, domain: str = "apps", rev: int = 7) -> Desired:
    raw = (f'{{"process_guid":"{guid}","domain":"{domain}","rootfs":"preloaded:busybox",'
           f'"instances":{instances},"memory_mb":64,"disk_mb":64}}').encode()
    return Desired(guid, domain, instances, rev, raw)


def task(guid: str = "t1", state: str = "PENDING", cell: str = "", created: int = NOW - 10 * SEC,
         updated: int | None = None, first_completed: int = 0, callback: str = "", rev: int = 11) -> TaskRow:
    definition: dict[str, Any] = {"rootfs": "preloaded:busybox",
                                  "action": {"run": {"path": "/bin/true", "user": "root"}}}
    if callback:
        definition["completion_callback_url"] = callback
    t = Task.model_validate({"task_guid": guid, "domain": "tasks", "task_definition": definition, "state": state,
                             "cell_id": cell, "created_at": created,
                             "updated_at": created if updated is None else updated,
                             "first_completed_at": first_completed, "failed": state in ("COMPLETED", "RESOLVING")})
    return TaskRow(t, rev)


def group(rows: Iterable[Row]) -> dict[str, dict[int, Slot]]:
    out: dict[str, dict[int, list[Row | None]]] = {}
    for r in rows:
        slot = out.setdefault(r.process_guid, {}).setdefault(r.index, [None, None, None])
        assert slot[POS[r.presence]] is None, f"two {r.presence} rows for {r.process_guid}/{r.index}"
        slot[POS[r.presence]] = r
    return {g: {i: Slot(*s) for i, s in slots.items()} for g, slots in out.items()}


def snapshot(rows: Iterable[Row] = (), lrps: Iterable[Desired] = (), cells: Iterable[str] | None = ("cell-1",),
             fresh: Iterable[str] = ("apps",), tasks: Iterable[TaskRow] = (),
             malformed_tasks: Iterable[tuple[str, int]] = (), unreadable: Iterable[str] = ()) -> Snapshot:
    return Snapshot(desired={d.process_guid: d for d in lrps}, actual=group(rows),
                    cells=None if cells is None else frozenset(cells), fresh_domains=frozenset(fresh),
                    tasks=list(tasks), malformed_tasks=list(malformed_tasks), unreadable_desired=frozenset(unreadable))
