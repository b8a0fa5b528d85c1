"""The container backend as the executor uses it: agents/garden's ContainerBackend plus the
calls added for the executor — re-attaching to a process after a restart, and copying files in
and out. Declared here, next to its consumer; RuncBackend implements it.
"""
from __future__ import annotations

from typing import Protocol

from agents.garden.backend import ContainerBackend, Process
from agents.garden.models import ProcessIO


class ExecutorBackend(ContainerBackend, Protocol):
    async def attach(self, handle: str, process_id: str, io: ProcessIO | None = None) -> Process:
        """The process `process_id` of `handle`, started earlier (possibly by another backend
        object); its wait() returns the real exit status even if it exited in between."""
        ...

    async def stream_in(self, handle: str, dest_dir: str, tar_path: str, user: str = "root") -> None:
        """Extract the plain tar at `tar_path` (a host file) under `dest_dir` in the container."""
        ...

    async def stream_out(self, handle: str, path: str, limit: int) -> bytes:
        """Content of one file of the container; FileTooLarge beyond `limit`, FileMissing if absent."""
        ...
