#!/usr/bin/env python3
"""Cell benchmark: how fast one cell turns work into running containers, and how many it holds.

    .venv/bin/python bench/cell_bench.py            # full run, about a minute (needs root, runc, etcd)
    .venv/bin/python bench/cell_bench.py --quick    # smoke run: 5 iterations, 20 containers, < 30 s
    .venv/bin/python bench/cell_bench.py --json     # machine-readable result on stdout

Figures (bench/README.md says exactly what each includes):
1. executor path, in process: run() -> RUNNING event of one LRP container (busybox httpd, TCP
   check), broken down by stage (image resolve, garden rootfs / runc / network, process start,
   health check);
2. raw runc: the same rootfs, limits and workload with the fewest commands (overlay mount,
   `runc run --detach`, a veth with an address), until a TCP connect to the app succeeds;
3. the ratio and the difference between the two (target: overhead <= 50 ms p50);
4. desired -> RUNNING through a real BBS and rep daemon (this script stands in for the
   auctioneer: desire, then POST /work) (target: p50 <= 1 s with a cached rootfs);
5. capacity: 100 instances on the rep (its memory then), then batches of 50 up to
   --max-containers.
This is a script, never a test: nothing here asserts on timings. Everything it makes (depots,
netns, veths, mounts, iptables chains, cgroups, daemons) is removed on exit, error, Ctrl-C and
SIGTERM/SIGHUP.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import yaml  # noqa: E402

import structlog  # noqa: E402

from agents.executor.config import ExecutorConfig  # noqa: E402
from agents.executor.executor import Executor  # noqa: E402
from agents.executor.models import AllocationRequest, EventKind  # noqa: E402
from agents.executor.steps import health as health_steps  # noqa: E402
from agents.garden import GardenConfig, RuncBackend, build_busybox_stack, cleanup_all  # noqa: E402
from agents.garden.images import ImageStore  # noqa: E402
from agents.rep import conversion  # noqa: E402
from control.client.bbs_client import BBSClient  # noqa: E402
from control.kit import tls  # noqa: E402
from control.kit.clock import SystemClock  # noqa: E402
from control.models.desired_lrp import DesiredLRP  # noqa: E402
from tests.servers import EtcdServer, free_port  # noqa: E402

from bench.cell_common import (  # noqa: E402
    APP_PORT, BENCH_ROOT, CPUMeter, DOMAIN, EXEC_GARDEN, REP_GARDEN, Sizes, hardware, log,
    machine_busy_seconds, ms, other_busy_processes, pct, proc_status, summary)
from bench.cell_raw import bench_raw, raw_cleanup  # noqa: E402
from bench.cell_report import compare, report, verdicts  # noqa: E402

# -- workload --------------------------------------------------------------------------------

def httpd_lrp(process_guid: str, instances: int = 1, memory_mb: int = 64, disk_mb: int = 64,
              check: bool = True) -> dict[str, Any]:
    """The LRP of every phase: busybox httpd on 8080 with a TCP check, as `cf push` would make it."""
    body: dict[str, Any] = {
        "process_guid": process_guid, "domain": DOMAIN, "rootfs": "preloaded:busybox", "instances": instances,
        "memory_mb": memory_mb, "disk_mb": disk_mb, "ports": [APP_PORT],
        "action": {"run": {"path": "/usr/sbin/httpd", "args": ["-f", "-p", str(APP_PORT)], "user": "root"}},
        "start_timeout_ms": 60_000,
    }
    if check:
        body["check_definition"] = {"checks": [{"tcp_check": {"port": APP_PORT}}]}
    return body


def lrp_work(process_guid: str, index: int, memory_mb: int, disk_mb: int) -> dict[str, Any]:
    return {"process_guid": process_guid, "index": index, "domain": DOMAIN, "rootfs": "preloaded:busybox",
            "resource": {"memory_mb": memory_mb, "disk_mb": disk_mb}}


def log_to_file(path: Path) -> None:
    """The in-process executor and garden log as the rep does (JSON lines, info), into a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = path.open("a")
    logging.basicConfig(stream=out, level=logging.INFO, format="%(message)s", force=True)
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=out), cache_logger_on_first_use=True)


def executor_timing_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Executor settings this benchmark changes (none by default: it measures the defaults)."""
    out: dict[str, Any] = {}
    if args.check_interval is not None:
        out["unhealthy_monitoring_interval"] = args.check_interval
    return out


# -- 1. executor path, in process ------------------------------------------------------------

class TimedImages:
    """The ImageStore with the time of each resolve() noted (per rootfs call, in order)."""

    def __init__(self, inner: ImageStore) -> None:
        self.inner = inner
        self.last: tuple[float, float] = (0.0, 0.0)

    async def resolve(self, rootfs: str, username: str = "", password: str = "") -> Any:
        t0 = time.perf_counter()
        image = await self.inner.resolve(rootfs, username, password)
        self.last = (t0, time.perf_counter())
        return image

    def offers(self, rootfs: str) -> bool:
        return self.inner.offers(rootfs)


class TimedBackend:
    """The RuncBackend with the wall time of create() and of each handle's first run() noted."""

    def __init__(self, inner: RuncBackend) -> None:
        self.inner = inner
        self.create_times: dict[str, tuple[float, float]] = {}
        self.run_called: dict[str, float] = {}
        self.first_run: dict[str, tuple[float, float]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def create(self, spec: Any) -> Any:
        t0 = time.perf_counter()
        info = await self.inner.create(spec)
        self.create_times[spec.handle] = (t0, time.perf_counter())
        return info

    async def run(self, handle: str, spec: Any, io: Any = None) -> Any:
        first = handle not in self.run_called
        self.run_called.setdefault(handle, time.perf_counter())
        process = await self.inner.run(handle, spec, io)
        if first:
            self.first_run[handle] = (self.run_called[handle], time.perf_counter())
        return process


async def bench_executor(sz: Sizes, stack: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    home = BENCH_ROOT / "executor"
    log_to_file(BENCH_ROOT / "logs" / "executor.log")
    garden = GardenConfig(depot_dir=str(home / "garden"), **EXEC_GARDEN)
    backend = RuncBackend(garden)
    timed = TimedBackend(backend)
    images = TimedImages(ImageStore(str(home / "images"), {"busybox": str(stack)}))
    config = ExecutorConfig(state_dir=str(home / "executor"), memory_mb=8192, disk_mb=16384, containers=250,
                            **overrides)
    executor = Executor(config, timed, images, SystemClock())  # type: ignore[arg-type]
    desired = DesiredLRP.model_validate(httpd_lrp("bench-exec"))
    stages: dict[str, list[float]] = {k: [] for k in (
        "resolve", "executor_before_create", "rootfs", "runc", "network", "garden_other", "executor_before_start",
        "process_start", "health_check", "total", "delete")}
    cold: dict[str, float] = {}
    await backend.setup()
    ready = asyncio.Event()
    runner = asyncio.create_task(executor.serve(ready), name="bench-executor")
    events = executor.subscribe()
    seen: dict[tuple[str, str], float] = {}
    arrived = asyncio.Event()

    async def consume() -> None:
        async for event in events:
            seen[(event.container.guid, event.kind.value)] = time.perf_counter()
            arrived.set()

    consumer = asyncio.create_task(consume(), name="bench-executor-events")
    try:
        await asyncio.wait_for(ready.wait(), 30)
        log(f"executor path: 1 warm-up (cold: uid-shifted stack copy) + {sz.iterations} iterations")
        for i in range(sz.iterations + 1):
            guid = f"bench-exec-{i}"
            failures = await executor.allocate([AllocationRequest(guid=guid, memory_mb=64, disk_mb=64,
                                                                  tags={"lifecycle": "lrp", "index": "0"})])
            if failures:
                raise RuntimeError(f"allocate {guid}: {failures[0].reason}")
            request = conversion.lrp_run_request(desired, 0, guid)
            t0 = time.perf_counter()
            await executor.run_container(guid, request)
            deadline = t0 + 60
            while (guid, EventKind.RUNNING.value) not in seen:
                if (guid, EventKind.COMPLETED.value) in seen:
                    result = executor.get(guid).run_result
                    raise RuntimeError(f"{guid} completed instead of running: {result}")
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{guid} not RUNNING after 60 s")
                arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), 1)
            t_running = seen[(guid, EventKind.RUNNING.value)]
            while guid not in timed.first_run and time.perf_counter() < deadline:
                await asyncio.sleep(0.001)  # the check can pass before runc exec has returned
            info = await backend.info(guid)
            g = info.create_timings_ms
            r0, r1 = images.last
            c0, c1 = timed.create_times[guid]
            p0, p1 = timed.first_run[guid]
            p1 = min(p1, t_running)
            sample = {
                "resolve": ms(r1 - r0), "executor_before_create": ms(c0 - t0 - (r1 - r0)),
                "rootfs": g.get("rootfs", 0.0), "runc": g.get("runc", 0.0), "network": g.get("network", 0.0),
                "garden_other": ms(c1 - c0) - g.get("rootfs", 0.0) - g.get("runc", 0.0) - g.get("network", 0.0),
                "executor_before_start": ms(p0 - c1), "process_start": ms(p1 - p0),
                "health_check": ms(t_running - p1), "total": ms(t_running - t0)}
            td = time.perf_counter()
            await executor.delete(guid)
            sample["delete"] = ms(time.perf_counter() - td)
            if i == 0:
                cold = {k: round(v, 1) for k, v in sample.items()}
                log(f"  warm-up: {sample['total']:.0f} ms (rootfs {sample['rootfs']:.0f} ms)")
                continue
            for k, v in sample.items():
                stages[k].append(v)
            if i % 10 == 0 or i == sz.iterations:
                log(f"  {i}/{sz.iterations}: last {sample['total']:.0f} ms, p50 so far {pct(stages['total'], 50):.0f} ms")
    finally:
        for container in executor.list():
            with contextlib.suppress(Exception):
                await executor.delete(container.guid)
        await events.aclose()
        consumer.cancel()
        runner.cancel()
        await asyncio.gather(consumer, runner, return_exceptions=True)
        await images.inner.aclose()
        await backend.aclose()
        await cleanup_all(garden.depot_dir)
    first_retry = getattr(health_steps, "FIRST_RETRY", None)
    return {"stages": {k: summary(v) for k, v in stages.items()}, "cold_first": cold,
            "check_interval_s": config.unhealthy_monitoring_interval.total_seconds(),
            "check_first_retry_s": first_retry,
            "samples_total_ms": [round(v, 1) for v in stages["total"]]}


# -- 4./5. BBS + rep daemons -----------------------------------------------------------------

@dataclass
class Daemon:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None  # type: ignore[type-arg]

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def stop(self, sig: int, timeout: float = 30) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Cluster:
    home: Path
    etcd: EtcdServer | None = None
    bbs: Daemon | None = None
    rep: Daemon | None = None
    certs: dict[str, Path] = field(default_factory=dict)
    bbs_url: str = ""
    rep_url: str = ""
    cell_id: str = "bench-cell"
    depot: Path = Path()

    def ssl(self) -> Any:
        return tls.client_context(self.certs["ca"], self.certs["client_cert"], self.certs["client_key"])

    def start(self, overrides: dict[str, Any], max_containers: int) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        d = self.home / "certs"
        d.mkdir(exist_ok=True)
        ca, ca_key = tls.make_ca(d)
        sc, sk = tls.issue(d, "server", ca, ca_key, ["127.0.0.1", "localhost"])
        cc, ck = tls.issue(d, "client", ca, ca_key, [], server=False)
        self.certs = {"ca": ca, "server_cert": sc, "server_key": sk, "client_cert": cc, "client_key": ck}
        certs = {k: str(v) for k, v in self.certs.items() if k != "ca"}
        self.etcd = EtcdServer(self.home / "etcd").start()
        bbs_port = free_port()
        bbs_cfg = {"listen_address": f"127.0.0.1:{bbs_port}", "etcd_endpoints": [self.etcd.endpoint],
                   "key_prefix": "/bench-cell/v1", "coordination": {"backend": "etcd"}, "ca_cert": str(ca),
                   **certs}
        (self.home / "bbs.yml").write_text(yaml.safe_dump(bbs_cfg))
        self.bbs_url = f"https://127.0.0.1:{bbs_port}"
        self.bbs = Daemon("bbs", [sys.executable, "-m", "control.bbs", "--config", str(self.home / "bbs.yml")],
                          self.home / "bbs.log")
        self.bbs.start()
        self._wait(self.bbs, self.bbs_url + "/v1/ping")
        port, admin_port = free_port(), free_port()
        self.depot = self.home / "garden"
        stack = BENCH_ROOT / "stack-busybox"
        executor: dict[str, Any] = {"state_dir": str(self.home / "executor"), "containers": max_containers,
                                    "memory_mb": 64 * max_containers + 1024, "disk_mb": 64 * max_containers + 1024}
        executor.update({k: v.total_seconds() for k, v in overrides.items()})
        rep_cfg = {
            "cell_id": self.cell_id, "zone": "z1", "listen_address": f"127.0.0.1:{port}",
            "admin_listen_address": f"127.0.0.1:{admin_port}", "external_ip": "127.0.0.1",
            "ca_cert": str(ca), **certs, "bbs_url": self.bbs_url,
            "coordination": {"backend": "etcd", "etcd_endpoints": [self.etcd.endpoint], "key_prefix": "/bench-cell/v1"},
            "stacks": {"busybox": str(stack)}, "image_cache_dir": str(self.home / "images"),
            "garden": {"depot_dir": str(self.depot), **REP_GARDEN}, "executor": executor,
        }
        (self.home / "rep.yml").write_text(yaml.safe_dump(rep_cfg))
        self.rep_url = f"https://127.0.0.1:{port}"
        self.rep = Daemon("rep", [sys.executable, "-m", "agents.rep", "--config", str(self.home / "rep.yml")],
                          self.home / "rep.log")
        self.rep.start()
        self._wait(self.rep, self.rep_url + "/ping")

    def _wait(self, daemon: Daemon, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(verify=self.ssl(), timeout=2) as client:
            while time.monotonic() < deadline:
                if not daemon.alive():
                    raise RuntimeError(f"{daemon.name} exited early:\n{daemon.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return
                time.sleep(0.05)
        raise RuntimeError(f"{daemon.name} not ready after {timeout} s:\n{daemon.tail()}")

    def close(self) -> None:
        if self.rep is not None and self.rep.alive():
            t0 = time.perf_counter()
            self.rep.stop(signal.SIGINT)  # stop at once, leave the containers: cleanup_all removes them
            log(f"rep stopped ({time.perf_counter() - t0:.1f} s)")
        if self.bbs is not None:
            self.bbs.stop(signal.SIGTERM)
        if self.etcd is not None:
            self.etcd.stop()


class InstanceWatch:
    """The BBS's LRP event stream, reduced to: when did (process_guid, index) reach each state."""

    def __init__(self, bbs: BBSClient) -> None:
        self.bbs = bbs
        self.times: dict[tuple[str, int], dict[str, float]] = {}
        self.crashes: dict[tuple[str, int], str] = {}
        self.changed = asyncio.Event()
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        # The stream sends nothing until the first event: consider it subscribed once the
        # request is in flight (a warm-up desire below makes sure it is).
        self.subscribed.set()
        async for name, payload in self.bbs.events("lrp"):
            now = time.perf_counter()
            row = payload.get("after") or payload.get("actual_lrp")
            key = payload.get("actual_lrp_key") or (row or {}).get("actual_lrp_key") or row or {}
            guid, index = key.get("process_guid"), key.get("index")
            if guid is None or index is None:
                continue
            if name == "actual_lrp_crashed":
                self.crashes[(guid, index)] = payload.get("crash_reason", "")
            elif row is not None and name != "actual_lrp_instance_removed":
                self.times.setdefault((guid, index), {}).setdefault(row.get("state", "?"), now)
            self.changed.set()

    def at(self, guid: str, index: int, state: str) -> float | None:
        return self.times.get((guid, index), {}).get(state)

    async def wait(self, check: Callable[[], bool], timeout: float, poll: Callable[[], Awaitable[None]] | None = None) -> bool:
        deadline = time.perf_counter() + timeout
        while not check():
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))
            if poll is not None:
                await poll()
        return True


async def rep_state(rep: httpx.AsyncClient) -> dict[str, Any]:
    resp = await rep.get("/state")
    resp.raise_for_status()
    return resp.json()  # type: ignore[no-any-return]


async def post_work(rep: httpx.AsyncClient, cell_id: str, lrps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    resp = await rep.post("/work", json={"cell_id": cell_id, "lrps": lrps, "tasks": []})
    resp.raise_for_status()
    return resp.json()["lrps"]  # type: ignore[no-any-return]


async def wait_cell_empty(rep: httpx.AsyncClient, timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if not (await rep_state(rep))["lrps"]:
            return True
        await asyncio.sleep(0.1)
    return False


async def bench_desired_running(cl: Cluster, bbs: BBSClient, rep: httpx.AsyncClient, watch: InstanceWatch,
                                sz: Sizes) -> dict[str, Any]:
    stages: dict[str, list[float]] = {k: [] for k in ("desire_rtt", "work_rtt", "to_claimed", "claimed_to_running",
                                                      "total", "removal")}
    log(f"desired->RUNNING through BBS + rep: 1 warm-up + {sz.cluster_iterations} iterations")
    for i in range(sz.cluster_iterations + 1):
        guid = f"bench-lat-{i}"
        t0 = time.perf_counter()
        await bbs.desire_lrp(httpd_lrp(guid))
        t1 = time.perf_counter()
        refused = await post_work(rep, cl.cell_id, [lrp_work(guid, 0, 64, 64)])
        t2 = time.perf_counter()
        if refused:
            raise RuntimeError(f"/work refused {guid}: {refused[0].get('reason')}")
        if not await watch.wait(lambda: watch.at(guid, 0, "RUNNING") is not None, 60):
            raise RuntimeError(f"{guid} not RUNNING after 60 s (crash: {watch.crashes.get((guid, 0), '-')}):\n"
                               f"{cl.rep.tail() if cl.rep else ''}")
        t_running = watch.at(guid, 0, "RUNNING") or 0.0
        t_claimed = watch.at(guid, 0, "CLAIMED") or t_running
        tr = time.perf_counter()
        await bbs.remove_desired_lrp(guid)
        if not await wait_cell_empty(rep, 60):
            raise RuntimeError(f"{guid}: container still on the cell 60 s after its LRP was removed")
        removal = ms(time.perf_counter() - tr)
        if i == 0:
            log(f"  warm-up: {ms(t_running - t0):.0f} ms")
            continue
        for k, v in (("desire_rtt", ms(t1 - t0)), ("work_rtt", ms(t2 - t1)), ("to_claimed", ms(t_claimed - t2)),
                     ("claimed_to_running", ms(t_running - t_claimed)), ("total", ms(t_running - t0)),
                     ("removal", removal)):
            stages[k].append(v)
        if i % 5 == 0 or i == sz.cluster_iterations:
            log(f"  {i}/{sz.cluster_iterations}: last {ms(t_running - t0):.0f} ms, "
                f"p50 so far {pct(stages['total'], 50):.0f} ms")
    return {"stages": {k: summary(v) for k, v in stages.items()}}


def container_memory(tag: str) -> dict[str, float]:
    """Sum over the cell's container memory cgroups: working set (usage - inactive file), rss, cache."""
    base = Path("/sys/fs/cgroup/memory/pydiego") / tag
    out = {"containers": 0, "working_set_mb": 0.0, "rss_mb": 0.0, "cache_mb": 0.0, "kernel_mb": 0.0}
    if not base.is_dir():
        return out
    for cg in base.iterdir():
        if not cg.is_dir():
            continue
        try:
            stat = dict(ln.split() for ln in (cg / "memory.stat").read_text().splitlines())
            usage = int((cg / "memory.usage_in_bytes").read_text())
            kmem = int((cg / "memory.kmem.usage_in_bytes").read_text()) if (cg / "memory.kmem.usage_in_bytes").exists() else 0
        except (OSError, ValueError):
            continue
        out["containers"] += 1
        out["working_set_mb"] += (usage - int(stat.get("total_inactive_file", 0))) / 2**20
        out["rss_mb"] += int(stat.get("total_rss", 0)) / 2**20
        out["cache_mb"] += int(stat.get("total_cache", 0)) / 2**20
        out["kernel_mb"] += kmem / 2**20
    return {k: round(v, 1) for k, v in out.items()}


def keeper_pids(depot: Path) -> set[int]:
    """The garden keeper(s) of a depot: the parents of its containers' inits."""
    pids = set()
    for pid_file in (depot / "containers").glob("*/init.pid"):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{int(pid_file.read_text())}/status").read_text().splitlines():
                if line.startswith("PPid:"):
                    pids.add(int(line.split()[1]))
    return pids


def memory_report(cl: Cluster) -> dict[str, Any]:
    assert cl.rep is not None and cl.rep.proc is not None
    rep = proc_status(cl.rep.proc.pid)
    keepers = {pid: proc_status(pid) for pid in keeper_pids(cl.depot)}
    return {"rep_vmrss_mb": round(rep["VmRSS"] / 1024, 1), "rep_vmhwm_mb": round(rep["VmHWM"] / 1024, 1),
            "keeper_vmrss_mb": round(sum(s["VmRSS"] for s in keepers.values()) / 1024, 1),
            "keepers": len(keepers), "containers": container_memory(REP_GARDEN["tag"]),
            "host_available_mb": round(proc_meminfo()["MemAvailable"] / 1024, 1)}


def proc_meminfo() -> dict[str, int]:
    return {ln.split(":")[0]: int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()}


KEYS = Path("/proc/sys/kernel/keys")


def key_quota() -> dict[str, Any]:
    """The kernel's per-user key quota and what the unprivileged containers' host uid uses of it.

    runc gives every container init and every `runc exec` a new session keyring, owned by the
    uid container root maps to: all unprivileged containers of a cell share that one quota
    (at the kernel's default, 200 keys, a cell stopped at 100 containers; agents/garden/keyring.py
    now raises it at backend setup)."""
    uid = GardenConfig().unprivileged_host_id
    out: dict[str, Any] = {"maxkeys": int((KEYS / "maxkeys").read_text()), "maxbytes": int((KEYS / "maxbytes").read_text()),
                           "uid": uid, "keys": 0, "bytes": 0}
    for line in Path("/proc/key-users").read_text().splitlines():
        head, _, rest = line.partition(":")
        if head.strip() == str(uid):
            fields = rest.split()  # usage, nkeys/ninstantiated, qnkeys/maxkeys, qnbytes/maxbytes
            out["keys"] = int(fields[2].split("/")[0])
            out["bytes"] = int(fields[3].split("/")[0])
    return out


async def fill(cl: Cluster, bbs: BBSClient, rep: httpx.AsyncClient, watch: InstanceWatch, guid: str,
               indices: range, timeout: float) -> dict[str, Any]:
    """POST /work for `indices` (one request, like one auction batch); wait until each is RUNNING or crashed."""
    t0 = time.perf_counter()
    refused = await post_work(rep, cl.cell_id, [lrp_work(guid, i, 16, 16) for i in indices])
    refused_idx = {w["index"]: w.get("reason", "") for w in refused}
    wanted = [i for i in indices if i not in refused_idx]

    def settled() -> bool:
        return all(watch.at(guid, i, "RUNNING") is not None or (guid, i) in watch.crashes for i in wanted)

    done = await watch.wait(settled, timeout)
    running = [i for i in wanted if watch.at(guid, i, "RUNNING") is not None]
    last = max((watch.at(guid, i, "RUNNING") or t0 for i in running), default=t0)
    crashed = {i: watch.crashes[(guid, i)] for i in wanted if (guid, i) in watch.crashes}
    return {"requested": len(indices), "refused": refused_idx, "running": len(running), "crashed": crashed,
            "timed_out": not done, "seconds_to_all_running": round(last - t0, 2)}


async def bench_capacity(cl: Cluster, bbs: BBSClient, rep: httpx.AsyncClient, watch: InstanceWatch,
                         sz: Sizes) -> dict[str, Any]:
    guid = "bench-cap"
    res: dict[str, Any] = {"batches": []}
    res["memory_idle"] = memory_report(cl)
    res["keys_idle"] = key_quota()
    first = min(sz.first_batch, sz.max_containers)
    await bbs.desire_lrp(httpd_lrp(guid, instances=first, memory_mb=16, disk_mb=16))
    log(f"capacity: {first} instances in one /work")
    batch = await fill(cl, bbs, rep, watch, guid, range(first), 300)
    res["first"] = batch
    log(f"  {batch['running']}/{first} RUNNING in {batch['seconds_to_all_running']:.1f} s"
        + (f", crashed {len(batch['crashed'])}" if batch["crashed"] else ""))
    await asyncio.sleep(2)  # let the rep settle (event handling, log collection) before reading its memory
    res["memory_first"] = memory_report(cl)
    res["keys_first"] = key_quota()
    total = first
    while total < sz.max_containers:
        if batch["running"] == 0:
            break  # nothing of the last batch ran: more of the same says nothing new
        nxt = min(total + sz.batch, sz.max_containers)
        await bbs.update_desired_lrp(guid, {"instances": nxt})
        log(f"capacity: +{nxt - total} instances (to {nxt})")
        batch = await fill(cl, bbs, rep, watch, guid, range(total, nxt), 300)
        res["batches"].append(batch)
        log(f"  {batch['running']}/{nxt - total} RUNNING in {batch['seconds_to_all_running']:.1f} s"
            + (f", refused {len(batch['refused'])}" if batch["refused"] else "")
            + (f", crashed {len(batch['crashed'])}" if batch["crashed"] else ""))
        total = nxt
    state = await rep_state(rep)
    res["running_at_once"] = state["running_container_count"]
    res["cell_state"] = {k: state[k] for k in ("total_resources", "available_resources", "starting_container_count",
                                               "running_container_count")}
    await asyncio.sleep(2)
    res["memory_end"] = memory_report(cl)
    res["keys_end"] = key_quota()
    log(f"capacity: removing {res['running_at_once']} instances")
    td = time.perf_counter()
    # The BBS stops every running instance inside the DELETE (one rep call each): a long timeout.
    async with BBSClient(cl.bbs_url, tls=cl.ssl(), timeout_s=600, retries=0) as slow:
        await slow.remove_desired_lrp(guid)
    res["remove_call_s"] = round(time.perf_counter() - td, 1)
    res["emptied"] = await wait_cell_empty(rep, 300)
    res["removal_s"] = round(time.perf_counter() - td, 1)
    log(f"  cell empty after {res['removal_s']:.0f} s" if res["emptied"] else "  cell NOT empty after 300 s")
    return res


async def bench_cluster(sz: Sizes, overrides: dict[str, Any], cl: Cluster, do_latency: bool,
                        do_capacity: bool) -> dict[str, Any]:
    log("starting etcd, BBS and rep")
    await asyncio.to_thread(cl.start, overrides, sz.max_containers)
    res: dict[str, Any] = {}
    async with BBSClient(cl.bbs_url, tls=cl.ssl(), retries=2) as bbs, \
            httpx.AsyncClient(base_url=cl.rep_url, verify=cl.ssl(), timeout=30) as rep:
        watch = InstanceWatch(bbs)
        watcher = asyncio.create_task(watch.run(), name="bench-bbs-events")
        try:
            await asyncio.sleep(0.3)
            if watcher.done():
                watcher.result()
            if do_latency:
                m = CPUMeter()
                res["desired_running"] = await bench_desired_running(cl, bbs, rep, watch, sz)
                res["desired_running"]["cpu"] = m.stop()
            if do_capacity:
                m = CPUMeter()
                res["capacity"] = await bench_capacity(cl, bbs, rep, watch, sz)
                res["capacity"]["cpu"] = m.stop()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    return res


# -- main ------------------------------------------------------------------------------------

async def sweep() -> None:
    """Remove what an earlier, killed run of this script left (and, at the end, this run)."""
    for depot in (BENCH_ROOT / "executor" / "garden", BENCH_ROOT / "cluster" / "garden"):
        if (depot / "containers").is_dir():
            t0 = time.perf_counter()
            left = sum(1 for _ in (depot / "containers").iterdir())
            await cleanup_all(depot)
            if left:
                log(f"cleanup_all {depot}: {left} containers removed ({time.perf_counter() - t0:.1f} s)")
        elif depot.exists():
            await cleanup_all(depot)
    await raw_cleanup()
    shutil.rmtree(BENCH_ROOT, ignore_errors=True)


async def run_all(args: argparse.Namespace, sz: Sizes, phases: set[str], cl: Cluster) -> dict[str, Any]:
    res: dict[str, Any] = {"loadavg_start": os.getloadavg()[0], "other_processes": other_busy_processes()}
    b0 = machine_busy_seconds()
    await asyncio.sleep(1)
    res["idle_busy_cores"] = round(machine_busy_seconds() - b0, 2)
    await sweep()
    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    stack = build_busybox_stack(BENCH_ROOT / "stack-busybox")
    overrides = executor_timing_overrides(args)
    if "executor" in phases:
        m = CPUMeter()
        res["executor"] = await bench_executor(sz, stack, overrides)
        res["executor"]["cpu"] = m.stop()
    if "raw" in phases:
        m = CPUMeter()
        res["raw"] = await bench_raw(sz, stack)
        res["raw"]["cpu"] = m.stop()
    if "executor" in res and "raw" in res:
        res["comparison"] = compare(res["executor"], res["raw"])
    if phases & {"cluster", "capacity"}:
        res["cluster"] = await bench_cluster(sz, overrides, cl, "cluster" in phases, "capacity" in phases)
    res["loadavg_end"] = os.getloadavg()[0]
    return res


async def cleanup(cl: Cluster) -> None:
    await asyncio.to_thread(cl.close)
    await sweep()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 5 iterations, 20 containers")
    ap.add_argument("--iterations", type=int, help="executor and raw iterations (default 30; --quick 5)")
    ap.add_argument("--cluster-iterations", type=int, help="desired->RUNNING iterations (default 20; --quick 5)")
    ap.add_argument("--max-containers", type=int, help="capacity: most containers tried (default 250 = Diego's max)")
    ap.add_argument("--check-interval", type=float, default=None, metavar="SECONDS",
                    help="executor unhealthy_monitoring_interval (startup health-check period); default: the config default")
    ap.add_argument("--phases", default="executor,raw,cluster,capacity",
                    help="comma-separated subset of executor,raw,cluster,capacity")
    ap.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of the report")
    ap.add_argument("--keep-logs", action="store_true", help="copy the BBS and rep logs to ./cell_bench-logs/")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        ap.error("needs root (runc, mounts, network namespaces, iptables)")
    n = args.iterations or (5 if args.quick else 30)
    sz = Sizes(iterations=n, cluster_iterations=args.cluster_iterations or (5 if args.quick else 20),
               first_batch=10 if args.quick else 100, batch=10 if args.quick else 50,
               max_containers=args.max_containers or (20 if args.quick else 250))
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    cl = Cluster(BENCH_ROOT / "cluster")

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally below

    for s in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(s) is not signal.SIG_IGN:
            signal.signal(s, on_signal)
    t0 = time.perf_counter()
    hw = hardware()
    log(f"{hw['cpu_model']}, {hw['logical_cpus']} CPUs, {hw['ram_gb']} GB, kernel {hw['kernel']}, {hw['runc']}")
    try:
        res = asyncio.run(run_all(args, sz, phases, cl))
        tv = verdicts(res)
        wall = time.perf_counter() - t0
        if args.json:
            print(json.dumps({"hardware": hw, "sizes": sz.__dict__, "results": res, "targets": tv,
                              "wall_s": round(wall, 1)}, indent=2))
        else:
            print(report(hw, res, tv, sz, args.quick, wall))
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except Exception:
        for d in (cl.rep, cl.bbs):
            if d is not None:
                log(f"failed; last {d.name} log lines:\n{d.tail()}")
        raise
    finally:
        with contextlib.suppress(Exception):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if args.keep_logs:
            out = Path("cell_bench-logs")
            out.mkdir(exist_ok=True)
            for f in [*(BENCH_ROOT / "logs").glob("*.log"), *(BENCH_ROOT / "cluster").glob("*.log")]:
                shutil.copy(f, out / f.name)
        asyncio.run(cleanup(cl))
        log("cleaned up: daemons stopped, depots removed (cleanup_all), raw runc leftovers removed")


if __name__ == "__main__":
    sys.exit(main())
