"""The loop's timing (interval, presence wake-ups, failures) with fakes, and the snapshot parsers."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from control.bbs.controllers import lifecycle
from control.converger.loop import ConvergenceLoop
from control.converger.snapshot import parse_desired, parse_rows, parse_tasks
from control.kit.etcd import FencedOut
from control.models.actual_lrp import ActualLRP, Presence

from .builders import NOW, task


class FakeWatch:
    """watch_presences() yields the current set, then every set put on the queue."""

    def __init__(self, initial: dict[str, bytes]) -> None:
        self.initial = initial
        self.updates: asyncio.Queue[dict[str, bytes]] = asyncio.Queue()

    async def watch_presences(self) -> AsyncIterator[dict[str, bytes]]:
        yield dict(self.initial)
        while True:
            yield await self.updates.get()


class Recorder:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.starts: list[float] = []
        self.fail = fail

    async def run_pass(self) -> None:
        self.starts.append(time.monotonic())
        if self.fail is not None:
            raise self.fail


@contextlib.asynccontextmanager
async def running(loop: ConvergenceLoop) -> AsyncIterator[None]:
    ready = asyncio.Event()
    task = asyncio.create_task(loop.run(ready))
    await ready.wait()
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_passes_follow_the_interval_and_not_the_start() -> None:
    runner = Recorder()
    async with running(ConvergenceLoop(runner, FakeWatch({}), interval_s=0.2)):
        await asyncio.sleep(0.1)
        assert runner.starts == []  # the first pass waits one interval
        await asyncio.sleep(0.45)
    assert len(runner.starts) == 2


async def test_a_cell_gone_or_back_wakes_the_loop_at_once() -> None:
    runner, watch = Recorder(), FakeWatch({"cell-1": b"a", "cell-2": b"b"})
    loop = ConvergenceLoop(runner, watch, interval_s=30, debounce_s=0.05)
    async with running(loop):
        await asyncio.sleep(0.05)
        await watch.updates.put({"cell-1": b"a2", "cell-2": b"b"})  # a refreshed value: no pass
        await asyncio.sleep(0.2)
        assert runner.starts == []
        t = time.monotonic()
        await watch.updates.put({"cell-1": b"a2"})                 # cell-2 is gone
        await watch.updates.put({"cell-2": b"b"})                  # a burst: one pass
        await asyncio.sleep(0.3)
        assert len(runner.starts) == 1 and runner.starts[0] - t < 0.2
        assert loop.last_reason == "cells-changed"
        await watch.updates.put({"cell-1": b"a", "cell-2": b"b"})   # cell-1 is back
        await asyncio.sleep(0.3)
        assert len(runner.starts) == 2


async def test_a_failed_pass_is_retried_next_tick() -> None:
    runner = Recorder(fail=RuntimeError("etcd went away"))
    async with running(ConvergenceLoop(runner, FakeWatch({}), interval_s=0.1)):
        await asyncio.sleep(0.35)
    assert len(runner.starts) >= 2


async def test_losing_the_lock_ends_the_loop() -> None:
    ready = asyncio.Event()
    loop = ConvergenceLoop(Recorder(fail=FencedOut("superseded")), FakeWatch({}), interval_s=0.05)
    with pytest.raises(ExceptionGroup) as info:
        await asyncio.wait_for(loop.run(ready), timeout=2)
    assert info.group_contains(FencedOut)


# ---- parsing --------------------------------------------------------------------------------------

def test_rows_are_grouped_by_guid_and_index_and_malformed_ones_counted() -> None:
    a = lifecycle.new_unclaimed("web", 0, "apps", NOW, "e0")
    b = lifecycle.new_unclaimed("web", 3, "apps", NOW, "e3")
    suspect = ActualLRP.model_validate({**a.model_dump(), "presence": Presence.SUSPECT, "state": "CLAIMED",
                                        "instance_guid": "ig", "cell_id": "c1"})
    groups, malformed = parse_rows([a.to_json(), b.to_json(), suspect.to_json(), b"{nope", b'{"index": 1}',
                                    a.to_json().replace(b"ORDINARY", b"SIDEWAYS")])
    assert malformed == 3
    assert set(groups) == {"web"} and set(groups["web"]) == {0, 3}
    slot = groups["web"][0]
    assert slot.ordinary is not None and slot.ordinary.tag == ("e0", 0) and slot.ordinary.state == "UNCLAIMED"
    assert slot.suspect is not None and slot.suspect.cell_id == "c1" and slot.evacuating is None


def test_unreadable_desired_lrps_are_reported_by_guid() -> None:
    good = b'{"process_guid":"web","domain":"apps","rootfs":"preloaded:x","instances":3}'
    desired, bad = parse_desired([("web", good, 5), ("broken", b"{", 6), ("other", good, 7)])
    assert list(desired) == ["web"] and desired["web"].instances == 3 and desired["web"].rev == 5
    assert bad == {"broken", "other"}  # "other" holds a document of another guid


def test_tasks_that_do_not_validate_are_reported_for_pruning() -> None:
    ok = task("t1").task.to_json()
    tasks, bad = parse_tasks([("t1", ok, 3), ("t2", b'{"task_guid":"t2"}', 4), ("t3", ok, 5)])
    assert [t.guid for t in tasks] == ["t1"] and bad == [("t2", 4), ("t3", 5)]
