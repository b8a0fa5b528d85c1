"""Nothing is left behind: after destroy, after a create that fails midway, after cleanup_all;
and a restarted backend picks up its containers from the depot."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from agents.garden import (CommandFailed, ContainerExists, ContainerNotFound, ContainerSpec, InsufficientResources,
                           InvalidSpec, ProcessSpec, RuncBackend, cleanup_all)
from agents.garden.models import EgressRule

from .helpers import assert_no_traces, backend_traces, sh, traces
from .test_network import HTTPD, get

MakeBackend = Callable[..., "asyncio.Future[RuncBackend]"]
EGRESS = EgressRule(protocol="tcp", destinations=("192.0.2.0/24",), ports=(443,))


async def test_destroy_leaves_nothing(backend: RuncBackend, stack: Path) -> None:
    spec = ContainerSpec(handle="gone", rootfs=str(stack), ports=(8080, 9090), disk_mb=8, memory_mb=64, max_pids=20)
    info = await backend.create(spec)
    found = traces(backend, "gone")
    assert all(found[k] for k in ("netns", "links", "mounts", "loops", "iptables", "cgroups", "runc", "bundle")), found
    status, _ = await sh(backend, "gone", "echo data > /tmp/x")
    assert status.code == 0
    with pytest.raises(ContainerExists):
        await backend.create(spec)

    await backend.destroy("gone")
    assert_no_traces(backend, "gone")
    assert await backend.list() == []
    with pytest.raises(ContainerNotFound):
        await backend.destroy("gone")

    # Its address and ports went back to the pools; the same handle can be created again.
    again = await backend.create(spec.model_copy(update={"ports": ()}))
    assert again.container_ip == info.container_ip
    await backend.destroy("gone")
    assert_no_traces(backend, "gone")


async def test_failed_creates_leave_nothing(make_backend: MakeBackend, stack: Path) -> None:
    one_port = await make_backend(port_count=1)
    await one_port.create(ContainerSpec(handle="first", rootfs=str(stack), ports=(8080,)))

    # Port range exhausted: fails after rootfs, loop image, runc container and veth were made.
    with pytest.raises(InsufficientResources):
        await one_port.create(ContainerSpec(handle="second", rootfs=str(stack), ports=(8080,), disk_mb=8))
    assert_no_traces(one_port, "second")
    # Invalid rootfs: refused before anything is made.
    with pytest.raises(InvalidSpec):
        await one_port.create(ContainerSpec(handle="badroot", rootfs=str(stack / "missing")))
    assert_no_traces(one_port, "badroot")
    # The survivor is untouched and its address was not handed out twice.
    ok = await one_port.create(ContainerSpec(handle="third", rootfs=str(stack), disk_mb=8))
    assert ok.container_ip != (await one_port.info("first")).container_ip
    status, _ = await sh(one_port, "first", "true")
    assert status.code == 0

    # runc itself fails (the init binary to bind-mount does not exist) after mounts and cgroups.
    broken = await make_backend(init_binary="/nonexistent/busybox")
    with pytest.raises(CommandFailed, match="runc run"):
        await broken.create(ContainerSpec(handle="norunc", rootfs=str(stack), disk_mb=8, memory_mb=32))
    assert_no_traces(broken, "norunc")


async def test_cancelled_create_leaves_nothing(backend: RuncBackend, stack: Path) -> None:
    for step in range(12):  # cancellation points spread over a whole create (~70 ms)
        delay, handle = step * 0.008, f"cancel-{step}"
        task = asyncio.create_task(backend.create(
            ContainerSpec(handle=handle, rootfs=str(stack), ports=(8080,), disk_mb=8, egress_rules=(EGRESS,))))
        await asyncio.sleep(delay)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            assert_no_traces(backend, handle)
        else:  # finished before the cancel landed: a normal container
            await backend.destroy(handle)
            assert_no_traces(backend, handle)


async def test_concurrent_creates_and_destroys(backend: RuncBackend, stack: Path) -> None:
    handles = [f"par-{i}" for i in range(6)]
    infos = await asyncio.gather(*(backend.create(ContainerSpec(
        handle=h, rootfs=str(stack), ports=(8080, 9000), disk_mb=8 if i % 2 else 0)) for i, h in enumerate(handles)))
    assert len({i.container_ip for i in infos}) == 6
    assert len({m.host_port for i in infos for m in i.ports}) == 12
    statuses = await asyncio.gather(*(sh(backend, h, f"exit {i}") for i, h in enumerate(handles)))
    assert [s.code for s, _ in statuses] == list(range(6))
    await asyncio.gather(*(backend.destroy(h) for h in handles))
    for h in handles:
        assert_no_traces(backend, h)
    assert await backend.list() == []


async def test_cleanup_all_removes_everything(make_backend: MakeBackend, stack: Path) -> None:
    backend = await make_backend()
    for handle in ("x1", "x2"):
        await backend.create(ContainerSpec(handle=handle, rootfs=str(stack), ports=(8080,), disk_mb=8,
                                           egress_rules=(EGRESS,)))
        await sh(backend, handle, "sleep 60 &")
    tag, depot = backend.config.tag, backend.depot.root
    found = backend_traces(tag, depot)
    assert all(found.values()), found
    await backend.aclose()
    await cleanup_all(depot)
    left = {kind: items for kind, items in backend_traces(tag, depot).items() if items}
    assert not left, left


async def test_restarted_backend_recovers_its_containers(make_backend: MakeBackend, stack: Path) -> None:
    first = await make_backend()
    info = await first.create(ContainerSpec(handle="survivor", rootfs=str(stack), ports=(8080,),
                                            env=("HOSTNAME=survivor",)))
    await sh(first, "survivor", "true")
    await first.run("survivor", ProcessSpec(path="sh", args=("-c", HTTPD)))
    url = f"http://127.0.0.1:{info.ports[0].host_port}/index.html"
    assert await get(url) == "hello from survivor\n"
    await first.aclose()

    second = RuncBackend(first.config)
    try:
        await second.setup()  # rebuilds chains from the records: the mapping must survive
        assert await second.list() == ["survivor"]
        assert (await second.info("survivor")).ports == info.ports
        assert await get(url) == "hello from survivor\n"
        status, _ = await sh(second, "survivor", "true")
        assert status.code == 0
        fresh = await second.create(ContainerSpec(handle="newcomer", rootfs=str(stack), ports=(8080,)))
        assert fresh.container_ip != info.container_ip and fresh.ports[0].host_port != info.ports[0].host_port
        await second.destroy("survivor")
        await second.destroy("newcomer")
        assert_no_traces(second, "survivor")
    finally:
        await second.aclose()
