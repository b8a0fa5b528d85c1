"""auction_bench.py's `converge` part: one convergence pass (the real Converger: snapshot read
from etcd, pure planner, actions applied through the store) over N ActualLRPs in a real etcd.

Layout: N/1,000 LRPs of 1,000 RUNNING instances spread over 100 cells (etcd coordination
backend for the presences). Figures: a steady pass (nothing to do: Diego's normal case and the
one its 10 s alert watches), then a pass after one cell vanished (1% of the instances become
SUSPECT with a replacement each: the pass writes ~2 rows per lost instance).
"""
from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from control.kit.etcd import Etcd, Txn
from control.models.actual_lrp import Presence
from tests.component.converger.conftest import build_world
from tests.servers import EtcdServer

CELLS = 100
PER_LRP = 1_000


async def _one(size: int, endpoint: str, server: EtcdServer) -> dict[str, Any]:
    etcd = Etcd([endpoint])
    await etcd.connect()
    prefix = f"/bench-{size}"
    world = build_world(etcd, server, prefix)
    try:
        for c in range(CELLS):
            await world.add_cell(f"cell-{c}")
        await world.domain()
        started = time.perf_counter()
        for g in range(size // PER_LRP):
            guid = f"app-{g}"
            await world.desire(guid, PER_LRP)
            txn = Txn()
            for i in range(PER_LRP):
                lrp = world.running(guid, i, f"cell-{(g + i) % CELLS}")
                txn.put(etcd.tx, world.keys.actual_lrp(guid, i, Presence.ORDINARY), lrp.to_json())
            await etcd.commit(txn)
        print(f"    {size:>7} rows written in {time.perf_counter() - started:.1f} s", flush=True)
        steady = []
        for _ in range(3):
            report = await world.converge()
            steady.append(report)
        await world.remove_cell("cell-0")
        busy = await world.converge()
        after = await world.converge()
        med = statistics.median(r.duration_ms for r in steady) / 1000
        row = {"actual_lrps": size, "median_s": round(med, 3),
               "steady_load_ms": round(statistics.median(r.load_ms for r in steady)),
               "steady_plan_ms": round(statistics.median(r.plan_ms for r in steady)),
               "cell_lost_s": round(busy.duration_ms / 1000, 2),
               "cell_lost_actions": sum(busy.outcome.applied.values()),
               "next_steady_s": round(after.duration_ms / 1000, 3)}
        print(f"  converge  {size:>7} ActualLRPs  steady pass median {row['median_s']:.2f} s "
              f"(read+parse {row['steady_load_ms']} ms, plan {row['steady_plan_ms']} ms); "
              f"after a cell loss: {row['cell_lost_s']} s for {row['cell_lost_actions']} actions; "
              f"next pass {row['next_steady_s']} s", flush=True)
        return row
    finally:
        for reg in list(world.registrations.values()):
            await world.coordinator.withdraw(reg)
        await etcd.delete_prefix(prefix.encode()) if hasattr(etcd, "delete_prefix") else None
        await etcd.close()


def bench_converge(sizes: list[int]) -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory(prefix="pydiego-converge-bench-") as tmp:
        server = EtcdServer(Path(tmp) / "etcd").start()
        try:
            for size in sizes:
                out.append(asyncio.run(_one(size, server.endpoint, server)))
        finally:
            server.stop()
    return out
