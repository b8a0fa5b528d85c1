"""The container backend a cell's executor drives: Garden's API, reduced to what Diego uses.

The executor (and, through it, the rep) depends on these two Protocols only; `RuncBackend`
(runc.py) is the real implementation and tests of the executor can use an in-memory fake.
Lifecycle (reference §6.2): create -> run processes -> stop (SIGTERM, SIGKILL after
kill_after_s) -> destroy. Everything is async; every method is safe to call concurrently for
different handles.

Restart safety: containers and their processes outlive the backend object and its Python
process. A new backend object on the same depot lists them (`list`, `process_ids`) and
re-attaches (`attach`) with their real exit status, unless the backend's keeper was killed too:
then `wait()` gives ExitStatus(code=255, lost=True, reason="exit status lost").
"""
from __future__ import annotations

from pathlib import Path
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
        """Exit status once the process has ended; can be awaited repeatedly.

        `lost=True` (code 255) when nobody could observe the exit (backend and keeper both died).
        """
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

    async def attach(self, handle: str, process_id: str, io: ProcessIO | None = None) -> Process:
        """A process started by this or an earlier backend object on the same depot, running or not.

        Its `wait()` returns at once for a process that has already exited. `io` callbacks get
        what the process appends to its stdout_path/stderr_path files from now on (a process of
        this object keeps its original output instead). Raises ProcessNotFound for an unknown id.
        """
        ...

    def process_ids(self, handle: str) -> dict[str, bool]:
        """Every known process of the container (including from before a restart) -> still running.

        Exited processes stay listed (their status can be attached to) until the newest 100
        exited ones of the container are all that is kept, or the container is destroyed.
        """
        ...

    async def signal(self, handle: str, process_id: str, signum: int) -> None:
        """Signal a running process (also one from before a restart); ProcessNotFound otherwise."""
        ...

    async def stream_in(self, handle: str, dest_dir: str, tar_path: str | Path, user: str = "root") -> None:
        """Extract a host tar file (plain or gzip) into dest_dir in the container, creating it.

        Runs inside the container as `user` (paths, symlinks and owners resolve as it sees them).
        Raises StreamFailed (bad archive, no space, permission), InvalidSpec, ContainerStopped.
        """
        ...

    async def stream_out(self, handle: str, path: str, limit: int) -> bytes:
        """The content of one regular file in the container.

        Raises FileMissing when absent (or not a regular file), FileTooLarge beyond `limit` bytes.
        """
        ...

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
