"""The converger's view of the world at the start of a pass: what the planner decides on.

Built for size (reference target: a pass over 250k ActualLRPs within 5 s): the stored JSON is
read with the store's value-only ranges and parsed with pydantic-core's JSON parser into plain
tuples holding only what convergence looks at. Full models are built only for the few rows an
action needs (the store re-reads those anyway). Parsing is pure: bytes in, rows out.

Limits: a stored document that does not parse is left out and counted (`malformed`); an
unreadable DesiredLRP makes its process guid off-limits for the pass (never "orphaned"), and an
unreadable Task is reported so the planner can prune it (reference §5.3 step 7).
"""
from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import pydantic_core
from pydantic import ValidationError

from control.models.actual_lrp import Presence
from control.models.cell import CellPresence
from control.models.task import Task

Tag = tuple[str, int]  # (modification_tag.epoch, modification_tag.index): changes on every write


class Row(NamedTuple):
    """One ActualLRP row, reduced to what the planner needs."""

    process_guid: str
    index: int
    presence: str
    state: str
    domain: str
    cell_id: str
    instance_guid: str
    since: int
    crash_count: int
    epoch: str
    tag_index: int

    @property
    def tag(self) -> Tag:
        return (self.epoch, self.tag_index)


class Slot(NamedTuple):
    """The rows of one (process_guid, index): at most one per presence."""

    ordinary: Row | None = None
    evacuating: Row | None = None
    suspect: Row | None = None


class Desired(NamedTuple):
    """One DesiredLRP's SchedulingInfo, reduced; `raw` is kept to build auction requests and
    `rev` (the schedule key's mod_revision) guards the creation of missing instances."""

    process_guid: str
    domain: str
    instances: int
    rev: int
    raw: bytes


class TaskRow(NamedTuple):
    task: Task
    rev: int  # mod_revision of the task key: every task action compares it

    @property
    def guid(self) -> str:
        return self.task.task_guid


@dataclass
class Snapshot:
    """`cells` (the live cell ids) is None when listing the cells failed: the pass then changes
    nothing (§5.2 step 0). `cell_presences` is what the shell needs to reach a rep."""

    desired: dict[str, Desired] = field(default_factory=dict)
    actual: dict[str, dict[int, Slot]] = field(default_factory=dict)
    cells: frozenset[str] | None = frozenset()
    cell_presences: dict[str, CellPresence] = field(default_factory=dict)
    fresh_domains: frozenset[str] = frozenset()
    tasks: list[TaskRow] = field(default_factory=list)
    malformed_tasks: list[tuple[str, int]] = field(default_factory=list)  # (task guid, mod_revision)
    unreadable_desired: frozenset[str] = frozenset()
    malformed_rows: int = 0


_PRESENCE_POS = {Presence.ORDINARY.value: 0, Presence.EVACUATING.value: 1, Presence.SUSPECT.value: 2}


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Parsing builds hundreds of thousands of acyclic objects; the cyclic collector would scan
    them again and again for nothing (measured: ~40% of the parse time at 100k rows)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_rows(values: Iterable[bytes]) -> tuple[dict[str, dict[int, Slot]], int]:
    """Group stored ActualLRP documents by process guid and index; returns (groups, malformed)."""
    with _no_cyclic_gc():
        return _parse_rows(values)


def _parse_rows(values: Iterable[bytes]) -> tuple[dict[str, dict[int, Slot]], int]:
    groups: dict[str, dict[int, list[Row | None]]] = {}
    malformed = 0
    from_json = pydantic_core.from_json
    for raw in values:
        try:
            d = from_json(raw)
            tag = d["modification_tag"]
            row = Row(d["process_guid"], d["index"], d["presence"], d["state"], d["domain"],
                      d.get("cell_id", ""), d.get("instance_guid", ""), d.get("since", 0),
                      d.get("crash_count", 0), tag.get("epoch", ""), tag.get("index", 0))
            pos = _PRESENCE_POS[row.presence]
        except (ValueError, KeyError, TypeError, AttributeError):
            malformed += 1
            continue
        slots = groups.get(row.process_guid)
        if slots is None:
            slots = groups[row.process_guid] = {}
        slot = slots.get(row.index)
        if slot is None:
            slot = slots[row.index] = [None, None, None]
        slot[pos] = row
    return {guid: {i: Slot(*s) for i, s in slots.items()} for guid, slots in groups.items()}, malformed


def parse_desired(schedules: Iterable[tuple[str, bytes, int]]) -> tuple[dict[str, Desired], frozenset[str]]:
    """(guid from the key, SchedulingInfo JSON, mod_revision) → Desired by guid, plus the guids
    whose document could not be read."""
    out: dict[str, Desired] = {}
    bad: set[str] = set()
    for guid, raw, rev in schedules:
        try:
            d = pydantic_core.from_json(raw)
            desired = Desired(d["process_guid"], d["domain"], int(d.get("instances", 1)), rev, raw)
        except (ValueError, KeyError, TypeError, AttributeError):
            bad.add(guid)
            continue
        if desired.process_guid != guid or desired.instances < 0:
            bad.add(guid)
            continue
        out[guid] = desired
    return out, frozenset(bad)


def parse_tasks(docs: Iterable[tuple[str, bytes, int]]) -> tuple[list[TaskRow], list[tuple[str, int]]]:
    """(guid from the key, Task JSON, mod_revision) → valid tasks, and the (guid, rev) of those
    that do not deserialize."""
    tasks: list[TaskRow] = []
    malformed: list[tuple[str, int]] = []
    for guid, raw, rev in docs:
        try:
            task = Task.model_validate_json(raw)
        except ValidationError:
            malformed.append((guid, rev))
            continue
        if task.task_guid != guid:
            malformed.append((guid, rev))
            continue
        tasks.append(TaskRow(task, rev))
    return tasks, malformed
