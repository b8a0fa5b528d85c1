"""The executor's container lifecycle over the in-memory backend."""
from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import pytest

from agents.executor.api import ContainerNotFound, InvalidStateTransition
from agents.executor.executor import Executor
from agents.executor.models import AllocationRequest, ContainerState, EventKind, RunRequest
from agents.garden.errors import InsufficientResources

from .fakes import FakeBackend, FakeImages
from .helpers import request, reserve, run, settled

S = ContainerState


async def test_lrp_without_checks_is_running_when_the_action_starts(executor: Executor, backend: FakeBackend) -> None:
    events = executor.subscribe()
    await reserve(executor, "a", memory_mb=128, disk_mb=256, max_pids=10)
    await executor.run_container("a", request(ports=[8080, 8080, 9090], cpu_weight=0))
    container = await settled(executor, "a", S.RUNNING)
    spec = backend.containers["a"].spec
    assert (spec.memory_mb, spec.disk_mb, spec.max_pids, spec.cpu_weight, spec.ports) == (128, 256, 10, 100, (8080, 9090))
    assert spec.env == ("IMAGE=1",) and spec.properties == {"lifecycle": "lrp"}
    assert container.routable and [p.container_port for p in container.ports] == [8080, 9090]
    assert container.internal_ip.startswith("10.0.0.") and container.external_ip == "127.0.0.1"
    process = backend.process("a", "forever")
    assert process.spec.dir == "/home/app" and process.spec.process_id.startswith("action-")
    assert [e.kind async for e in _take(events, 2)] == [EventKind.RESERVED, EventKind.RUNNING]


async def test_action_failure_completes_with_the_exit_status(executor: Executor) -> None:
    await reserve(executor, "a")
    await executor.run_container("a", request(run("exit", "3")))
    result = (await settled(executor, "a")).run_result
    assert result is not None and (result.failed, result.failure_reason, result.retryable) == (True, "Exit status 3", False)


async def test_oom_kill_is_named(executor: Executor) -> None:
    await reserve(executor, "a")
    await executor.run_container("a", request(run("oom")))
    assert (await settled(executor, "a")).run_result.failure_reason == "Exit status 137 (out of memory)"  # type: ignore[union-attr]


async def test_a_daemon_exiting_0_keeps_its_monitoring(executor: Executor) -> None:
    await reserve(executor, "a")
    await executor.run_container("a", request(run("exit", "0"), monitor=run("exit", "0")))
    await settled(executor, "a", S.RUNNING)
    await asyncio.sleep(0.2)
    assert executor.get("a").state == S.RUNNING


async def test_an_lrp_action_exiting_0_without_monitor_completes_unfailed(executor: Executor) -> None:
    await reserve(executor, "a")
    await executor.run_container("a", request(run("exit", "0")))
    result = (await settled(executor, "a")).run_result
    assert result is not None and not result.failed


@pytest.mark.parametrize("fail", ["images", "backend"])
async def test_failures_before_the_action_are_retryable(executor: Executor, backend: FakeBackend, images: FakeImages,
                                                        fail: str) -> None:
    if fail == "images":
        images.fail = InsufficientResources("no such stack")
    else:
        backend.fail_create = InsufficientResources("no host ports left")
    await reserve(executor, "a")
    await executor.run_container("a", request())
    result = (await settled(executor, "a")).run_result
    assert result is not None and result.failed and result.retryable
    assert result.failure_reason.startswith("failed to create container: ")


async def test_setup_failure_fails_the_container_and_the_action_never_runs(executor: Executor,
                                                                          backend: FakeBackend) -> None:
    await reserve(executor, "a")
    await executor.run_container("a", request(setup=run("exit", "2")))
    result = (await settled(executor, "a")).run_result
    assert result is not None and result.failure_reason == "Exit status 2" and not result.retryable
    assert [p.kind for p in backend.containers["a"].processes.values()] == ["exit"]


async def test_process_start_failure(executor: Executor) -> None:
    await reserve(executor, "a")
    await executor.run_container("a", request(run("missing")))
    result = (await settled(executor, "a")).run_result
    assert result is not None and result.failure_reason.startswith("failed to start missing: ")


async def test_monitor_never_healthy_and_became_unhealthy(executor: Executor) -> None:
    await reserve(executor, "never")
    await executor.run_container("never", request(monitor=run("exit", "1"), start_timeout_ms=100))
    result = (await settled(executor, "never")).run_result
    assert result is not None and result.failure_reason == "Instance never healthy after 100ms: Exit status 1"

    await reserve(executor, "later")
    await executor.run_container("later", request(monitor=run("sleep", "0.01"), start_timeout_ms=1000))
    await settled(executor, "later", S.RUNNING)


async def test_stop_terminates_then_kills(executor: Executor, backend: FakeBackend) -> None:
    await reserve(executor, "a")
    await executor.run_container("a", request(run("stubborn")))
    await settled(executor, "a", S.RUNNING)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await executor.stop("a")
    assert 0.19 < loop.time() - started < 1
    assert backend.process("a", "stubborn").signals == [signal.SIGTERM, signal.SIGKILL]
    result = executor.get("a").run_result
    assert result is not None and result.stopped and result.failed


async def test_delete_stops_destroys_and_forgets(executor: Executor, backend: FakeBackend) -> None:
    await reserve(executor, "a", memory_mb=100)
    await executor.run_container("a", request())
    await settled(executor, "a", S.RUNNING)
    events = executor.subscribe()
    await asyncio.gather(executor.delete("a"), executor.delete("a"))
    await executor.delete("a")
    assert backend.destroyed == ["a"] and executor.list() == []
    assert executor.remaining_resources() == executor.total_resources()
    assert [e.kind async for e in _take(events, 2)] == [EventKind.COMPLETED, EventKind.REMOVED]
    with pytest.raises(ContainerNotFound):
        executor.get("a")
    with pytest.raises(ContainerNotFound):
        executor.logs("a")


async def test_run_needs_a_reserved_container(executor: Executor) -> None:
    with pytest.raises(ContainerNotFound):
        await executor.run_container("nope", request())
    await reserve(executor, "a")
    await executor.run_container("a", request())
    with pytest.raises(InvalidStateTransition):
        await executor.run_container("a", request())


async def test_a_request_without_action_completes_at_once(executor: Executor, backend: FakeBackend) -> None:
    await reserve(executor, "a")
    await executor.run_container("a", RunRequest(rootfs="preloaded:busybox"))
    result = executor.get("a").run_result
    assert result is not None and result.failure_reason == "container cannot have empty action"
    assert backend.containers == {}


async def test_container_metrics_come_from_the_backend(executor: Executor) -> None:
    await reserve(executor, "a")
    with pytest.raises(ContainerNotFound):
        await executor.container_metrics("a")
    await executor.run_container("a", request())
    await settled(executor, "a", S.RUNNING)
    assert (await executor.container_metrics("a")).memory_bytes == 1


async def test_task_result_file(executor: Executor, backend: FakeBackend) -> None:
    await reserve(executor, "t", lifecycle="task")
    await executor.run_container("t", request(run("sleep", "0.05"), result_file="/tmp/result"))
    await settled(executor, "t", S.RUNNING)
    backend.containers["t"].files["/tmp/result"] = b"42"
    result = (await settled(executor, "t")).run_result
    assert result is not None and (result.failed, result.result) == (False, "42")


@pytest.mark.parametrize("content", [None, b"x" * (50 * 1024 + 1)])
async def test_task_result_missing_or_too_large_fails(executor: Executor, backend: FakeBackend,
                                                      content: bytes | None) -> None:
    await reserve(executor, "t", lifecycle="task")
    await executor.run_container("t", request(run("sleep", "0.05"), result_file="/tmp/result"))
    await settled(executor, "t", S.RUNNING)
    if content is not None:
        backend.containers["t"].files["/tmp/result"] = content
    result = (await settled(executor, "t")).run_result
    assert result is not None and (result.failed, result.failure_reason) == (True, "failed to fetch result")


async def test_readiness_checks_gate_routable(make_executor: Callable[..., Executor], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from agents.executor.steps import health

    ready = {"ok": False}

    async def fake_probe(self: health.Probe, ip: str) -> str | None:
        return None if ready["ok"] else "not yet"

    monkeypatch.setattr(health.Probe, "__call__", fake_probe)
    executor = make_executor()
    events = executor.subscribe()
    await reserve(executor, "a")
    await executor.run_container("a", request(ports=[8080], check_definition={
        "readiness_checks": [{"http_check": {"port": 8080, "path": "/ready", "interval_ms": 20}}]}))
    container = await settled(executor, "a", S.RUNNING)
    assert not container.routable
    ready["ok"] = True
    async with asyncio.timeout(2):
        while not executor.get("a").routable:
            await asyncio.sleep(0.01)
    ready["ok"] = False
    async with asyncio.timeout(2):
        while executor.get("a").routable:
            await asyncio.sleep(0.01)
    assert executor.get("a").state == S.RUNNING
    kinds = [e.kind async for e in _take(events, 4)]
    assert kinds == [EventKind.RESERVED, EventKind.RUNNING, EventKind.ROUTABLE_CHANGED, EventKind.ROUTABLE_CHANGED]


async def test_allocation_books_resources_and_rejects_what_does_not_fit(executor: Executor) -> None:
    total = executor.total_resources()
    assert (total.memory_mb, total.disk_mb, total.containers) == (1024, 2048, 4)
    failures = await executor.allocate([
        AllocationRequest(guid="a", memory_mb=600, disk_mb=100),
        AllocationRequest(guid="b", memory_mb=600),
        AllocationRequest(guid="a", memory_mb=1),
        AllocationRequest(guid="c", memory_mb=400, disk_mb=2000),
        AllocationRequest(guid="d"), AllocationRequest(guid="e"), AllocationRequest(guid="f"),
        AllocationRequest(guid="g"),
    ])
    assert [(f.guid, f.reason) for f in failures] == [
        ("b", "insufficient resources: memory"), ("a", "container already exists"),
        ("c", "insufficient resources: disk"), ("g", "insufficient resources: containers")]
    remaining = executor.remaining_resources()
    assert (remaining.memory_mb, remaining.disk_mb, remaining.containers) == (424, 1948, 0)
    snapshot = executor.metrics_snapshot()
    assert snapshot.containers["reserved"] == 4 and snapshot.starting == 4 and snapshot.events["reserved"] == 4
    text = snapshot.prometheus()
    assert 'executor_containers{state="reserved"} 4\n' in text and "executor_remaining_memory_mb 424\n" in text


async def test_slow_subscriber_is_dropped(executor: Executor) -> None:
    executor._hub._buffer = 2
    events = executor.subscribe()
    for guid in ("a", "b", "c"):
        await reserve(executor, guid)
    assert [e.container.guid async for e in events] == ["a", "b"]


async def _take(events, n):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(5):
        count = 0
        async for event in events:
            yield event
            count += 1
            if count == n:
                return
