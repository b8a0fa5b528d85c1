"""Helpers for executor tests on real runc: a stack-only image resolver, request factories,
waiting for states and events, and a tiny HTTP server on the host."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.executor.executor import Executor
from agents.executor.models import AllocationRequest, Container, ContainerState, RunRequest
from agents.garden.errors import GardenError


class RootfsNotOffered(GardenError):
    type = "RootfsNotOffered"


@dataclass(frozen=True)
class StackImage:
    path: str
    env: tuple[str, ...] = ("IMAGE_VAR=from-image", "LAYERED=image")
    working_dir: str = "/"
    user: str = "root"


@dataclass
class StackResolver:
    """`preloaded:<stack>` -> a directory of stacks; anything else is not offered."""

    stacks: dict[str, Path] = field(default_factory=dict)

    async def resolve(self, rootfs: str, username: str = "", password: str = "") -> StackImage:
        scheme, _, name = rootfs.partition(":")
        if scheme != "preloaded" or name not in self.stacks:
            raise RootfsNotOffered(f"rootfs {rootfs} is not offered by this cell")
        return StackImage(path=str(self.stacks[name]))

    def offers(self, rootfs: str) -> bool:
        scheme, _, name = rootfs.partition(":")
        return scheme == "preloaded" and name in self.stacks


def run_action(script: str, **extra: Any) -> dict[str, Any]:
    return {"run": {"path": "/bin/sh", "args": ["-c", script], "user": "root", **extra}}


def lrp_request(script: str, **extra: Any) -> RunRequest:
    return RunRequest.model_validate({"rootfs": "preloaded:busybox", "action": run_action(script), **extra})


async def reserve(executor: Executor, guid: str, lifecycle: str = "lrp", memory_mb: int = 64,
                  disk_mb: int = 64) -> None:
    failures = await executor.allocate([AllocationRequest(guid=guid, memory_mb=memory_mb, disk_mb=disk_mb,
                                                          max_pids=200, tags={"lifecycle": lifecycle})])
    assert failures == [], failures


async def wait_for(executor: Executor, guid: str, predicate: Callable[[Container], bool],
                   timeout: float = 15.0) -> Container:
    deadline = time.monotonic() + timeout
    while True:
        container = executor.get(guid)
        if predicate(container):
            return container
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting; container is {container.state}: {container.run_result}")
        await asyncio.sleep(0.02)


async def wait_state(executor: Executor, guid: str, state: ContainerState, timeout: float = 15.0) -> Container:
    container = await wait_for(executor, guid, lambda c: c.state in (state, ContainerState.COMPLETED), timeout)
    assert container.state == state, f"expected {state}, got {container.state}: {container.run_result}"
    return container


async def http_get(host: str, port: int, path: str = "/", timeout: float = 3.0) -> tuple[int, bytes]:
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body
