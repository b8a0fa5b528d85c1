"""The cells of a local cluster: one rep per cell, each in its own network namespace (cellnet.py).

A cell is planned from (cells root, slot, n) alone, so `down` can rebuild the plan of a cell
whose records are lost. Each rep gets its own directories under `<dir>/cells/<n>/` (garden
depot, executor state, image cache; `cells_root` says when they live elsewhere), its own
garden tag `<slot>c<n>` (cgroups and netns names never collide), a server/client certificate
for its netns address, and reaches etcd, Consul and the BBS on the cells bridge's address.
It runs as

    nsenter --net=/run/netns/pdcell<k>-<n> -- python -m agents.rep --config <dir>/cells/<n>/rep.yml

Only the network namespace is entered (not `ip netns exec`, which also makes a mount namespace):
the backend's overlay and loop mounts stay visible to the host, to `cluster down` and to a
restarted rep, which re-adopts its containers.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from control.kit import tls

from .cellnet import CellNet
from .layout import CellRecord, ClusterError, Layout, alive

REP_PORT = 1801
STACK_DIR = Path("/var/lib/pydiego/stacks/busybox")
CELLS_FALLBACK = Path("/var/lib/pydiego/localcluster")
POLLING_INTERVAL_S = 5  # the bulk harmonizer pass: shorter than Diego's 30 s, it is one machine
READY_TIMEOUT_S = 90.0


class CellError(ClusterError):
    pass


def traversable(directory: Path) -> bool:
    """Whether every existing ancestor lets others search it (o+x)."""
    for d in [directory, *directory.parents]:
        if d.exists() and not d.stat().st_mode & 0o001:
            return False
    return True


def cells_root(directory: Path, slot: int) -> Path:
    """Where the cells' directories go: `<dir>/cells`, unless some ancestor of the cluster
    directory is closed to others (as /root and pytest's temporary directories are). An
    unprivileged container's root is an unprivileged host uid, and runc mounts the container's
    rootfs from under the depot as that uid, so every directory above a depot must be searchable:
    then the cells live in CELLS_FALLBACK/cells<slot> (removed by `down` as well)."""
    return directory / "cells" if traversable(directory) else CELLS_FALLBACK / f"cells{slot}"


def plan(root: Path, net: CellNet, n: int) -> CellRecord:
    """Cell `n`, derived from the cells root and the slot alone (so `down` can rebuild it)."""
    home = root / str(n)
    return CellRecord(n=n, cell_id=f"cell-{n}", netns=net.netns(n), address=net.address(n),
                      rep_url=f"https://{net.address(n)}:{REP_PORT}", zone=f"z{(n - 1) % 2 + 1}",
                      config=str(home / "rep.yml"), depot=str(home / "garden"), tag=net.tag(n),
                      bridge_subnet=net.container_subnet(n))


def ensure_stack(target: Path = STACK_DIR) -> Path:
    """The busybox stack every cell offers (scripts/setup.sh builds it too); built once."""
    if not (target / "etc" / "group").exists():  # written last by the builder
        from agents.garden.stacks import build_busybox_stack
        build_busybox_stack(target)
    return target


def _share(count: int, where: Path) -> tuple[int, int]:
    """Memory and disk (MB) per cell: the machine's memory and half the free space of `where`'s
    file system, split evenly, as if the cells were machines (they would otherwise all offer all)."""
    mem_mb = 4096
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_mb = int(line.split()[1]) // 1024
    except OSError:
        pass
    st = os.statvfs(where)
    disk_mb = st.f_bavail * st.f_frsize // 2**20
    return max(512, (mem_mb - 1024) // count), max(1024, disk_mb // 2 // count)


def write_config(cell: CellRecord, layout: Layout, count: int, stack: Path, control: dict[str, Any]) -> Path:
    """Render the rep's config (agents/rep/config.py RepConfig) and issue its certificates.
    `control` holds bbs_url, consul_address, etcd_endpoint and coordination as seen from a cell."""
    home = Path(cell.config).parent
    home.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = layout.certs / "ca.crt", layout.certs / "ca.key"
    cert, key = tls.issue(layout.certs, f"rep-{cell.n}", ca_cert, ca_key,
                          [cell.address, "127.0.0.1", "localhost", cell.cell_id])
    memory_mb, disk_mb = _share(count, home)
    doc = {
        "cell_id": cell.cell_id, "zone": cell.zone,
        "listen_address": f"{cell.address}:{REP_PORT}", "admin_listen_address": "127.0.0.1:1800",
        "external_ip": cell.address,
        "ca_cert": str(ca_cert), "server_cert": str(cert), "server_key": str(key),
        "client_cert": str(cert), "client_key": str(key),
        "bbs_url": control["bbs_url"],
        "coordination": dict(control["coordination"], consul_address=control["consul_address"],
                             etcd_endpoints=[control["etcd_endpoint"]]),
        "stacks": {"busybox": str(stack)},
        "image_cache_dir": str(home / "images"),
        "garden": {"depot_dir": cell.depot, "tag": cell.tag, "bridge_subnet": cell.bridge_subnet},
        "executor": {"state_dir": str(home / "executor"), "memory_mb": memory_mb, "disk_mb": disk_mb},
        "polling_interval": POLLING_INTERVAL_S,
    }
    Path(cell.config).write_text(yaml.safe_dump(doc, sort_keys=False))
    return Path(cell.config)


def command(python: str, cell: CellRecord, net: CellNet) -> list[str]:
    return ["nsenter", f"--net={net.netns_path(cell.n)}", "--", python, "-m", "agents.rep", "--config", cell.config]


def wait_ready(cells: list[tuple[CellRecord, int, Path]], bbs_url: str, ctx: Any,
               progress: Callable[[str], None], timeout: float = READY_TIMEOUT_S) -> None:
    """Until every rep answers /ping (mutual TLS, from the host) and its presence is in the BBS."""
    start = time.monotonic()
    pending = {cell.cell_id: (cell, pid, log) for cell, pid, log in cells}
    with httpx.Client(verify=ctx, timeout=2) as http:
        while pending:
            if time.monotonic() - start > timeout:
                raise CellError(f"{', '.join(sorted(pending))} not ready within {timeout:.0f}s; see "
                                + ", ".join(str(log) for _, _, log in pending.values()))
            try:
                present = {c["cell_id"] for c in http.get(f"{bbs_url}/v1/cells").json()}
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                present = set()
            for cell_id, (cell, pid, log) in list(pending.items()):
                if not alive(pid):
                    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise CellError(f"the rep of {cell_id} exited during start-up; last log lines ({log}):\n{tail}")
                try:
                    pinged = http.get(f"{cell.rep_url}/ping").status_code == 200
                except httpx.HTTPError:
                    pinged = False
                if pinged and cell_id in present:
                    progress(f"      {cell_id} ready at {cell.rep_url} ({cell.zone}, netns {cell.netns}, "
                             f"{time.monotonic() - start:.1f}s)")
                    del pending[cell_id]
            time.sleep(0.2)


def stop_reps(pids: list[int], grace: float = 15.0) -> None:
    """SIGINT (stop in place: containers keep running, `clean` removes them), then SIGKILL."""
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def clean(cells: list[CellRecord], net: CellNet, python: str) -> list[str]:
    """Remove every container of each cell and what its backend made (cellclean.py, run inside
    the cell's netns when it still exists), all cells at once. Returns what failed."""
    procs = []
    for cell in cells:
        inner = [python, "-m", "control.localcluster.cellclean", cell.depot, "--tag", cell.tag,
                 "--bridge-subnet", cell.bridge_subnet]
        ns = net.netns_path(cell.n)
        cmd = ["nsenter", f"--net={ns}", "--", *inner] if ns.exists() else inner
        procs.append((cell, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                             cwd=Path(__file__).resolve().parents[2])))
    failures = []
    for cell, proc in procs:
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        if proc.returncode != 0:
            failures.append(f"{cell.cell_id}: {out.strip()[-1000:]}")
    return failures
