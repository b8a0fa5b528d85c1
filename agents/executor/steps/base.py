"""What every step shares: the failure type, the per-container context, and small helpers.

A step is one node of the action tree (reference §1.6) with `async def perform()`: it returns
on success, raises StepFailed with Diego's message on failure, and is stopped by asyncio
cancellation (a run step turns that into SIGTERM, then SIGKILL after the graceful interval).
`leaves` counts the run/download/upload steps below it, so a restarted executor can tell whether
every step of an action had started (recovery.py).

When the executor itself shuts down it cancels the trees with `context.detaching` set: run
steps then leave their processes running and their records untouched, to be re-attached by the
next executor.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from control.models.base import Model

from ..config import ExecutorConfig
from ..logs import ContainerLog
from ..models import PortMapping

SYSTEM_SOURCE = "CELL"
HEALTH_SOURCE = "HEALTH"


class StepFailed(Exception):
    """A step failed; `message` is what ends up in RunResult.failure_reason."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Role(StrEnum):
    SETUP = "setup"
    ACTION = "action"
    MONITOR = "monitor"


class Step(Protocol):
    leaves: int

    async def perform(self) -> None: ...


class ProcessRef(Model):
    """A long-running process of the action, as remembered for re-attachment."""

    process_id: str
    source: str
    stdout_path: str | None = None
    stderr_path: str | None = None


class Tracker(Protocol):
    """Told about the action's progress so the container record stays current."""

    def leaf_started(self, role: Role) -> None: ...

    def process_started(self, role: Role, ref: ProcessRef) -> None: ...

    def process_exited(self, role: Role, ref: ProcessRef) -> None: ...


class NullTracker:
    def leaf_started(self, role: Role) -> None:
        pass

    def process_started(self, role: Role, ref: ProcessRef) -> None:
        pass

    def process_exited(self, role: Role, ref: ProcessRef) -> None:
        pass


@dataclass
class StepContext:
    """Everything the steps of one container need; built once the backend container exists."""

    backend: Any                      # ContainerBackend (+ attach/stream_in/stream_out, see node.py)
    handle: str
    config: ExecutorConfig
    log: ContainerLog
    external_ip: str = ""
    internal_ip: str = ""
    ports: list[PortMapping] = field(default_factory=list)
    env: tuple[str, ...] = ()         # CF_INSTANCE_* layer, between the container env and a run action's env
    default_dir: str = "/"
    default_source: str = "APP"
    health_source: str = HEALTH_SOURCE
    transfers: Any = None             # Transfers (download.py)
    tracker: Tracker = field(default_factory=NullTracker)
    detaching: bool = False           # set when the executor leaves the container running on shutdown


def go_duration(seconds: float) -> str:
    """Format like Go's time.Duration.String(): 2s, 1m0s, 500ms, 1.5s, 1h0m0s (Diego's messages)."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    total_ns = round(abs(seconds) * 1e9)
    if total_ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if total_ns >= size:
                return sign + _trim(total_ns / size) + unit
    hours, rest = divmod(total_ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    secs = _trim(rest / 1e9)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


def _trim(value: float) -> str:
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return text or "0"


async def settle(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Wait until every task has finished, even if this coroutine is cancelled meanwhile.

    Child steps need time to terminate their processes after being cancelled; a parent that gave
    up waiting would leave them running unsupervised. A cancellation received while waiting is
    re-raised once they are done.
    """
    pending = [t for t in tasks if not t.done()]
    cancelled = False
    while pending:
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError:
            cancelled = True
        pending = [t for t in pending if not t.done()]
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: reported by the caller, not as "never retrieved"
    if cancelled:
        raise asyncio.CancelledError


async def finish_shielded(work: Awaitable[None]) -> None:
    """Run `work` to its end even if cancelled meanwhile; re-raise the cancellation afterwards."""
    await settle([asyncio.ensure_future(work)])
