"""The container state machine (reference §2.8), reservation expiry, and resource detection."""
from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from agents.executor import lifecycle
from agents.executor.api import InvalidStateTransition
from agents.executor.config import ExecutorConfig
from agents.executor.executor import Executor
from agents.executor.models import AllocationRequest, ContainerState, EventKind, Resources
from agents.executor.resources import detect_total, meminfo_total_mb, remaining, shortfall
from control.kit.clock import FakeClock

from .helpers import request, reserve

S = ContainerState
ALLOWED = {
    (S.RESERVED, S.INITIALIZING), (S.RESERVED, S.COMPLETED), (S.INITIALIZING, S.CREATED),
    (S.INITIALIZING, S.COMPLETED), (S.CREATED, S.RUNNING), (S.CREATED, S.COMPLETED), (S.RUNNING, S.COMPLETED),
}


@pytest.mark.parametrize(("before", "after"), list(itertools.product(S, S)))
def test_transition_table(before: ContainerState, after: ContainerState) -> None:
    if (before, after) in ALLOWED:
        lifecycle.check_transition(before, after)
    else:
        with pytest.raises(InvalidStateTransition):
            lifecycle.check_transition(before, after)


async def test_reservations_expire_after_the_configured_time(make_executor: Callable[..., Executor],
                                                            clock: FakeClock) -> None:
    executor = make_executor()
    events = executor.subscribe()
    await reserve(executor, "old")
    clock.advance(30)
    await reserve(executor, "young")
    await reserve(executor, "running")
    await executor.run_container("running", request())
    clock.advance(30)
    assert executor.reap_expired() == ["old"]
    old = executor.get("old")
    assert old.state == S.COMPLETED and old.run_result is not None
    assert (old.run_result.failed, old.run_result.failure_reason) == (True, lifecycle.EXPIRED)
    assert executor.get("young").state == S.RESERVED
    clock.advance(30)
    assert executor.reap_expired() == ["young"]
    assert executor.get("running").state != S.COMPLETED
    kinds = []
    async for event in events:
        kinds.append((event.kind, event.container.guid))
        if len(kinds) == 5:
            break
    assert (EventKind.COMPLETED, "old") in kinds and (EventKind.COMPLETED, "young") in kinds
    # An expired reservation keeps its resources until the rep deletes it (as in Diego).
    assert executor.remaining_resources().containers == 1
    await executor.delete("old")
    assert executor.remaining_resources().containers == 2


MEMINFO = "MemTotal:        8167848 kB\nMemFree:         1234 kB\n"


def test_detected_totals() -> None:
    assert meminfo_total_mb(MEMINFO) == 7976
    config = ExecutorConfig(memory_reserve_mb=976, containers=0)
    assert detect_total(config, meminfo=MEMINFO, disk_mb=5000) == Resources(memory_mb=7000, disk_mb=5000,
                                                                             containers=250)
    config = ExecutorConfig(memory_mb=100, disk_mb=200, containers=3)
    assert detect_total(config, meminfo="", disk_mb=1) == Resources(memory_mb=100, disk_mb=200, containers=3)
    assert detect_total(ExecutorConfig(memory_reserve_mb=10**6), meminfo=MEMINFO, disk_mb=1).memory_mb == 0


def test_allocation_arithmetic() -> None:
    total = Resources(memory_mb=1000, disk_mb=1000, containers=3)
    booked = [Resources(memory_mb=600, disk_mb=0, containers=1), Resources(memory_mb=300, disk_mb=900, containers=1)]
    left = remaining(total, booked)
    assert left == Resources(memory_mb=100, disk_mb=100, containers=1)
    assert shortfall(left, AllocationRequest(guid="a", memory_mb=100, disk_mb=100)) is None
    assert shortfall(left, AllocationRequest(guid="a", memory_mb=101, disk_mb=101)) == \
        "insufficient resources: memory, disk"
    assert shortfall(Resources(), AllocationRequest(guid="a")) == "insufficient resources: containers"
    assert remaining(total, booked * 3) == Resources()
