"""Restart safety: a new executor re-adopts what the previous one left (recovery.py)."""
from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable

import pytest

from agents.executor import lifecycle
from agents.executor.executor import Executor
from agents.executor.models import Container, ContainerState, EventKind
from agents.executor.records import ContainerRecord
from agents.executor.recovery import Fate, plan
from agents.garden.models import ContainerSpec

from .fakes import FakeBackend
from .helpers import request, reserve, run, settled

S = ContainerState


@pytest.mark.parametrize(("state", "present", "fate"), [
    (None, True, Fate.DESTROY),
    (S.RESERVED, False, Fate.DROP), (S.RESERVED, True, Fate.DROP),
    (S.INITIALIZING, False, Fate.FAIL_RETRYABLE), (S.INITIALIZING, True, Fate.FAIL_RETRYABLE),
    (S.CREATED, True, Fate.ADOPT), (S.RUNNING, True, Fate.ADOPT),
    (S.CREATED, False, Fate.FAIL_MISSING), (S.RUNNING, False, Fate.FAIL_MISSING),
    (S.COMPLETED, True, Fate.KEEP), (S.COMPLETED, False, Fate.KEEP),
])
def test_plan(state: ContainerState | None, present: bool, fate: Fate) -> None:
    records = {} if state is None else {"g": state}
    assert plan(records, ["g"] if present else []) == {"g": fate}


async def serving(executor: Executor) -> asyncio.Task[None]:
    ready = asyncio.Event()
    task = asyncio.create_task(executor.run(ready))
    await asyncio.wait_for(ready.wait(), 5)
    return task


async def stop_serving(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def runners() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        await stop_serving(task)


async def test_a_running_lrp_is_readopted_and_its_later_crash_reported(
        make_executor: Callable[..., Executor], backend: FakeBackend, runners: list[asyncio.Task[None]]) -> None:
    first = make_executor()
    runners.append(await serving(first))
    await reserve(first, "web", memory_mb=100)
    await first.run_container("web", request(ports=[8080], monitor=run("exit", "0")))
    before = await settled(first, "web", S.RUNNING)
    app = backend.process("web", "forever")
    await stop_serving(runners.pop())  # the rep goes away: nothing is signalled
    assert app.signals == [] and not app.exited

    second = make_executor()
    runners.append(await serving(second))
    after = second.get("web")
    assert after.state == S.RUNNING and after.ports == before.ports and after.internal_ip == before.internal_ip
    assert second.remaining_resources().memory_mb == second.total_resources().memory_mb - 100
    events = second.subscribe()
    app.signal(signal.SIGTERM)  # the app dies while the new executor watches
    result = (await settled(second, "web")).run_result
    assert result is not None and (result.failed, result.failure_reason) == (True, "Exit status 143")
    async for event in events:
        assert event.kind == EventKind.COMPLETED
        break


async def test_an_action_that_exited_meanwhile_completes_on_readoption(
        make_executor: Callable[..., Executor], backend: FakeBackend, runners: list[asyncio.Task[None]]) -> None:
    first = make_executor()
    runners.append(await serving(first))
    await reserve(first, "web")
    await first.run_container("web", request())
    await settled(first, "web", S.RUNNING)
    await stop_serving(runners.pop())
    backend.process("web", "forever")._finish(3)  # exits while no executor runs

    second = make_executor()
    runners.append(await serving(second))
    result = (await settled(second, "web")).run_result
    assert result is not None and result.failure_reason == "Exit status 3"


async def test_a_container_still_in_setup_cannot_be_resumed(
        make_executor: Callable[..., Executor], backend: FakeBackend, runners: list[asyncio.Task[None]]) -> None:
    first = make_executor()
    runners.append(await serving(first))
    await reserve(first, "slow")
    await first.run_container("slow", request(setup=run("forever"), monitor=run("exit", "0")))
    await settled(first, "slow", S.CREATED)
    await asyncio.sleep(0.02)
    await stop_serving(runners.pop())

    second = make_executor()
    runners.append(await serving(second))
    result = second.get("slow").run_result
    assert result is not None and result.failure_reason == lifecycle.RESTARTED_WHILE_STARTING
    await second.delete("slow")
    assert "slow" in backend.destroyed


async def test_what_no_longer_belongs_is_cleaned_and_the_rest_kept(
        make_executor: Callable[..., Executor], backend: FakeBackend, runners: list[asyncio.Task[None]]) -> None:
    first = make_executor()
    records = first.records

    def record(guid: str, state: ContainerState, **extra: object) -> None:
        container = Container(guid=guid, state=state, allocated_at=1.0, run_request=request(),
                              tags={"lifecycle": "lrp"}, **extra)  # type: ignore[arg-type]
        records.save(ContainerRecord(container=container))

    for guid in ("stray", "initializing", "done"):
        await backend.create(ContainerSpec(handle=guid, rootfs="/stacks/busybox"))
    record("reserved", S.RESERVED)
    record("initializing", S.INITIALIZING)
    record("vanished", S.RUNNING)
    record("done", S.COMPLETED, run_result={"failed": True, "failure_reason": "Exit status 1"})
    (records.root / "junk").mkdir()

    second = make_executor()
    runners.append(await serving(second))
    assert backend.destroyed == ["stray"]
    assert sorted(c.guid for c in second.list()) == ["done", "initializing", "vanished"]
    assert not (records.root / "reserved").exists() and not (records.root / "junk").exists()
    initializing = second.get("initializing").run_result
    assert initializing is not None and initializing.retryable
    vanished = second.get("vanished").run_result
    assert vanished is not None and vanished.failure_reason == lifecycle.CONTAINER_MISSING
    assert second.get("done").run_result.failure_reason == "Exit status 1"  # type: ignore[union-attr]
    assert second.metrics_snapshot().events["recovered_destroy"] == 1
    for guid in ("initializing", "done"):
        await second.delete(guid)
    assert backend.containers == {}
