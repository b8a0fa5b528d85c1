"""The executor's container state machine (reference §2.8) as one table, plus its failure texts.

`reserved → initializing → created → running → completed`, and any state may end in completed.
The executor checks every change against TRANSITIONS; the rep only ever deletes completed
containers (delete() of another state stops it first).
"""
from __future__ import annotations

from .api import InvalidStateTransition
from .models import ContainerState

S = ContainerState

TRANSITIONS: dict[tuple[ContainerState, ContainerState], str] = {
    (S.RESERVED, S.INITIALIZING): "run() attached a run request to the reservation",
    (S.RESERVED, S.COMPLETED): "the reservation expired, or was stopped before any run request",
    (S.INITIALIZING, S.CREATED): "the backend container exists; setup and action are starting",
    (S.INITIALIZING, S.COMPLETED): "rootfs or container creation failed (retryable), or stopped meanwhile",
    (S.CREATED, S.RUNNING): "the step tree is ready: checks passed, or the action started without checks",
    (S.CREATED, S.COMPLETED): "setup or action failed, checks never passed, a task ended, or stopped",
    (S.RUNNING, S.COMPLETED): "the action exited or failed, became unhealthy, or was stopped",
}

# Failure reasons written into RunResult.failure_reason (Diego's texts where it has one).
EXPIRED = "reserved container expired"
STOPPED_BEFORE_RUNNING = "stopped-before-running"
CANCELLED = "cancelled"
RESULT_FETCH_FAILED = "failed to fetch result"
EMPTY_ACTION = "container cannot have empty action"
RESTARTED_WHILE_CREATING = "executor restarted while the container was being created"
RESTARTED_WHILE_STARTING = "executor restarted before every step of the action had started"
CONTAINER_MISSING = "container disappeared while the executor was not running"


def check_transition(before: ContainerState, after: ContainerState) -> None:
    if (before, after) not in TRANSITIONS:
        raise InvalidStateTransition(f"container cannot go from {before} to {after}")


def is_starting(state: ContainerState) -> bool:
    """Counted in the cell's StartingContainerCount for the auction (reference §2.8, §4.3)."""
    return state in (S.RESERVED, S.INITIALIZING, S.CREATED)
