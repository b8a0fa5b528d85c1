"""The ordered supervisor: members start in order after the previous one is ready, a member
that ends ends the group, and stopping happens in reverse order."""
from __future__ import annotations

import asyncio

import pytest

from control.kit.supervisor import MemberExited, run_members


class Member:
    def __init__(self, name: str, log: list[str], fail: Exception | None = None, end: bool = False,
                 ready_after: float = 0.0) -> None:
        self.name, self.log, self.fail, self.end, self.ready_after = name, log, fail, end, ready_after

    async def run(self, ready: asyncio.Event) -> None:
        self.log.append(f"start {self.name}")
        try:
            await asyncio.sleep(self.ready_after)
            if self.fail:
                raise self.fail
            if self.end:
                return
            ready.set()
            self.log.append(f"ready {self.name}")
            await asyncio.Event().wait()
        finally:
            self.log.append(f"stop {self.name}")


async def test_members_start_in_order_and_stop_in_reverse() -> None:
    log: list[str] = []
    group = asyncio.create_task(run_members([(n, Member(n, log, ready_after=0.01)) for n in ("a", "b", "c")]))
    await asyncio.sleep(0.2)
    assert log == ["start a", "ready a", "start b", "ready b", "start c", "ready c"]
    group.cancel()
    with pytest.raises(asyncio.CancelledError):
        await group
    assert log[-3:] == ["stop c", "stop b", "stop a"]


async def test_a_member_that_fails_before_ready_stops_the_start() -> None:
    log: list[str] = []
    with pytest.raises(RuntimeError, match="boom"):
        await run_members([("a", Member("a", log)), ("b", Member("b", log, fail=RuntimeError("boom"))),
                           ("c", Member("c", log))])
    assert "start c" not in log and log[-1] == "stop a"


async def test_a_member_that_ends_ends_the_group() -> None:
    log: list[str] = []

    class EndsLater(Member):
        async def run(self, ready: asyncio.Event) -> None:
            ready.set()
            await asyncio.sleep(0.05)
            self.log.append("b ended")

    with pytest.raises(MemberExited) as info:
        await run_members([("a", Member("a", log)), ("b", EndsLater("b", log))])
    assert info.value.name == "b"
    assert log[-1] == "stop a"  # the others were stopped
