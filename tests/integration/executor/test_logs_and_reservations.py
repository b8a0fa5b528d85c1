"""Logs of a real container (tail, follow, system lines) and reservation expiry on a real clock."""
from __future__ import annotations

import asyncio
from datetime import timedelta

from agents.executor.models import AllocationRequest, ContainerState, EventKind

from .conftest import Cell, MakeCell
from .helpers import lrp_request, reserve, wait_state


async def test_logs_tail_and_follow(cell: Cell) -> None:
    executor = cell.executor
    await reserve(executor, "chatty")
    await executor.run_container("chatty", lrp_request(
        "echo first; echo oops >&2; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.05; done",
        log_config={"guid": "app-guid", "source_name": "APP/PROC/WEB", "index": 0},
        monitor={"run": {"path": "true", "user": "root"}}))
    await wait_state(executor, "chatty", ContainerState.RUNNING)
    followed: list[tuple[str, str, str]] = []
    async with asyncio.timeout(5):
        async for line in executor.logs("chatty", follow=True, tail=1000):
            followed.append((line.source, line.stream, line.line))
            if line.line == "tick 5":
                break
    assert ("CELL", "stdout", "Starting health monitoring of container") in followed
    assert ("CELL", "stdout", "Container became healthy") in followed
    assert ("APP/PROC/WEB", "stdout", "first") in followed and ("APP/PROC/WEB", "stderr", "oops") in followed
    await asyncio.sleep(0.2)
    tail = [line.line async for line in executor.logs("chatty", tail=3)]
    assert len(tail) == 3 and all(t.startswith("tick ") for t in tail)
    assert int(tail[-1].split()[1]) > 5


async def test_follow_ends_when_the_container_is_deleted(cell: Cell) -> None:
    executor = cell.executor
    await reserve(executor, "short")
    await executor.run_container("short", lrp_request("echo bye; exit 0"))
    await wait_state(executor, "short", ContainerState.COMPLETED)
    lines: list[str] = []

    async def follow() -> None:
        async for line in executor.logs("short", follow=True):
            lines.append(line.line)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.1)
    await executor.delete("short")
    await asyncio.wait_for(task, 2)
    assert lines == ["bye", "Exit status 0"]


async def test_reservations_expire(make_cell: MakeCell) -> None:
    cell = await make_cell(reserved_expiration=timedelta(milliseconds=300))
    events = cell.executor.subscribe()
    assert await cell.executor.allocate([AllocationRequest(guid="idle", memory_mb=100)]) == []
    async with asyncio.timeout(3):
        async for event in events:
            if event.kind == EventKind.COMPLETED:
                break
    result = cell.executor.get("idle").run_result
    assert result is not None and result.failed and result.failure_reason == "reserved container expired"
