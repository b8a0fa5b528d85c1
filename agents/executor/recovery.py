"""What a starting executor does with the containers a previous one left (restart safety).

A rep that restarts — crash or upgrade — must not take its applications down: containers and
their processes outlive it (the backend runs them under runc), and the executor's records say
what each one was. `plan` is the pure decision, per guid, from the records' states and the
backend's handles; Executor.recover applies it:

| record            | backend container | fate                                                          |
|-------------------|-------------------|---------------------------------------------------------------|
| none              | yes               | DESTROY: not ours any more (or never finished being made)      |
| RESERVED          | any               | DROP: reservations live in memory only (Diego); backend destroyed if any |
| INITIALIZING      | any               | FAIL_RETRYABLE: creation was interrupted; COMPLETED, retryable |
| CREATED / RUNNING | yes               | ADOPT: re-attach the action's processes, resume health checks  |
| CREATED / RUNNING | no                | FAIL_MISSING: COMPLETED, failed (Diego's "container missing")  |
| COMPLETED         | any               | KEEP: the rep has not collected the result yet; delete() cleans |

Deviation from a plain "destroy completed": a COMPLETED record is kept so that a task's result
or a crash reason reaches the rep, which deletes it (and its backend container) as usual.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

from .models import ContainerState

S = ContainerState


class Fate(StrEnum):
    ADOPT = "adopt"
    KEEP = "keep"
    FAIL_RETRYABLE = "fail-retryable"
    FAIL_MISSING = "fail-missing"
    DROP = "drop"
    DESTROY = "destroy"


def plan(records: Mapping[str, ContainerState], handles: Iterable[str]) -> dict[str, Fate]:
    present = set(handles)
    fates: dict[str, Fate] = {}
    for guid, state in records.items():
        if state == S.RESERVED:
            fates[guid] = Fate.DROP
        elif state == S.INITIALIZING:
            fates[guid] = Fate.FAIL_RETRYABLE
        elif state in (S.CREATED, S.RUNNING):
            fates[guid] = Fate.ADOPT if guid in present else Fate.FAIL_MISSING
        else:
            fates[guid] = Fate.KEEP
    for handle in present - set(records):
        fates[handle] = Fate.DESTROY
    return fates
