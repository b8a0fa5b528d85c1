#!/usr/bin/env python3
"""Auction and convergence benchmark (issue #5). A script, never a test: it prints figures.

    .venv/bin/python bench/auction_bench.py            # everything, a few minutes
    .venv/bin/python bench/auction_bench.py --quick    # smaller sizes
    .venv/bin/python bench/auction_bench.py --only placement,round

Parts:
  placement   decision only: the pure scheduler (control/auctioneer/placement.py) placing 10k and
              100k instances on 100 and 1,000 cells; placements per second (target >= 1,000/s at
              1,000 cells; Nomad's C1M placed 3,750/s with 5 servers).
  round       one auctioneer round through HTTP: the real AuctionRunner fetching GET /state from
              simulated cells and posting POST /work to them. SIMULATION: the cells are one
              loopback HTTP server answering for N virtual cells from in-memory counters; they
              take work and report it placed without any container. For scale tests only.
  converge    one convergence pass (the converger's planner + store reads) at 10k, 100k and
              250k ActualLRPs in a real etcd (target <= 5 s at 250k; Diego alerts at 10 s).
  cluster     the real local cluster (3 cells, runc): desire -> all instances RUNNING, and rep
              SIGKILL -> every replacement RUNNING (target <= 10 s with the local cluster's settings).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bbs_bench import hardware  # noqa: E402
from control.auctioneer.placement import CellSnapshot, Unit, schedule  # noqa: E402

STACKS = {"preloaded": {"busybox"}, "docker": None}


def _cells(n: int, zones: int = 3) -> list[CellSnapshot]:
    # a big cell: 1 TB memory, 4 TB disk, 2,500 containers (so 100k instances fit on 100 cells too)
    return [CellSnapshot(f"cell-{i}", f"z{i % zones}", 1_024_000, 4_096_000, 2_500, 1_024_000, 4_096_000, 2_500,
                         providers=dict(STACKS)) for i in range(n)]


def _units(n: int, per_app: int = 10) -> list[Unit]:
    rng = random.Random(7)
    return [Unit(f"app-{i // per_app}", i % per_app, rng.choice((128, 256, 512, 1024)), 1024, "preloaded:busybox")
            for i in range(n)]


def bench_placement(sizes: list[tuple[int, int]]) -> list[dict[str, Any]]:
    out = []
    for cells, instances in sizes:
        snaps, units = _cells(cells), _units(instances)
        started = time.perf_counter()
        outcome = schedule(snaps, units)
        seconds = time.perf_counter() - started
        per_cell = [sum(c.lrps.values()) for c in snaps]
        row = {"cells": cells, "instances": instances, "seconds": round(seconds, 3),
               "placements_per_s": round(len(outcome.placed) / seconds), "failed": len(outcome.failed),
               "per_cell_min_max": [min(per_cell), max(per_cell)]}
        print(f"  placement  {cells:>5} cells  {instances:>7} instances  {seconds:7.2f} s  "
              f"{row['placements_per_s']:>7}/s  failed {row['failed']}  per cell {min(per_cell)}..{max(per_cell)}",
              flush=True)
        out.append(row)
    return out


# ---- one auctioneer round against simulated cells over HTTP ----------------------------------
class SimulatedCells:
    """SIMULATION for scale tests only: one HTTP server answering /cells/<id>/state and
    /cells/<id>/work for many virtual cells, from counters; no container is ever made."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.free = {f"sim-{i}": [256_000, 1_024_000, 2_500] for i in range(count)}
        self.lrps: dict[str, list[dict[str, Any]]] = {cid: [] for cid in self.free}
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.handlers: set[asyncio.Task[None]] = set()

    def state(self, cid: str) -> bytes:
        mem, disk, cont = self.free[cid]
        res = {"memory_mb": mem, "disk_mb": disk, "containers": cont}
        return json.dumps({
            "cell_id": cid, "rep_url": "", "zone": f"z{int(cid.split('-')[1]) % 3}",
            "rootfs_providers": [{"name": "preloaded", "properties": ["busybox"]}, {"name": "docker", "properties": []}],
            "total_resources": {"memory_mb": 256_000, "disk_mb": 1_024_000, "containers": 2_500},
            "available_resources": res, "starting_container_count": 0, "running_container_count": len(self.lrps[cid]),
            "lrps": [{"process_guid": w["process_guid"], "instance_guid": "x", "index": w["index"], "domain": "d",
                      "state": "RUNNING"} for w in self.lrps[cid]],
            "tasks": [], "evacuating": False}).encode()

    def work(self, cid: str, body: bytes) -> bytes:
        work = json.loads(body)
        for item in work.get("lrps", []):
            free = self.free[cid]
            free[0] -= item["resource"]["memory_mb"]
            free[1] -= item["resource"]["disk_mb"]
            free[2] -= 1
            self.lrps[cid].append(item)
        return json.dumps({"cell_id": cid, "lrps": [], "tasks": []}).encode()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                length = next((int(h.split(":")[1]) for h in head.split("\r\n") if h.lower().startswith("content-length")), 0)
                body = await reader.readexactly(length) if length else b""
                method, path = head.split(" ", 2)[:2]
                cid = path.split("/")[2]
                payload = self.state(cid) if method == "GET" else self.work(cid, body)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(payload), payload))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self.handlers.discard(task)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.handlers):
            task.cancel()
        if self.handlers:
            await asyncio.wait(list(self.handlers))

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, backlog=4096)
        self.port = self.server.sockets[0].getsockname()[1]

    def presences(self) -> list[Any]:
        from control.models.cell import CellCapacity, CellPresence
        return [CellPresence(cell_id=cid, rep_url=f"http://127.0.0.1:{self.port}/cells/{cid}",
                             capacity=CellCapacity(memory_mb=256_000, disk_mb=1_024_000, containers=2_500))
                for cid in self.free]


class NullReporter:
    def __init__(self) -> None:
        self.failures = 0

    async def actual_lrp_call(self, *args: Any, **kwargs: Any) -> None:
        self.failures += 1

    async def task_call(self, *args: Any, **kwargs: Any) -> None:
        self.failures += 1


async def _round(cells: int, instances: int) -> dict[str, Any]:
    from control.auctioneer.batch import Batch
    from control.auctioneer.cells import HTTPCellClient
    from control.auctioneer.runner import AuctionRunner, Settings
    from control.models.auction import LRPStartRequest, Resource
    sim = SimulatedCells(cells)
    await sim.start()
    client = HTTPCellClient(None, 30, 30)
    batch, reporter = Batch(10**7), NullReporter()

    async def list_cells() -> list[Any]:
        return sim.presences()
    runner = AuctionRunner(batch, list_cells, client, reporter, Settings(state_timeout=30))
    try:
        apps = instances // 10
        batch.add_lrps([LRPStartRequest(process_guid=f"app-{a}", domain="d", indices=list(range(10)),
                                        resource=Resource(memory_mb=256, disk_mb=1024), rootfs="preloaded:busybox")
                        for a in range(apps)])
        result = await runner.auction_round()
        assert result is not None
        placed = sum(len(v) for v in sim.lrps.values())
        return {"cells": cells, "instances": instances, "seconds": round(result.seconds, 3), "placed": placed,
                "per_s": round(placed / result.seconds), "failed": len(result.failed)}
    finally:
        await client.aclose()
        await sim.stop()


def bench_round(sizes: list[tuple[int, int]]) -> list[dict[str, Any]]:
    out = []
    for cells, instances in sizes:
        row = asyncio.run(_round(cells, instances))
        print(f"  round      {cells:>5} simulated cells  {instances:>7} instances  {row['seconds']:7.2f} s  "
              f"{row['per_s']:>7}/s  placed {row['placed']}  failed {row['failed']}", flush=True)
        out.append(row)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="placement,round,converge,cluster")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    hw = hardware()
    print(f"hardware: {hw['cpu_model']}, {hw['usable_cpus']} usable CPUs, {hw['ram_gb']} GB, kernel {hw['kernel']}, "
          f"Python {hw['python']}", flush=True)
    results: dict[str, Any] = {"hardware": hw}
    if "placement" in parts:
        sizes = [(100, 10_000), (1_000, 10_000)] if args.quick else [
            (100, 10_000), (100, 100_000), (1_000, 10_000), (1_000, 100_000)]
        results["placement"] = bench_placement(sizes)
    if "round" in parts:
        sizes = [(100, 2_000)] if args.quick else [(100, 10_000), (1_000, 10_000)]
        results["round"] = bench_round(sizes)
    if "converge" in parts:
        from bench.converge_part import bench_converge  # the converger's pass at scale
        results["converge"] = bench_converge([10_000] if args.quick else [10_000, 100_000, 250_000])
    if "cluster" in parts:
        from bench.cluster_part import bench_cluster  # the real local cluster
        results["cluster"] = bench_cluster(quick=args.quick)
    print_summary(results)
    if args.json:
        print(json.dumps(results))
    return 0


def print_summary(results: dict[str, Any]) -> None:
    print("\nsummary")
    for row in results.get("placement", []):
        if row["cells"] == 1_000:
            verdict = "PASS" if row["placements_per_s"] >= 1_000 else "MISS"
            print(f"  placement at 1,000 cells, {row['instances']} instances: {row['placements_per_s']}/s  "
                  f"(target >= 1,000/s) {verdict}")
    for row in results.get("converge", []):
        if row["actual_lrps"] == 250_000:
            verdict = "PASS" if row["median_s"] <= 5 else "MISS"
            print(f"  convergence pass at 250k: median {row['median_s']} s (target <= 5 s) {verdict}")
    cluster = results.get("cluster")
    if cluster:
        for key, value in cluster.items():
            print(f"  {key}: {value}")
    _ = statistics


if __name__ == "__main__":
    sys.exit(main())
