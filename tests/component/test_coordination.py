"""The coordination contract, run against a real Consul and a real etcd: mutual exclusion under
contention, loss detection when the holder is frozen (SIGSTOP), fencing of a stale holder,
presence expiry and watch events."""
from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from control.coordination import fence
from control.coordination.base import CoordinationConfig, Coordinator
from control.coordination.factory import build
from control.kit.etcd import Etcd, FencedOut
from tests.servers import ConsulServer, EtcdServer

ROOT = Path(__file__).resolve().parents[2]
TTL = 2.0


@pytest.fixture(params=["consul", "etcd"])
def config(request: pytest.FixtureRequest, etcd_server: EtcdServer, key_prefix: str) -> CoordinationConfig:
    consul_address = ""
    if request.param == "consul":
        consul_address = request.getfixturevalue("consul_server").address
    return CoordinationConfig(backend=request.param, consul_address=consul_address or "127.0.0.1:1",
                              etcd_endpoints=[etcd_server.endpoint], key_prefix=key_prefix,
                              lock_ttl=timedelta(seconds=TTL), presence_ttl=timedelta(seconds=TTL),
                              lock_retry_interval=timedelta(milliseconds=100))


@contextlib.asynccontextmanager
async def coordinator(cfg: CoordinationConfig) -> AsyncIterator[tuple[Coordinator, Etcd]]:
    etcd = Etcd(cfg.etcd_endpoints)
    coord = build(cfg, etcd)
    await coord.open()
    try:
        yield coord, etcd
    finally:
        await coord.close()
        await etcd.close()


async def test_mutual_exclusion_under_contention(config: CoordinationConfig) -> None:
    holders: set[int] = set()
    violations: list[set[int]] = []
    acquisitions: list[int] = []
    tokens: list[int] = []

    async def contender(n: int, rounds: int) -> None:
        async with coordinator(config) as (coord, _):
            for _ in range(rounds):
                held = await coord.acquire("contended", f"c{n}".encode())
                holders.add(n)
                acquisitions.append(n)
                tokens.append(held.token)
                assert await coord.renew(held)
                await asyncio.sleep(0.02)
                holders.discard(n)
                await coord.release(held)

    async def sampler(stop: asyncio.Event) -> None:
        while not stop.is_set():
            if len(holders) > 1:
                violations.append(set(holders))
            await asyncio.sleep(0.001)

    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler(stop))
    await asyncio.wait_for(asyncio.gather(*(contender(n, 5) for n in range(4))), timeout=60)
    stop.set()
    await sampling
    assert not violations
    assert sorted(set(acquisitions)) == [0, 1, 2, 3] and len(acquisitions) == 20
    assert tokens == sorted(tokens) and len(set(tokens)) == 20  # fencing tokens strictly increase


async def test_frozen_holder_loses_the_lock_and_is_fenced(config: CoordinationConfig) -> None:
    holder = subprocess.Popen([sys.executable, "-m", "tests.lockholder", config.model_dump_json(), "frozen"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        assert line.startswith("ACQUIRED"), line
        old_token = int(line.split()[1])
        async with coordinator(config) as (coord, etcd):
            info = await coord.holder("frozen")
            assert info is not None and info.doc["owner"] == "frozen"
            holder.send_signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            held = await asyncio.wait_for(coord.acquire("frozen", b'{"owner": "standby"}'), timeout=TTL * 4)
            took = time.monotonic() - frozen_at
            assert took <= TTL + 1.5, f"standby acquired after {took:.2f}s"
            assert held.token > old_token

            # the stale holder's writes are refused by the fence
            stale = Etcd(config.etcd_endpoints)
            stale.fence = (fence.fence_key(config.key_prefix, "frozen"), fence.encode(old_token))
            try:
                with pytest.raises(FencedOut):
                    await stale.put(f"{config.key_prefix}/data/x".encode(), b"stale write")
            finally:
                await stale.close()
            assert await etcd.get(f"{config.key_prefix}/data/x".encode()) is None

            holder.send_signal(signal.SIGCONT)  # it wakes up, notices the loss and exits
            assert holder.wait(timeout=TTL * 3) == 3
            assert holder.stdout.readline().strip() == "LOST"
            assert await coord.renew(held)
            await coord.release(held)
    finally:
        if holder.poll() is None:
            holder.send_signal(signal.SIGCONT)
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


async def test_graceful_release_hands_over_at_once(config: CoordinationConfig) -> None:
    async with coordinator(config) as (a, _), coordinator(config) as (b, _):
        held = await a.acquire("handover", b"a")
        waiting = asyncio.create_task(b.acquire("handover", b"b"))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        released = time.monotonic()
        await a.release(held)
        held_b = await asyncio.wait_for(waiting, timeout=5)
        assert time.monotonic() - released < 1.0
        assert held_b.token > held.token
        info = await a.holder("handover")
        assert info is not None and info.value == b"b" and info.token == held_b.token
        assert [lock.name for lock in await a.locks()] == ["handover"]
        await b.release(held_b)
        assert await a.holder("handover") is None


async def test_presence_expiry_and_watch_events(config: CoordinationConfig) -> None:
    async with coordinator(config) as (owner, _), coordinator(config) as (watcher, _):
        seen: list[tuple[float, set[str]]] = []

        async def watch() -> None:
            async for snapshot in watcher.watch_presences():
                seen.append((time.monotonic(), set(snapshot)))

        watching = asyncio.create_task(watch())
        try:
            await asyncio.sleep(0.3)
            cell_a = await owner.register("cell-a", b'{"cell_id": "cell-a"}')
            cell_b = await owner.register("cell-b", b'{"cell_id": "cell-b"}')
            for _ in range(3):  # renewal keeps them past their TTL
                await asyncio.sleep(TTL / 3)
                await owner.renew_presence(cell_a)
                await owner.renew_presence(cell_b)
            assert set(await watcher.presences()) == {"cell-a", "cell-b"}
            assert any(s == {"cell-a", "cell-b"} for _, s in seen)

            withdrawn = time.monotonic()
            await owner.withdraw(cell_b)  # clean shutdown: gone at once
            await _until(lambda: bool(seen) and seen[-1][1] == {"cell-a"}, 2)
            assert seen[-1][0] - withdrawn < 1.0

            died = time.monotonic()  # cell-a's owner stops renewing: it "died"
            await _until(lambda: seen[-1][1] == set(), TTL + 2)
            gone_after = seen[-1][0] - died
            assert gone_after <= TTL + 1.0, f"presence vanished {gone_after:.2f}s after its owner died"
            assert await watcher.presences() == {}
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching


async def _until(check, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
