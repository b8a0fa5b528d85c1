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
import ctypes
import json
import logging
import os
import platform
import re
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
from agents.garden.rootfs import IdMapping, RootfsManager, mountpoints  # noqa: E402
from agents.rep import conversion  # noqa: E402
from control.client.bbs_client import BBSClient  # noqa: E402
from control.kit import tls  # noqa: E402
from control.kit.clock import SystemClock  # noqa: E402
from control.models.desired_lrp import DesiredLRP  # noqa: E402
from tests.servers import EtcdServer, free_port  # noqa: E402

BENCH_ROOT = Path("/var/tmp/pydiego-bench-cell")
APP_PORT = 8080
DOMAIN = "bench"
# Host-level names and ranges no test suite or local cluster uses (tests: 10.243-10.251.x, 10.253-254.x,
# host ports 61000-65439; the ephemeral range is 32768-60999).
EXEC_GARDEN = {"tag": "bn", "bridge_subnet": "10.236.0.0/22", "port_range_start": 31000, "port_range_end": 31099}
REP_GARDEN = {"tag": "bc", "bridge_subnet": "10.232.0.0/22", "port_range_start": 30000, "port_range_end": 30999}
RAW_PREFIX = "pdcbr"                       # raw path: bridge pdcbr-br, veths pdcbr-<n>
RAW_NET = ("10.237.0", 24)                 # bridge .1, containers .10-.209
RAW_CGROUP_PARENT = "pydiego-bench-raw"
TARGETS = {  # name -> (limit, unit, description)
    "overhead_p50_ms": (50.0, "ms", "executor create->running overhead over raw runc, p50"),
    "desired_running_p50_s": (1.0, "s", "desired->RUNNING through BBS + rep, p50 (cached rootfs)"),
}


@dataclass(frozen=True)
class Sizes:
    iterations: int
    cluster_iterations: int
    first_batch: int
    batch: int
    max_containers: int


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    """Percentile with linear interpolation between the closest ranks."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": round(pct(values, 50), 2), "p99": round(pct(values, 99), 2),
            "mean": round(sum(values) / len(values), 2) if values else float("nan"),
            "min": round(min(values), 2) if values else float("nan"),
            "max": round(max(values), 2) if values else float("nan")}


def ms(seconds: float) -> float:
    return seconds * 1000


# -- machine ---------------------------------------------------------------------------------

def hardware() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")))
    runc = subprocess.run(["runc", "--version"], capture_output=True, text=True).stdout.splitlines()
    debian = Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").exists() else "?"
    cgroup = "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1"
    return {"cpu_model": model or platform.processor(), "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)), "ram_gb": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release(), "debian": debian, "runc": runc[0] if runc else "?",
            "python": platform.python_version(), "cgroup": cgroup}


def machine_busy_seconds() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


class CPUMeter:
    """Cores the whole machine kept busy during a phase (this benchmark shares it with everyone)."""

    def __init__(self) -> None:
        self.t0, self.busy0 = time.perf_counter(), machine_busy_seconds()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        return {"seconds": round(wall, 1), "machine_busy_cores": round((machine_busy_seconds() - self.busy0) / wall, 2),
                "loadavg_1m": round(os.getloadavg()[0], 2)}


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0])
    return out


def other_busy_processes() -> list[str]:
    """Other pydiego/pytest processes at start: they compete for the same 2 cores."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if "pytest" in cmd or ("pydiego" in cmd and "keeper.py" not in cmd) or " -m agents." in cmd or " -m control." in cmd:
            found.append(f"{entry.name} {cmd[:110]}")
    return found


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


# -- 2. raw runc -----------------------------------------------------------------------------

async def sh(*argv: str, stdin: bytes | None = None, check: bool = True, timeout: float = 30) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


async def runc_run_detached(runc_root: Path, bundle: Path, cid: str) -> None:
    """`runc run --detach`: its stdio is the container's (/dev/null here: a pipe would stay open)."""
    log_file = bundle / "runc.log"
    proc = await asyncio.create_subprocess_exec(
        "runc", "--root", str(runc_root), "--log", str(log_file), "run", "--detach", "--bundle", str(bundle),
        "--pid-file", str(bundle / "init.pid"), cid,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    if await asyncio.wait_for(proc.wait(), 30) != 0:
        raise RuntimeError(f"runc run {cid}: exit {proc.returncode}: {log_file.read_text(errors='replace')[-500:]}")


def set_child_subreaper(on: bool) -> None:
    """While the raw phase runs, orphaned container inits become our children, so we can reap
    them (runc treats an unreaped zombie init as running, like the garden keeper notes)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1 if on else 0, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def raw_config(template: dict[str, Any], rootfs: Path, mapping: IdMapping, cgroup: str, hostname: str) -> dict[str, Any]:
    """`runc spec` edited to the garden's unprivileged container: httpd as the init, read-write root
    (the overlay), user namespace with the same mapping, /sys bind-mounted read-only and no cgroup
    mount (as ocispec.py does for user namespaces), the same cgroup limits (memory = memory+swap
    64 MiB, cpu.shares 1024, pids unlimited, devices denied), a fresh network namespace."""
    cfg = json.loads(json.dumps(template))
    cfg["process"].update(terminal=False, args=["/usr/sbin/httpd", "-f", "-p", str(APP_PORT)])
    cfg["process"]["env"] = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    cfg["root"] = {"path": str(rootfs), "readonly": False}
    cfg["hostname"] = hostname
    mounts = [m for m in cfg["mounts"] if m["destination"] not in ("/sys", "/sys/fs/cgroup")]
    mounts.append({"destination": "/sys", "type": "bind", "source": "/sys",
                   "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    cfg["mounts"] = mounts
    linux = cfg["linux"]
    linux["namespaces"] = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "user")]
    linux["uidMappings"] = [{"containerID": 0, "hostID": mapping.host_id, "size": mapping.size}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": mapping.host_id, "size": mapping.size}]
    limit = 64 * 1024 * 1024
    linux["resources"] = {"devices": [{"allow": False, "access": "rwm"}], "cpu": {"shares": 1024},
                          "memory": {"limit": limit, "swap": limit}}
    linux["cgroupsPath"] = cgroup
    return cfg


async def bridge_port_forwarding(veth: str, deadline: float) -> None:
    """Wait until the veth's bridge port forwards (state 3). Measured here: without this check
    about 1 in 20 iterations lost the host's first ARP request to the brand-new port and waited
    for the ARP retransmission (1 s); with it none did in 150. (The executor path's first probe
    comes after `runc exec`, ~40 ms later, and never showed the stall.)"""
    state = Path(f"/sys/class/net/{veth}/brport/state")
    while state.read_text().strip() != "3":
        if time.perf_counter() > deadline:
            raise RuntimeError(f"bridge port {veth} not forwarding")
        await asyncio.sleep(0.0002)


async def tcp_ready(host: str, port: int, deadline: float) -> int:
    """Connect every millisecond until the app accepts; returns the number of attempts.

    Each attempt gives up after 20 ms (a lost SYN would otherwise wait for TCP's 1 s
    retransmission: this measures when the app can first be reached, not a kernel timer)."""
    attempts = 0
    while True:
        attempts += 1
        try:
            _r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 0.02)
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()
            return attempts
        except (OSError, TimeoutError):
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{host}:{port} not accepting after {attempts} attempts") from None
            await asyncio.sleep(0.001)


async def raw_setup(home: Path, stack: Path, mapping: IdMapping) -> tuple[Path, dict[str, Any]]:
    """Untimed, once: the uid-shifted copy of the stack (what the garden caches), the bridge, the spec."""
    lower = await RootfsManager(home / "stacks", mapping, 60).lower_dir(stack, privileged=False)
    br = f"{RAW_PREFIX}-br"
    if not Path(f"/sys/class/net/{br}").exists():
        await sh("ip", "link", "add", "name", br, "type", "bridge")
    await sh("ip", "link", "set", br, "address", "02:00:0a:ed:00:01")
    await sh("ip", "addr", "replace", f"{RAW_NET[0]}.1/{RAW_NET[1]}", "dev", br)
    await sh("ip", "link", "set", br, "up")
    spec_dir = home / "spec"
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "config.json").unlink(missing_ok=True)
    await sh("runc", "spec", "--bundle", str(spec_dir))
    return lower, json.loads((spec_dir / "config.json").read_text())


async def raw_teardown(home: Path, cid: str, bundle: Path, veth: str, init_pid: int | None) -> None:
    runc = ("runc", "--root", str(home / "runc"))
    if init_pid:
        await sh(*runc, "kill", cid, "KILL", check=False)
        with contextlib.suppress(ChildProcessError):
            await asyncio.to_thread(os.waitpid, init_pid, 0)
    await sh(*runc, "delete", "--force", cid, check=False)
    if Path(f"/sys/class/net/{veth}").exists():
        await sh("ip", "link", "del", veth, check=False)
    rootfs = bundle / "rootfs"
    if str(rootfs) in mountpoints():
        await sh("umount", str(rootfs), check=False)
    await asyncio.to_thread(shutil.rmtree, bundle, True)


async def raw_once(home: Path, i: int, lower: Path, template: dict[str, Any], mapping: IdMapping) -> dict[str, float]:
    cid = f"raw-{i}"
    bundle = home / "bundles" / cid
    veth = f"{RAW_PREFIX}-{i}"
    addr = f"{RAW_NET[0]}.{10 + i % 200}"
    init_pid: int | None = None
    try:
        t0 = time.perf_counter()
        # rootfs: an overlay of the cached uid-shifted stack, upper and work dirs in the bundle (no disk image)
        upper, work, rootfs = bundle / "upper", bundle / "work", bundle / "rootfs"
        for d in (upper, work, rootfs):
            d.mkdir(parents=True)
        os.chmod(upper, 0o755)
        os.chown(upper, mapping.host_id, mapping.host_id)
        await sh("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}",
                 str(rootfs))
        t1 = time.perf_counter()
        # runc: config.json, then `runc run --detach` returns once httpd (the init) has been started
        cfg = raw_config(template, rootfs, mapping, f"/{RAW_CGROUP_PARENT}/{cid}", cid)
        (bundle / "config.json").write_text(json.dumps(cfg))
        await runc_run_detached(home / "runc", bundle, cid)
        init_pid = int((bundle / "init.pid").read_text())
        t2 = time.perf_counter()
        # network: a veth pair into the container's netns, on the bridge, with an address and a route
        host_side = (f"link add {veth} type veth peer name eth0 netns {init_pid}\n"
                     f"link set {veth} master {RAW_PREFIX}-br\nlink set {veth} up\n")
        await sh("ip", "-batch", "-", stdin=host_side.encode())
        inside = (f"addr add {addr}/{RAW_NET[1]} dev eth0\nlink set eth0 up\nlink set lo up\n"
                  f"route add default via {RAW_NET[0]}.1\n")
        await sh("nsenter", f"--net=/proc/{init_pid}/ns/net", "ip", "-batch", "-", stdin=inside.encode())
        await bridge_port_forwarding(veth, time.perf_counter() + 5)
        t3 = time.perf_counter()
        attempts = await tcp_ready(addr, APP_PORT, t3 + 10)
        t4 = time.perf_counter()
        return {"rootfs": ms(t1 - t0), "runc": ms(t2 - t1), "network": ms(t3 - t2), "app_ready": ms(t4 - t3),
                "total": ms(t4 - t0), "connect_attempts": attempts}
    finally:
        await raw_teardown(home, cid, bundle, veth, init_pid)


async def bench_raw(sz: Sizes, stack: Path) -> dict[str, Any]:
    home = BENCH_ROOT / "raw"
    mapping = IdMapping(GardenConfig().unprivileged_host_id, GardenConfig().unprivileged_id_count)
    stages: dict[str, list[float]] = {k: [] for k in ("rootfs", "runc", "network", "app_ready", "total", "connect_attempts")}
    set_child_subreaper(True)
    try:
        lower, template = await raw_setup(home, stack, mapping)
        log(f"raw runc: 1 warm-up + {sz.iterations} iterations")
        for i in range(sz.iterations + 1):
            sample = await raw_once(home, i, lower, template, mapping)
            if i == 0:
                continue
            for k, v in sample.items():
                stages[k].append(v)
            if i % 10 == 0 or i == sz.iterations:
                log(f"  {i}/{sz.iterations}: last {sample['total']:.0f} ms, p50 so far {pct(stages['total'], 50):.0f} ms")
    finally:
        await raw_cleanup()
        set_child_subreaper(False)
    return {"stages": {k: summary(v) for k, v in stages.items()}}


async def raw_cleanup() -> None:
    """Idempotent: everything the raw phase can leave (also after a crashed earlier run)."""
    home = BENCH_ROOT / "raw"
    runc_root = home / "runc"
    if runc_root.is_dir():
        for cid in (await sh("runc", "--root", str(runc_root), "list", "--quiet", check=False)).split():
            await sh("runc", "--root", str(runc_root), "delete", "--force", cid, check=False)
    for entry in Path("/sys/class/net").iterdir():
        if entry.name.startswith(f"{RAW_PREFIX}-"):
            await sh("ip", "link", "del", entry.name, check=False)
    for point in reversed(mountpoints()):
        if point.startswith(f"{home}/"):
            await sh("umount", "-l", point, check=False)
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        parent = hierarchy / RAW_CGROUP_PARENT
        if parent.is_dir():
            for child in parent.iterdir():
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            with contextlib.suppress(OSError):
                parent.rmdir()
    shutil.rmtree(home, ignore_errors=True)


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


# -- report ----------------------------------------------------------------------------------

STAGE_NAMES = {
    "resolve": "image resolve (preloaded:busybox)",
    "executor_before_create": "executor: run() -> backend.create()",
    "rootfs": "garden rootfs (disk image, overlay)",
    "runc": "garden runc (config, runc run, init up)",
    "network": "garden network (netns, veth, ports, rules)",
    "garden_other": "garden other (lock, record, info)",
    "executor_before_start": "executor: created -> runc exec of app",
    "process_start": "process start (runc exec via keeper)",
    "health_check": "health check until it passes",
    "total": "TOTAL run() -> RUNNING",
    "delete": "(delete: stop + destroy, not in total)",
}
RAW_NAMES = {
    "rootfs": "rootfs (overlay mount)",
    "runc": "runc run --detach (httpd is the init)",
    "network": "network (veth, address, route, port up)",
    "app_ready": "TCP connect to app succeeds",
    "total": "TOTAL",
    "connect_attempts": "(connect attempts: refused or 20 ms timeout)",
}


def verdicts(res: dict[str, Any]) -> dict[str, Any]:
    measured: dict[str, float] = {}
    if "executor" in res and "raw" in res:
        measured["overhead_p50_ms"] = res["comparison"]["overhead_p50_ms"]
    if "desired_running" in res.get("cluster", {}):
        measured["desired_running_p50_s"] = res["cluster"]["desired_running"]["stages"]["total"]["p50"] / 1000
    out = {}
    for name, value in measured.items():
        limit, unit, desc = TARGETS[name]
        out[name] = {"value": round(value, 3), "limit": limit, "unit": unit, "description": desc,
                     "result": "PASS" if value <= limit else "MISS"}
    return out


GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def reasons(by_index: dict[Any, str]) -> str:
    """Distinct failure reasons, instance guids blanked, each cut to its last 140 characters."""
    distinct = sorted({GUID.sub("<guid>", r) for r in by_index.values()})
    return "; ".join(f"[{r if len(r) <= 140 else '...' + r[-140:]}]" for r in distinct[:3])


def report(hw: dict[str, Any], res: dict[str, Any], tv: dict[str, Any], sz: Sizes, quick: bool, wall: float) -> str:
    L: list[str] = []
    a = L.append
    a("pydiego cell benchmark" + (" (--quick: small sizes, a smoke run)" if quick else ""))
    a(f"  CPU      {hw['cpu_model']}, {hw['logical_cpus']} logical CPUs ({hw['usable_cpus']} usable), RAM {hw['ram_gb']} GB")
    a(f"  software kernel {hw['kernel']} (Debian {hw['debian']}, cgroup {hw['cgroup']}), {hw['runc']}, Python {hw['python']}")
    a(f"  machine  busy {res['idle_busy_cores']:.2f} cores before the start (1 s sample), load {res['loadavg_start']:.2f}")
    for line in res["other_processes"][:6]:
        a(f"           also running: {line}")
    a("")
    if "executor" in res:
        e = res["executor"]
        a(f"1. Executor path, in process: run() -> RUNNING event, {sz.iterations} iterations (+1 warm-up), ms")
        a("   LRP: busybox httpd -f -p 8080, TCP check on 8080, 64 MB memory, 64 MB disk, unprivileged,")
        retry = (f"first retry after {e['check_first_retry_s'] * 1000:g} ms, doubling up to {e['check_interval_s']:g} s"
                 if e.get("check_first_retry_s") else f"retried every {e['check_interval_s']:g} s")
        a(f"   RunRequest built by the rep's conversion; startup TCP check probed at once, {retry}")
        a(f"   {'stage':<44} {'p50':>8} {'p99':>8} {'mean':>8} {'min':>8} {'max':>8}")
        for k, name in STAGE_NAMES.items():
            s = e["stages"][k]
            a(f"   {name:<44} {s['p50']:8.1f} {s['p99']:8.1f} {s['mean']:8.1f} {s['min']:8.1f} {s['max']:8.1f}")
        c = e["cold_first"]
        if c:
            a(f"   warm-up (first container: uid-shifted copy of the stack): total {c['total']:.0f} ms, rootfs {c['rootfs']:.0f} ms")
        a(f"   cpu: {e['cpu']['machine_busy_cores']:.2f} cores busy on average over {e['cpu']['seconds']:.0f} s")
        a("")
    if "raw" in res:
        r = res["raw"]
        a(f"2. Raw runc, same rootfs/limits/workload, {sz.iterations} iterations (+1 warm-up), ms")
        a("   overlay of the same uid-shifted busybox stack (upper in a plain dir, no disk image), user namespace,")
        a("   memory 64 MB, cpu.shares 1024, fresh netns + veth on a bridge; timed until a TCP connect to 8080 succeeds")
        a(f"   {'stage':<44} {'p50':>8} {'p99':>8} {'mean':>8} {'min':>8} {'max':>8}")
        for k, name in RAW_NAMES.items():
            s = r["stages"][k]
            a(f"   {name:<44} {s['p50']:8.1f} {s['p99']:8.1f} {s['mean']:8.1f} {s['min']:8.1f} {s['max']:8.1f}")
        a(f"   cpu: {r['cpu']['machine_busy_cores']:.2f} cores busy on average over {r['cpu']['seconds']:.0f} s")
        a("")
    if "comparison" in res:
        c = res["comparison"]
        a("3. Executor vs raw runc (p50)")
        a(f"   total {c['executor_p50_ms']:.1f} ms / {c['raw_p50_ms']:.1f} ms = {c['ratio_p50']:.2f}x;"
          f" overhead {c['overhead_p50_ms']:+.1f} ms")
        a(f"   split by stage (means: executor - raw; they add up to the mean overhead, {c['overhead_mean_ms']:+.1f} ms):")
        a(f"     rootfs {c['rootfs_diff_ms']:+.1f}, runc run {c['runc_diff_ms']:+.1f}, network {c['network_diff_ms']:+.1f},"
          f" runc exec of the app {c['exec_ms']:+.1f} (raw: httpd is the init), health check vs first connect"
          f" {c['check_diff_ms']:+.1f}, executor/garden bookkeeping {c['bookkeeping_ms']:+.1f} ms")
        a(f"   overhead p50 without the check stage (app started -> RUNNING) and the connect stage: {c['overhead_without_check_p50_ms']:+.1f} ms")
        a("")
    cl = res.get("cluster", {})
    if "desired_running" in cl:
        d = cl["desired_running"]
        a(f"4. Desired -> RUNNING through a real BBS (mTLS, etcd) and rep daemon, {sz.cluster_iterations} iterations, ms")
        a("   this script stands in for the auctioneer (next issue): desire the LRP, then POST /work to the rep at once;")
        a("   RUNNING = the ActualLRP's RUNNING event on the BBS event stream; rootfs cached")
        names = {"desire_rtt": "desire (POST /v1/desired_lrps) round trip", "work_rtt": "POST /work round trip",
                 "to_claimed": "/work answered -> CLAIMED event", "claimed_to_running": "CLAIMED -> RUNNING event",
                 "total": "TOTAL desire sent -> RUNNING event", "removal": "(remove LRP -> container gone, not in total)"}
        a(f"   {'stage':<44} {'p50':>8} {'p99':>8} {'mean':>8} {'min':>8} {'max':>8}")
        for k, name in names.items():
            s = d["stages"][k]
            a(f"   {name:<44} {s['p50']:8.1f} {s['p99']:8.1f} {s['mean']:8.1f} {s['min']:8.1f} {s['max']:8.1f}")
        a(f"   cpu: {d['cpu']['machine_busy_cores']:.2f} cores busy on average over {d['cpu']['seconds']:.0f} s")
        a("")
    if "capacity" in cl:
        c = cl["capacity"]
        f = c["first"]
        k0 = c["keys_idle"]
        a("5. Capacity of one cell (same rep; LRP of busybox httpd + TCP check, 16 MB memory, 16 MB disk per instance)")
        a(f"   kernel key quota per non-root uid: maxkeys {k0['maxkeys']}, maxbytes {k0['maxbytes']} (runc makes a session"
          f" keyring per container init and per exec, all owned by uid {k0['uid']})")
        a(f"   {f['requested']} instances in one /work: {f['running']} RUNNING after {f['seconds_to_all_running']:.1f} s"
          + (f"; refused {len(f['refused'])}: {reasons(f['refused'])}" if f["refused"] else "")
          + (f"; crashed {len(f['crashed'])}: {reasons(f['crashed'])}" if f["crashed"] else ""))
        for b in c["batches"]:
            a(f"   +{b['requested']}: {b['running']} RUNNING after {b['seconds_to_all_running']:.1f} s"
              + (f"; refused {len(b['refused'])}: {reasons(b['refused'])}" if b["refused"] else "")
              + (f"; crashed {len(b['crashed'])}: {reasons(b['crashed'])}" if b["crashed"] else "")
              + ("; TIMED OUT" if b["timed_out"] else ""))
        ke = c["keys_end"]
        a(f"   running at once: {c['running_at_once']} (cell: {c['cell_state']['total_resources']['containers']} containers max,"
          f" {c['cell_state']['available_resources']['containers']} left); keys of uid {ke['uid']}:"
          f" {ke['keys']}/{ke['maxkeys']}, {ke['bytes']}/{ke['maxbytes']} bytes")
        a(f"   {'memory':<24} {'rep VmRSS (VmHWM)':>18} {'keeper':>8} {'containers: working set = rss + kernel':>40} {'host MemAvailable':>18}")
        idle = c["memory_idle"]
        for label, key in (("idle (no container)", "memory_idle"), (f"first batch: {f['running']} running", "memory_first"),
                           (f"at the end: {c['running_at_once']} running", "memory_end")):
            m = c[key]
            cm = m["containers"]
            a(f"   {label:<24} {m['rep_vmrss_mb']:7.1f} ({m['rep_vmhwm_mb']:6.1f}) MB {m['keeper_vmrss_mb']:5.1f} MB"
              f" {cm['working_set_mb']:12.0f} MB = {cm['rss_mb']:.0f} + {cm['kernel_mb']:.0f} MB in {cm['containers']:<3}"
              f" {m['host_available_mb']:12.0f} MB")
        m1 = c["memory_first"]
        if f["running"]:
            a(f"   per container: rep +{(m1['rep_vmrss_mb'] - idle['rep_vmrss_mb']) * 1024 / f['running']:.0f} KB,"
              f" cgroups {m1['containers']['working_set_mb'] * 1024 / f['running']:.0f} KB,"
              f" host (MemAvailable drop, includes loop/ext4/overlay/netns kernel memory and other processes)"
              f" {(idle['host_available_mb'] - m1['host_available_mb']) * 1024 / f['running']:.0f} KB")
        a(f"   removing them all (DELETE the LRP; the BBS asks the rep to stop each instance): DELETE returned after"
          f" {c['remove_call_s']:.1f} s, cell empty after {c['removal_s']:.1f} s" + ("" if c["emptied"] else " (NOT all removed)"))
        a(f"   cpu: {c['cpu']['machine_busy_cores']:.2f} cores busy on average over {c['cpu']['seconds']:.0f} s")
        a("")
    a("Summary")
    rows: list[tuple[str, str]] = []
    if "executor" in res:
        rows.append(("executor run() -> RUNNING p50 / p99",
                     f"{res['executor']['stages']['total']['p50']:.0f} / {res['executor']['stages']['total']['p99']:.0f} ms"))
    if "raw" in res:
        rows.append(("raw runc -> app accepting p50 / p99",
                     f"{res['raw']['stages']['total']['p50']:.0f} / {res['raw']['stages']['total']['p99']:.0f} ms"))
    if "comparison" in res:
        rows.append(("ratio executor / raw (p50)", f"{res['comparison']['ratio_p50']:.2f}x"))
        rows.append(("overhead p50", f"{res['comparison']['overhead_p50_ms']:+.0f} ms"))
    if "desired_running" in cl:
        t = cl["desired_running"]["stages"]["total"]
        rows.append(("desired -> RUNNING p50 / p99 (BBS + rep)", f"{t['p50']:.0f} / {t['p99']:.0f} ms"))
    if "capacity" in cl:
        c = cl["capacity"]
        rows.append((f"{c['first']['requested']} containers: time to all RUNNING", f"{c['first']['seconds_to_all_running']:.1f} s"))
        rows.append((f"rep RSS with {c['first']['running']} containers (VmRSS / VmHWM)",
                     f"{c['memory_first']['rep_vmrss_mb']:.0f} / {c['memory_first']['rep_vmhwm_mb']:.0f} MB"))
        rows.append(("containers one cell ran at once", f"{c['running_at_once']} of {sz.max_containers} tried"))
    for k, v in rows:
        a(f"   {k:<52} {v}")
    a("")
    a("Targets" + (" (quick run: few samples)" if quick else ""))
    for t in tv.values():
        a(f"   {t['result']:<4}  {t['description']:<58} {t['value']:>9.3f} {t['unit']:<2} (target <= {t['limit']:g} {t['unit']})")
    a("")
    a(f"wall time {wall:.0f} s")
    return "\n".join(L)


def compare(e: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
    """The p50 overhead (the target's figure) and its split by stage. The split uses means:
    stage means add up to the total's mean, p50s do not."""
    es, rs = e["stages"], r["stages"]

    def mean(stages: dict[str, Any], *names: str) -> float:
        return sum(stages[n]["mean"] for n in names)

    return {
        "executor_p50_ms": es["total"]["p50"], "raw_p50_ms": rs["total"]["p50"],
        "ratio_p50": round(es["total"]["p50"] / rs["total"]["p50"], 2),
        "overhead_p50_ms": round(es["total"]["p50"] - rs["total"]["p50"], 1),
        "overhead_mean_ms": round(es["total"]["mean"] - rs["total"]["mean"], 1),
        "rootfs_diff_ms": round(mean(es, "rootfs") - mean(rs, "rootfs"), 1),
        "runc_diff_ms": round(mean(es, "runc") - mean(rs, "runc"), 1),
        "network_diff_ms": round(mean(es, "network") - mean(rs, "network"), 1),
        "exec_ms": round(mean(es, "process_start"), 1),
        "check_diff_ms": round(mean(es, "health_check") - mean(rs, "app_ready"), 1),
        "bookkeeping_ms": round(mean(es, "resolve", "executor_before_create", "garden_other", "executor_before_start"), 1),
        "overhead_without_check_p50_ms": round(es["total"]["p50"] - es["health_check"]["p50"]
                                               - (rs["total"]["p50"] - rs["app_ready"]["p50"]), 1),
    }


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
