"""Failover and presence timings of the coordination layer, on real Consul and etcd servers.

For each backend (10 runs each by default):
  graceful  SIGTERM the active BBS → time until the standby BBS answers /v1/ping
  sigkill   SIGKILL the active BBS → time until the standby BBS answers /v1/ping
  presence  SIGKILL a process holding a presence → time until the presence is gone (watch),
            and how long after the store dropped it the watcher heard of it (a 10 ms poller
            gives the drop time; a negative figure means the watch was faster than the poller)
Settings are the local cluster's: lock_ttl 3 s, presence_ttl 4 s, retry 0.2 s, lock-delay 0.

usage: .venv/bin/python bench/failover_bench.py [--runs N] [--backend consul|etcd] [--json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from control.coordination.base import CoordinationConfig  # noqa: E402
from control.coordination.factory import build  # noqa: E402
from control.kit.etcd import Etcd  # noqa: E402
from tests.servers import ConsulServer, EtcdServer, free_port  # noqa: E402

SETTINGS = {"lock_ttl": 3, "presence_ttl": 4, "lock_retry_interval": 0.2, "lock_delay": 0}
PRESENCE_HOLDER = """
import asyncio, sys
from control.coordination.base import CoordinationConfig
from control.coordination.factory import build
from control.coordination.members import PresenceMember
from control.kit.etcd import Etcd
from control.kit import logging as klog
klog.configure("presence-holder", "warning")  # logs to stderr; stdout carries REGISTERED
cfg = CoordinationConfig.model_validate_json(sys.argv[1])
async def main():
    member = PresenceMember(build(cfg, Etcd(cfg.etcd_endpoints)), "bench-cell", lambda: b'{"cell_id": "bench-cell"}')
    ready = asyncio.Event()
    task = asyncio.create_task(member.run(ready))
    await ready.wait()
    print("REGISTERED", flush=True)
    await task
asyncio.run(main())
"""


def hardware() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) // 1024 // 1024
    return f"{cpu}, {os.cpu_count()} cores, {mem} GiB RAM, Python {platform.python_version()}"


class Pair:
    """Two BBS daemons over one etcd/Consul, sharing a key prefix."""

    def __init__(self, tmp: Path, etcd: EtcdServer, coordination: dict[str, object], run: int) -> None:
        self.daemons: list[tuple[subprocess.Popen, str]] = []  # type: ignore[type-arg]
        for n in range(2):
            port = free_port()
            cfg = tmp / f"bbs-{run}-{n}.yml"
            cfg.write_text(yaml.safe_dump({"listen_address": f"127.0.0.1:{port}", "etcd_endpoints": [etcd.endpoint],
                                           "key_prefix": f"/bench-{run}/v1", "plain_http": True,
                                           "instance_name": f"bbs-{n}", "coordination": coordination,
                                           "log_level": "info"}))
            with (tmp / f"bbs-{run}-{n}.log").open("ab") as log:
                proc = subprocess.Popen([sys.executable, "-m", "control.bbs", "--config", str(cfg)], cwd=ROOT,
                                        stdout=log, stderr=subprocess.STDOUT)
            self.daemons.append((proc, f"http://127.0.0.1:{port}"))
            if n == 0:
                wait_ping(self.daemons[0][1], 30)
            else:  # measure only once the standby is really waiting at the lock
                wait_log(tmp / f"bbs-{run}-{n}.log", '"lock-waiting"', 30)
        time.sleep(0.2)

    def stop(self) -> None:
        for proc, _ in self.daemons:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def wait_ping(url: str, timeout: float) -> float:
    start = time.monotonic()
    with httpx.Client(timeout=0.5) as client:
        while time.monotonic() - start < timeout:
            try:
                if client.get(f"{url}/v1/ping").status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.005)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def wait_log(path: Path, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while needle not in path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{needle} not in {path} after {timeout}s")
        time.sleep(0.02)


def failover(tmp: Path, etcd: EtcdServer, coordination: dict[str, object], run: int, sig: int) -> float:
    pair = Pair(tmp, etcd, coordination, run)
    try:
        (active, _), (_, standby_url) = pair.daemons
        active.send_signal(sig)
        return wait_ping(standby_url, 30)
    finally:
        pair.stop()


async def presence_loss(cfg: CoordinationConfig) -> tuple[float, float]:
    holder = subprocess.Popen([sys.executable, "-c", PRESENCE_HOLDER, cfg.model_dump_json()], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    etcd = Etcd(cfg.etcd_endpoints)
    watcher, poller = build(cfg, etcd), build(cfg, Etcd(cfg.etcd_endpoints))
    await watcher.open()
    await poller.open()
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "REGISTERED"
        watched_gone = asyncio.get_running_loop().create_future()
        polled_gone: list[float] = []

        async def watch() -> None:
            async for snapshot in watcher.watch_presences():
                if "bench-cell" not in snapshot and not watched_gone.done():
                    watched_gone.set_result(time.monotonic())

        async def poll() -> None:
            while "bench-cell" in await poller.presences():
                await asyncio.sleep(0.01)
            polled_gone.append(time.monotonic())

        watching = asyncio.create_task(watch())
        await asyncio.sleep(0.5)
        holder.kill()
        killed = time.monotonic()
        polling = asyncio.create_task(poll())
        gone = await asyncio.wait_for(watched_gone, timeout=30)
        await polling
        watching.cancel()
        return gone - killed, gone - polled_gone[0]  # negative: the watch beat the poller
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
        if holder.stdout:
            holder.stdout.close()
        await watcher.close()
        await poller.close()
        await etcd.close()


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3),
            "min": round(min(values), 3), "n": len(values)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--backend", choices=["consul", "etcd"], action="append")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    backends = args.backend or ["consul", "etcd"]
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="pydiego-failover-") as tmpdir:
        tmp = Path(tmpdir)
        etcd = EtcdServer(tmp / "etcd").start()
        consul = ConsulServer(tmp / "consul").start()
        try:
            for backend in backends:
                coordination: dict[str, object] = dict(SETTINGS, backend=backend, consul_address=consul.address)
                graceful, killed, gone, delivery = [], [], [], []
                for run in range(args.runs):
                    graceful.append(failover(tmp, etcd, coordination, run * 10 + hash(backend) % 7 + 1, signal.SIGTERM))
                    killed.append(failover(tmp, etcd, coordination, run * 10 + hash(backend) % 7 + 2000, signal.SIGKILL))
                    cfg = CoordinationConfig.model_validate({**coordination, "etcd_endpoints": [etcd.endpoint],
                                                             "key_prefix": f"/bench-presence-{backend}-{run}/v1"})
                    g, d = asyncio.run(presence_loss(cfg))
                    gone.append(g)
                    delivery.append(d)
                    print(f"  {backend} run {run + 1}/{args.runs}: graceful {graceful[-1]:.3f}s, "
                          f"sigkill {killed[-1]:.3f}s, presence gone {g:.3f}s (watch +{d * 1000:.0f} ms)",
                          file=sys.stderr, flush=True)
                results[backend] = {"graceful_s": summary(graceful), "sigkill_s": summary(killed),
                                    "presence_gone_s": summary(gone), "watch_delivery_s": summary(delivery)}
        finally:
            consul.stop()
            etcd.stop()
    if args.json:
        print(json.dumps({"hardware": hardware(), "settings": SETTINGS, "results": results}, indent=2))
        return 0
    print(f"hardware: {hardware()}")
    print(f"settings: {SETTINGS} (Consul sessions: 0.45 x each TTL, at least 1 s; session_ttl_min 1s)")
    targets = {"graceful_s": ("< 1 s", 1.0), "sigkill_s": ("<= 5 s", 5.0),
               "presence_gone_s": (f"<= TTL {SETTINGS['presence_ttl']} s", float(SETTINGS["presence_ttl"])),
               "watch_delivery_s": ("<= 1 s after expiry (watch - poller)", 1.0)}
    for backend, figures in results.items():
        print(f"\n{backend}:")
        for name, stats in figures.items():
            label, limit = targets[name]
            verdict = "PASS" if stats["max"] <= limit else "MISS"
            print(f"  {name:<18} median {stats['median']:7.3f}  max {stats['max']:7.3f}  (n={stats['n']})  "
                  f"target {label}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
