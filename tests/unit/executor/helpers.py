"""Request factories and waiting helpers for executor unit tests."""
from __future__ import annotations

import asyncio
from typing import Any

from agents.executor.executor import Executor
from agents.executor.models import AllocationRequest, Container, ContainerState, RunRequest


def run(path: str, *args: str, **extra: Any) -> dict[str, Any]:
    return {"run": {"path": path, "args": list(args), "user": "root", **extra}}


def request(action: dict[str, Any] | None = None, **extra: Any) -> RunRequest:
    return RunRequest.model_validate({"rootfs": "preloaded:busybox", "action": action or run("forever"), **extra})


async def reserve(executor: Executor, guid: str, lifecycle: str = "lrp", **extra: Any) -> None:
    failures = await executor.allocate([AllocationRequest(guid=guid, tags={"lifecycle": lifecycle}, **extra)])
    assert failures == []


async def settled(executor: Executor, guid: str, *states: ContainerState, timeout: float = 5) -> Container:
    """Wait until the container is in one of `states` (default: COMPLETED)."""
    wanted = states or (ContainerState.COMPLETED,)
    async with asyncio.timeout(timeout):
        while executor.get(guid).state not in wanted:
            await asyncio.sleep(0.005)
    return executor.get(guid)
