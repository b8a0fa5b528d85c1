"""The container backend a cell's executor drives: Garden's API, reduced to what Diego uses.

The executor (and, through it, the rep) depends on these two Protocols only; `RuncBackend`
(runc.py) is the real implementation and tests of the executor can use an in-memory fake.
Lifecycle (reference §6.2): create -> run processes -> stop (SIGTERM, SIGKILL after
kill_after_s) -> destroy. Everything is async; every method is safe to call concurrently for
different handles.
"""
from __future__ import annotations

from typing import Protocol

from .models import ContainerInfo, ContainerMetrics, ContainerSpec, ExitStatus, ProcessIO, ProcessSpec


class Process(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def pid(self) -> int:
        """Host pid of the process."""
        ...

    async def wait(self) -> ExitStatus:
        """Exit status once the process has ended; can be awaited repeatedly."""
        ...

    def signal(self, signum: int) -> None: ...


class ContainerBackend(Protocol):
    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        """Make and start a container; on any failure nothing of it is left behind.

        Raises ContainerExists, InvalidSpec, InsufficientResources (addresses, host ports) or
        CommandFailed.
        """
        ...

    async def run(self, handle: str, spec: ProcessSpec, io: ProcessIO | None = None) -> Process:
        """Start a process in the container; returns once it has started (ProcessStartFailed if not)."""
        ...

    async def signal(self, handle: str, process_id: str, signum: int) -> None: ...

    async def stop(self, handle: str, kill_after_s: float = 10) -> None:
        """SIGTERM every process, SIGKILL whatever is left after kill_after_s; the container is then STOPPED."""
        ...

    async def destroy(self, handle: str) -> None:
        """Remove the container and everything made for it (idempotent for a known handle)."""
        ...

    async def info(self, handle: str) -> ContainerInfo: ...

    async def metrics(self, handle: str) -> ContainerMetrics: ...

    async def list(self) -> list[str]:
        """Handles of every container, including those made before this object existed."""
        ...
