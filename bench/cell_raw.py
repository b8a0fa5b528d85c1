"""cell_bench.py's part 2: raw `runc run` of the same rootfs, the baseline of the executor path."""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


from agents.garden import GardenConfig  # noqa: E402
from agents.garden.rootfs import IdMapping, RootfsManager, mountpoints  # noqa: E402

from bench.cell_common import (  # noqa: E402
    APP_PORT, BENCH_ROOT, RAW_CGROUP_PARENT, RAW_NET, RAW_PREFIX, Sizes, log, ms, pct, summary)

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
