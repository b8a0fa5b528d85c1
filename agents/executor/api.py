"""The executor as the rep sees it: one Protocol, declared next to its consumer's needs.

`Executor` (executor.py) implements it over a `ContainerBackend` (agents/garden). The rep
never touches containers otherwise. Every method is safe to call concurrently; guids are the
instance guid of an LRP instance or the task guid.

Errors: `ContainerNotFound` for an unknown guid; `InvalidStateTransition` when asked to run a
container that is not RESERVED (`run_container`). Failures of the container itself never raise: they end as
COMPLETED with a RunResult (retryable when nothing of the action ran).
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from .models import AllocationFailure, AllocationRequest, Container, ContainerEvent, LogLine, Resources, RunRequest


class ExecutorError(Exception):
    """Base of the executor's errors."""


class ContainerNotFound(ExecutorError):
    pass


class InvalidStateTransition(ExecutorError):
    pass


class ExecutorAPI(Protocol):
    def total_resources(self) -> Resources: ...

    def remaining_resources(self) -> Resources:
        """Total minus every container that is not deleted (reserved ones included)."""
        ...

    async def allocate(self, requests: list[AllocationRequest]) -> list[AllocationFailure]:
        """Reserve each request that fits, in order; returns the ones that did not (with the reason).

        A guid that already exists fails ("container already exists"). Emits RESERVED per success.
        """
        ...

    async def run_container(self, guid: str, request: RunRequest) -> None:
        """Attach the recipe to a RESERVED container and start making it (returns at once).

        INITIALIZING -> CREATED -> RUNNING -> COMPLETED happen in the background, each with an event
        (RUNNING and COMPLETED are events; ROUTABLE_CHANGED when readiness flips).
        """
        ...

    async def stop(self, guid: str) -> None:
        """Cancel the step tree: SIGTERM, SIGKILL after the graceful interval (10 s).

        The container ends COMPLETED with run_result.stopped = True. A RESERVED container is
        completed at once. Idempotent for COMPLETED containers.
        """
        ...

    async def delete(self, guid: str) -> None:
        """Stop if needed, destroy the backend container, free its resources, emit REMOVED. Idempotent."""
        ...

    def get(self, guid: str) -> Container: ...

    def list(self) -> list[Container]: ...

    def subscribe(self) -> AsyncIterator[ContainerEvent]:
        """Events from now on, through a bounded queue (a subscriber that falls behind is dropped
        and its iterator ends: the rep then relies on its bulk pass)."""
        ...

    def logs(self, guid: str, follow: bool = False, tail: int = 100) -> AsyncIterator[LogLine]:
        """The last `tail` retained lines of the container's output, then new ones if `follow`
        (until the container is deleted). ContainerNotFound for an unknown guid."""
        ...
