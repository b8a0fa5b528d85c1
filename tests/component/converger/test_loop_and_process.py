"""The loop woken by the real presence watch, the whole converger process (lock, /ping, /metrics,
passes), and a timing print of one pass over many rows (printed, never asserted)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx

from control.converger.config import ConvergerConfig
from control.converger.loop import ConvergenceLoop
from control.converger.server import ConvergerProcess
from control.coordination.base import CoordinationConfig
from control.kit.etcd import Etcd, Txn
from control.kit.supervisor import run_members
from control.models.actual_lrp import Presence
from tests.fakes import RecordingAuctioneer, RecordingReps
from tests.servers import EtcdServer, free_port

from .conftest import World

P = Presence


@contextlib.asynccontextmanager
async def running(runner: ConvergenceLoop) -> AsyncIterator[None]:
    ready = asyncio.Event()
    task = asyncio.create_task(runner.run(ready))
    await ready.wait()
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_for(check, timeout: float = 5.0) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "timed out"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def test_a_withdrawn_presence_starts_a_pass_at_once(world: World) -> None:
    await world.desire("web", 2)
    await world.put(world.running("web", 0, "cell-1"), world.running("web", 1, "cell-2"))
    await world.add_cell("cell-1")
    await world.add_cell("cell-2")
    loop = ConvergenceLoop(world.converger, world.coordinator, interval_s=30, debounce_s=0.1)
    async with running(loop):
        await asyncio.sleep(0.3)  # the watch reports the current set first
        assert loop.passes_started == 0

        withdrawn = time.monotonic()
        await world.remove_cell("cell-2")
        await wait_for(lambda: loop.passes_started == 1)
        started_after = time.monotonic() - withdrawn
        await wait_for(lambda: world.converger.passes == 1)

    assert started_after < 1.0, f"the pass started {started_after:.2f} s after the withdrawal"
    assert loop.last_reason == "cells-changed"
    rows = await world.rows("web")
    assert rows[1][P.SUSPECT].cell_id == "cell-2" and world.auctioneer.lrp_indices("web") == [1]
    print(f"\npass started {started_after * 1000:.0f} ms after the presence was withdrawn")


async def test_the_converger_process_holds_its_lock_serves_metrics_and_converges(
        etcd: Etcd, etcd_server: EtcdServer, key_prefix: str, world: World) -> None:
    port = free_port()
    cfg = ConvergerConfig(etcd_endpoints=[etcd_server.endpoint], key_prefix=key_prefix,
                          coordination=CoordinationConfig(backend="etcd"), listen_address=f"127.0.0.1:{port}",
                          interval=timedelta(milliseconds=200), instance_name="converger-test")
    auctioneer = RecordingAuctioneer()
    process = ConvergerProcess(cfg, auctioneer=auctioneer, reps=RecordingReps())
    await world.add_cell("cell-1")
    await world.desire("web", 2)
    task = asyncio.create_task(run_members(process.members()))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await wait_for(lambda: process.converger.passes >= 1, timeout=10)
            assert (await client.get("/ping")).json() == {"ok": True}
            metrics = (await client.get("/metrics")).text
            assert "converger_pass_seconds_count" in metrics
            assert 'converger_actions_total{kind="create-missing",result="applied"}' in metrics
            assert 'converger_census{what="cells_present"} 1.0' in metrics
            assert (await client.post("/ping")).status_code == 405
        holder = await world.coordinator.holder("converger")
        assert holder is not None and holder.doc["owner"] == "converger-test"
        assert sorted(await world.rows("web")) == [0, 1]
        assert auctioneer.lrp_indices("web") == [0, 1]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert await world.coordinator.holder("converger") is None  # released on a clean stop


async def test_timing_of_one_pass_over_many_rows(world: World) -> None:
    """Prints the pass time; PYDIEGO_CONVERGER_ROWS sets the size (default 10k)."""
    total = int(os.environ.get("PYDIEGO_CONVERGER_ROWS", "10000"))
    per_lrp, cells = 1000, 10
    for c in range(cells):
        await world.add_cell(f"cell-{c}")
    await world.domain()
    for g in range(total // per_lrp):
        guid = f"app-{g}"
        await world.desire(guid, per_lrp)
        txn = Txn()
        for i in range(per_lrp):
            lrp = world.running(guid, i, f"cell-{i % cells}")
            txn.put(world.etcd.tx, world.keys.actual_lrp(guid, i, P.ORDINARY), lrp.to_json())
        await world.etcd.commit(txn)
    # a little work to do as well: one cell is gone (1% of the rows)
    await world.remove_cell("cell-0")
    report = await world.converge()
    report2 = await world.converge()
    print(f"\nconvergence pass over {report.census['actual_lrps']} ActualLRPs: {report.duration_ms:.0f} ms "
          f"(load {report.load_ms:.0f}, plan {report.plan_ms:.0f}, apply {report.apply_ms:.0f}; "
          f"{sum(report.outcome.applied.values())} actions applied); "
          f"steady pass after it over {report2.census['actual_lrps']} rows: {report2.duration_ms:.0f} ms "
          f"(load {report2.load_ms:.0f}, plan {report2.plan_ms:.0f}, apply {report2.apply_ms:.0f})")
    assert report.outcome.applied["mark-suspect"] == total // cells
