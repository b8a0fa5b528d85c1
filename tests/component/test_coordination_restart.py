"""A Consul or etcd server restart never makes two lock holders active at once, and never
drops the presence of an owner that is still alive (the cause of Diego's mass evictions,
diego-release #177 and #244)."""
from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from pathlib import Path

import pytest

from control.coordination.base import CoordinationConfig, Held
from control.coordination.factory import build
from control.kit.etcd import Etcd
from tests.servers import ConsulServer, EtcdServer


@pytest.mark.parametrize("backend", ["consul", "etcd"])
async def test_server_restart_keeps_one_holder_and_live_presences(tmp_path: Path, backend: str) -> None:
    etcd_server = EtcdServer(tmp_path / "etcd").start()
    consul_server = ConsulServer(tmp_path / "consul").start() if backend == "consul" else None
    restarted = etcd_server if backend == "etcd" else consul_server
    assert restarted is not None
    cfg = CoordinationConfig(backend=backend, consul_address=consul_server.address if consul_server else "",
                             etcd_endpoints=[etcd_server.endpoint], lock_ttl=timedelta(seconds=3),
                             presence_ttl=timedelta(seconds=4), lock_retry_interval=timedelta(milliseconds=100))
    believers: dict[str, bool] = {"a": False, "b": False}
    overlaps: list[float] = []
    seen_sets: list[set[str]] = []
    stop = asyncio.Event()
    registered = asyncio.Event()

    async def contender(name: str) -> None:
        etcd = Etcd(cfg.etcd_endpoints)
        coord = build(cfg, etcd)
        await coord.open()
        held: Held | None = None
        try:
            while not stop.is_set():
                if held is None:
                    try:
                        held = await asyncio.wait_for(coord.acquire("restart", name.encode()), timeout=0.5)
                    except TimeoutError:
                        continue
                    believers[name] = True
                await asyncio.sleep(coord.renew_interval)
                if not await coord.renew(held):
                    believers[name] = False  # stepped down: it must stop acting as the holder
                    held = None
        finally:
            believers[name] = False
            if held is not None:
                await coord.release(held)
            await coord.close()
            await etcd.close()

    async def owner() -> None:
        etcd = Etcd(cfg.etcd_endpoints)
        coord = build(cfg, etcd)
        await coord.open()
        reg = await coord.register("cell-alive", b'{"cell_id": "cell-alive"}')
        registered.set()
        try:
            while not stop.is_set():
                await asyncio.sleep(coord.renew_interval)
                with contextlib.suppress(Exception):  # the server is away: keep trying
                    await coord.renew_presence(reg)
        finally:
            with contextlib.suppress(Exception):
                await coord.withdraw(reg)
            await coord.close()
            await etcd.close()

    async def sampler() -> None:
        while not stop.is_set():
            if all(believers.values()):
                overlaps.append(time.monotonic())
            await asyncio.sleep(0.001)

    async def watcher() -> None:
        await registered.wait()
        etcd = Etcd(cfg.etcd_endpoints)
        coord = build(cfg, etcd)
        await coord.open()
        try:
            async for snapshot in coord.watch_presences():
                seen_sets.append(set(snapshot))
        finally:
            await coord.close()
            await etcd.close()

    tasks = [asyncio.create_task(c) for c in (contender("a"), contender("b"), owner(), sampler(), watcher())]
    try:
        await asyncio.sleep(2.0)
        assert any(believers.values())
        assert seen_sets and seen_sets[-1] == {"cell-alive"}
        restarted.stop()
        await asyncio.sleep(0.5)
        restarted.start()  # same ports, same data
        await asyncio.sleep(6.0)  # longer than every TTL
        assert [believers["a"], believers["b"]].count(True) == 1  # someone holds it again
    finally:
        stop.set()
        for task in tasks[3:]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if consul_server:
            consul_server.stop()
        etcd_server.stop()
    assert not overlaps, f"two holders believed they held the lock at {len(overlaps)} samples"
    # the watcher may lose its connection during the restart, but never reports the live
    # owner's presence as gone
    assert all(s == {"cell-alive"} for s in seen_sets), seen_sets
