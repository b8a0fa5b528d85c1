"""Graceful stop (reference §6.6): SIGTERM, then SIGKILL after graceful_shutdown_interval (1 s here)."""
from __future__ import annotations

import asyncio
import time

from agents.executor.models import ContainerState, EventKind

from .conftest import Cell
from .helpers import lrp_request, reserve, wait_state


async def test_stop_sends_sigterm_which_the_app_honours(cell: Cell) -> None:
    executor = cell.executor
    await reserve(executor, "polite")
    await executor.run_container("polite", lrp_request("trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.1; done"))
    await wait_state(executor, "polite", ContainerState.RUNNING)
    await asyncio.sleep(0.3)  # the shell has installed its trap
    started = time.monotonic()
    await executor.stop("polite")
    elapsed = time.monotonic() - started
    container = executor.get("polite")
    assert container.state == ContainerState.COMPLETED and container.run_result is not None
    assert container.run_result.stopped and elapsed < 0.9, (container.run_result, elapsed)
    lines = [line.line async for line in executor.logs("polite")]
    assert "got TERM" in lines
    await executor.stop("polite")  # idempotent


async def test_a_process_ignoring_sigterm_is_killed_after_the_graceful_interval(cell: Cell) -> None:
    executor = cell.executor
    events = executor.subscribe()
    await reserve(executor, "stubborn")
    await executor.run_container("stubborn", lrp_request("trap '' TERM; while true; do sleep 0.1; done"))
    await wait_state(executor, "stubborn", ContainerState.RUNNING)
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await executor.stop("stubborn")
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 3, elapsed
    assert executor.get("stubborn").run_result.stopped  # type: ignore[union-attr]
    await executor.delete("stubborn")
    kinds = [e.kind async for e in _until_removed(events)]
    assert kinds == [EventKind.RESERVED, EventKind.RUNNING, EventKind.COMPLETED, EventKind.REMOVED]


async def test_stop_of_a_reservation_completes_it_at_once(cell: Cell) -> None:
    await reserve(cell.executor, "reserved")
    await cell.executor.stop("reserved")
    result = cell.executor.get("reserved").run_result
    assert result is not None and result.stopped and result.failure_reason == "stopped-before-running"


async def _until_removed(events):  # type: ignore[no-untyped-def]
    async for event in events:
        yield event
        if event.kind == EventKind.REMOVED:
            return
