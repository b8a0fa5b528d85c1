"""A real BBS (in this process, plain HTTP on a free loopback port) over the session's real
etcd, with recording fakes for the auctioneer and the reps; and a check that no test leaks
asyncio tasks."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from control.bbs.config import BBSConfig
from control.bbs.server import BBS
from control.coordination.base import CoordinationConfig
from control.client.bbs_client import BBSClient
from control.kit.clock import FakeClock
from control.kit.etcd import Etcd
from control.kit.supervisor import run_members
from control.models.cell import CellCapacity, CellPresence
from tests.fakes import RecordingAuctioneer, RecordingReps
from tests.servers import EtcdServer, free_port


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0.05)
    leaked = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    assert not leaked, f"test leaked asyncio tasks: {leaked}"


@dataclass
class RunningBBS:
    bbs: BBS
    url: str
    client: BBSClient
    auctioneer: RecordingAuctioneer
    reps: RecordingReps
    clock: FakeClock | None

    async def add_cell(self, cell_id: str, etcd: Etcd) -> CellPresence:
        cell = CellPresence(cell_id=cell_id, rep_url=f"http://127.0.0.1:1/{cell_id}",
                            capacity=CellCapacity(memory_mb=1024, disk_mb=1024, containers=10))
        await etcd.put(self.bbs.keys.cell(cell_id), cell.to_json())
        return cell


@contextlib.asynccontextmanager
async def running_bbs(etcd_server: EtcdServer, key_prefix: str, clock: FakeClock | None = None,
                      **cfg: object) -> AsyncIterator[RunningBBS]:
    port = free_port()
    cfg.setdefault("coordination", CoordinationConfig(backend="etcd"))
    config = BBSConfig(listen_address=f"127.0.0.1:{port}", etcd_endpoints=[etcd_server.endpoint],
                       key_prefix=key_prefix, plain_http=True, **cfg)  # type: ignore[arg-type]
    auctioneer, reps = RecordingAuctioneer(), RecordingReps()
    bbs = BBS(config, clock=clock, auctioneer=auctioneer, reps=reps)
    ready = asyncio.Event()

    async def run() -> None:
        members = bbs.members()
        last_ready = ready

        class Marker:
            async def run(self, r: asyncio.Event) -> None:
                r.set()
                last_ready.set()
                await asyncio.Event().wait()
        await run_members(members + [("test-ready", Marker())])

    task = asyncio.create_task(run())
    done, _ = await asyncio.wait([task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        await task
    client = BBSClient(f"http://127.0.0.1:{port}", retries=0)
    try:
        yield RunningBBS(bbs, f"http://127.0.0.1:{port}", client, auctioneer, reps, clock)
    finally:
        await client.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)


@pytest.fixture
async def bbs(etcd_server: EtcdServer, key_prefix: str) -> AsyncIterator[RunningBBS]:
    async with running_bbs(etcd_server, key_prefix) as running:
        yield running


@pytest.fixture
async def clocked_bbs(etcd_server: EtcdServer, key_prefix: str) -> AsyncIterator[RunningBBS]:
    async with running_bbs(etcd_server, key_prefix, clock=FakeClock()) as running:
        yield running
