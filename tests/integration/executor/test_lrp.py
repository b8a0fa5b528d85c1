"""LRPs on real runc: health checks, crashes, OOM, readiness, environment, logs."""
from __future__ import annotations

import asyncio
import time

from agents.executor.models import ContainerState, EventKind
from agents.garden.models import ProcessSpec

from .conftest import Cell
from .helpers import http_get, lrp_request, reserve, wait_state

HTTPD = "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www"


async def test_httpd_with_tcp_check_becomes_running_and_answers(cell: Cell) -> None:
    executor = cell.executor
    events = executor.subscribe()
    await reserve(executor, "web-0")
    started = time.monotonic()
    await executor.run_container("web-0", lrp_request(
        HTTPD, ports=[8080], check_definition={"checks": [{"tcp_check": {"port": 8080}}]}, start_timeout_ms=10000))
    container = await wait_state(executor, "web-0", ContainerState.RUNNING)
    latency = time.monotonic() - started
    print(f"create->running latency (httpd, TCP check): {latency * 1000:.0f} ms")
    assert container.routable and container.internal_ip and container.external_ip == "127.0.0.1"
    (mapping,) = container.ports
    assert mapping.container_port == 8080
    status, body = await http_get("127.0.0.1", mapping.host_port)
    assert (status, body) == (200, b"hello\n")
    kinds = []
    async for event in events:
        kinds.append(event.kind)
        if event.kind == EventKind.RUNNING:
            break
    assert kinds == [EventKind.RESERVED, EventKind.RUNNING]
    await events.aclose()


async def test_http_check_on_a_missing_path_is_never_healthy(cell: Cell) -> None:
    executor = cell.executor
    await reserve(executor, "web-1")
    await executor.run_container("web-1", lrp_request(
        HTTPD, ports=[8080], start_timeout_ms=1500,
        check_definition={"checks": [{"http_check": {"port": 8080, "path": "/missing"}}]}))
    container = await wait_state(executor, "web-1", ContainerState.COMPLETED)
    result = container.run_result
    assert result is not None and result.failed and not result.stopped and not result.retryable
    assert result.failure_reason.startswith("Instance never healthy after 1.5s: Failed to make HTTP request to "
                                            "'/missing' on port 8080: received status code 404"), result


async def test_crashing_process_reports_its_exit_status(cell: Cell) -> None:
    executor = cell.executor
    await reserve(executor, "crash")
    await executor.run_container("crash", lrp_request("echo about to crash; exit 3"))
    container = await wait_state(executor, "crash", ContainerState.COMPLETED)
    assert container.run_result is not None
    assert (container.run_result.failed, container.run_result.failure_reason) == (True, "Exit status 3")
    lines = [line async for line in executor.logs("crash")]
    assert ("APP", "stdout", "about to crash") in [(l.source, l.stream, l.line) for l in lines]
    assert lines[-1].line == "Exit status 3"


async def test_out_of_memory_is_named(cell: Cell) -> None:
    executor = cell.executor
    await reserve(executor, "oom", memory_mb=16)
    # A shell variable that doubles until the 16 MiB cgroup kills the process.
    await executor.run_container("oom", lrp_request("x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"))
    container = await wait_state(executor, "oom", ContainerState.COMPLETED)
    assert container.run_result is not None
    assert container.run_result.failure_reason == "Exit status 137 (out of memory)", container.run_result


async def test_environment_layers(cell: Cell) -> None:
    executor = cell.executor
    await reserve(executor, "env")
    request = lrp_request(
        'echo "$IMAGE_VAR|$LAYERED|$REQ|$CF_INSTANCE_IP|$CF_INSTANCE_PORT|$CF_INSTANCE_ADDR|$CF_INSTANCE_PORTS|'
        '$CF_INSTANCE_INTERNAL_IP|$(pwd)"; sleep 30',
        ports=[8080, 9090], env=[{"name": "LAYERED", "value": "request"}, {"name": "REQ", "value": "r"}])
    await executor.run_container("env", request)
    container = await wait_state(executor, "env", ContainerState.RUNNING)
    http, other = container.ports
    expected = (f"from-image|request|r|127.0.0.1|{http.host_port}|127.0.0.1:{http.host_port}|"
                f'[{{"external":{http.host_port},"internal":8080}},{{"external":{other.host_port},"internal":9090}}]|'
                f"{container.internal_ip}|/")
    async with asyncio.timeout(5):
        async for line in executor.logs("env", follow=True):
            if line.source == "APP":
                assert line.line == expected
                break


async def test_readiness_toggles_routable_without_crashing(cell: Cell) -> None:
    executor = cell.executor
    events = executor.subscribe()
    await reserve(executor, "ready")
    await executor.run_container("ready", lrp_request(
        "mkdir -p /www && exec httpd -f -p 8080 -h /www", ports=[8080],
        check_definition={"readiness_checks": [{"http_check": {"port": 8080, "path": "/ready", "interval_ms": 100}}]}))
    container = await wait_state(executor, "ready", ContainerState.RUNNING)
    assert not container.routable

    async def sh(script: str) -> None:
        process = await cell.backend.run("ready", ProcessSpec(path="/bin/sh", args=("-c", script)))
        assert (await process.wait()).code == 0

    await sh("mkdir -p /www && echo ok > /www/ready")
    await _routable(events, True)
    await sh("rm /www/ready")
    await _routable(events, False)
    assert executor.get("ready").state == ContainerState.RUNNING


async def _routable(events, value: bool) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(5):
        async for event in events:
            if event.kind == EventKind.ROUTABLE_CHANGED:
                assert event.container.routable is value
                return


async def test_legacy_monitor_action(cell: Cell) -> None:
    executor = cell.executor
    await reserve(executor, "mon")
    await executor.run_container("mon", lrp_request(
        "sleep 0.3; touch /tmp/healthy; exec sleep 1000", start_timeout_ms=5000,
        monitor={"run": {"path": "/bin/sh", "args": ["-c", "test -f /tmp/healthy || { echo not healthy; exit 1; }"],
                         "user": "root"}}))
    await wait_state(executor, "mon", ContainerState.RUNNING)
    process = await cell.backend.run("mon", ProcessSpec(path="/bin/rm", args=("/tmp/healthy",)))
    assert (await process.wait()).code == 0
    result = (await wait_state(executor, "mon", ContainerState.COMPLETED)).run_result
    assert result is not None and result.failure_reason == "Instance became unhealthy: not healthy"
