"""Bring a local cluster up and down: etcd, Consul and the BBS as background processes with
generated config and certificates (a cluster CA; server and client certificates), and with
`cells` > 0 that many reps, each in its own network namespace (cellnet.py, cells.py).

Everything lives under one directory (default ~/.pydiego/cluster); `down` stops every process
it started, removes every container, namespace, mount and rule the cells made, and removes the
directory. Processes are started in their own sessions so they outlive the CLI; their pids,
addresses and logs are recorded in cluster.json. See README.md.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from control.coordination.base import CoordinationConfig, LockInfo
from control.coordination.factory import build
from control.kit import tls
from control.kit.etcd import Etcd

from . import cellnet
from . import cells as cells_mod
from .cellnet import CellNet
from .layout import CellRecord, ClusterError, ClusterState, Layout, Process, alive
from .processes import orphans, spawn, stop_pid

Progress = Callable[[str], None]
BBS_COUNT = 2
SINGLETON_COUNT = 2  # auctioneers and convergers: one active, one standby
CONVERGENCE_INTERVAL = 5  # seconds; Diego's default is 30
# The local cluster's coordination settings: fast failover on one machine. Consul's own default
# minimum session TTL is 10 s; the cluster's Consul lowers it to 1 s (see consul.json).
COORDINATION = {"backend": "consul", "lock_ttl": 3, "presence_ttl": 4, "lock_retry_interval": 0.2,
                "lock_delay": 0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/local/bin/{name}" if os.path.exists(f"/usr/local/bin/{name}") else None)
    if path is None:
        raise ClusterError(f"`{name}` is not installed: run scripts/setup.sh first")
    return path


class Ports:
    def __init__(self, base: int) -> None:
        self.base = base
        self.n = 0

    def next(self) -> int:
        if not self.base:
            return _free_port()
        self.n += 1
        return self.base + self.n - 1


def _wait_until(check: Callable[[], bool], pid: int, what: str, log: Path, timeout: float = 30) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if not alive(pid):
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise ClusterError(f"{what} exited during start-up; last log lines ({log}):\n{tail}")
        try:
            if check():
                return time.monotonic() - start
        except (httpx.HTTPError, OSError, ValueError):
            pass
        time.sleep(0.1)
    raise ClusterError(f"{what} did not become ready within {timeout:.0f}s; see {log}")


class _Steps:
    def __init__(self, progress: Progress, total: int) -> None:
        self.progress, self.total, self.n = progress, total, 0

    def __call__(self, text: str) -> None:
        self.n += 1
        self.progress(f"[{self.n}/{self.total}] {text}")


def up(directory: Path, progress: Progress, base_port: int = 0, python: str = sys.executable,
       cells: int = 0) -> ClusterState:
    """Start the cluster (and `cells` reps, each in its own network namespace) and return its
    recorded state once every part answers; on any failure, undo what was made."""
    layout = Layout(directory)
    if layout.state.exists():
        state = ClusterState.load(layout.state)
        if all(alive(p.pid) for p in state.processes):
            progress(f"cluster already running in {layout.dir}")
            if cells != len(state.cells):
                progress(f"note: it has {len(state.cells)} cell(s); `pydiego cluster down` first to change that")
            return state
        progress("found a stopped or broken cluster; cleaning it up first")
        down(directory, progress)
    if cells and os.geteuid() != 0:
        raise ClusterError("cells need root (network namespaces, runc, mounts): run as root or with sudo")
    if not 0 <= cells <= 99:
        raise ClusterError("--cells must be between 0 and 99")
    layout.make()
    step = _Steps(progress, 8 if cells else 6)
    procs: list[Process] = []
    net: CellNet | None = None
    records: list[CellRecord] = []
    try:
        if cells:
            net = CellNet(cellnet.choose_slot(layout.dir))
        host = net.gateway if net else "127.0.0.1"
        step("generating the cluster CA and certificates")
        ca_cert, ca_key = tls.make_ca(layout.certs)
        bbs_hosts = ["127.0.0.1", "localhost", "bbs.service.cf.internal"] + ([host] if net else [])
        bbs_cert, bbs_key = tls.issue(layout.certs, "bbs", ca_cert, ca_key, bbs_hosts)
        client_cert, client_key = tls.issue(layout.certs, "client", ca_cert, ca_key, [], server=False)
        network: dict[str, Any] = {}
        if net:
            step(f"making the cells network: bridge {net.bridge} {net.gateway}/24, {cells} network namespace(s)")
            root = cells_mod.cells_root(layout.dir, net.slot)
            network = cellnet.setup(net, list(range(1, cells + 1)), layout.dir, layout.network_file, root)
            stack = cells_mod.ensure_stack()
        control = _start_control_plane(layout, step, progress, Ports(base_port), python, procs, host,
                                       (ca_cert, bbs_cert, bbs_key, client_cert, client_key))
        state = ClusterState(directory=str(layout.dir), bbs_url=control["bbs_url"], ca_cert=str(ca_cert),
                             client_cert=str(client_cert), client_key=str(client_key),
                             etcd_endpoint=control["etcd_local"], consul_address=control["consul_local"],
                             coordination=dict(control["coordination"], consul_address=control["consul_local"],
                                               etcd_endpoints=[control["etcd_local"]]),
                             processes=procs, network=network, cells=records)
        if net:
            step(f"starting {cells} cell(s): a rep in each network namespace, stack busybox at {stack}")
            records.extend(cells_mod.plan(root, net, n) for n in range(1, cells + 1))
            _start_cells(layout, net, records, stack, python, control, state, progress)
    except BaseException:
        progress("start-up failed; removing what was made")
        _undo(layout, procs, net, records, python, progress)
        raise
    state.save(layout.state)
    progress("starting the keeper (restarts any process that exits, as systemd would)")
    state.keeper_pid = spawn([python, "-m", "control.localcluster.keeper", str(layout.dir)], layout.logs / "keeper.log")
    state.save(layout.state)
    return state


def _start_cells(layout: Layout, net: CellNet, records: list[CellRecord], stack: Path, python: str,
                 control: dict[str, Any], state: ClusterState, progress: Progress) -> None:
    """Configure and start every cell's rep, then wait until all of them serve."""
    started = []
    for cell in records:
        cells_mod.write_config(cell, layout, len(records), stack, control)
        log = layout.logs / f"{cell.cell_id}.log"
        cmd = cells_mod.command(python, cell, net)
        pid = spawn(cmd, log)
        state.processes.append(Process("rep", cell.cell_id, pid, cell.rep_url, str(log), cmd=cmd))
        started.append((cell, pid, log))
    state.save(layout.state)  # from here on `down` knows every cell, even if start-up fails
    ctx = tls.client_context(state.ca_cert, state.client_cert, state.client_key)
    cells_mod.wait_ready(started, control["bbs_url"], ctx, progress)


def _undo(layout: Layout, procs: list[Process], net: CellNet | None, records: list[CellRecord], python: str,
          progress: Progress) -> None:
    """A failed `up`: stop what runs, remove the cells and their network; the logs stay."""
    cells_mod.stop_reps([p.pid for p in procs if p.component == "rep"])
    for p in reversed([p for p in procs if p.component != "rep"]):
        stop_pid(p.pid)
    if net is not None:
        leftovers = cells_mod.clean(records, net, python) + cellnet.teardown(net, layout.dir)
        if leftovers:
            progress("could not remove everything (`pydiego cluster down` retries):\n  " + "\n  ".join(leftovers))
        elif cellnet.owned_by(net, layout.dir):  # not when another `up` took the slot meanwhile
            layout.network_file.unlink(missing_ok=True)
            shutil.rmtree(cells_mod.cells_root(layout.dir, net.slot), ignore_errors=True)
    layout.state.unlink(missing_ok=True)


def _start_control_plane(layout: Layout, step: _Steps, progress: Progress, ports: Ports, python: str,
                         procs: list[Process], host: str, certs: tuple[Path, ...]) -> dict[str, Any]:
    """etcd, Consul and the BBS processes. With cells, etcd and Consul also listen on `host` (the
    cells bridge's address) and the BBS listens there (it is a host address too), so reps in
    their network namespaces reach all three. Returns the addresses as seen from a cell."""
    ca_cert, bbs_cert, bbs_key, client_cert, client_key = certs
    step("starting etcd")
    etcd_port, peer_port = ports.next(), ports.next()
    listen = ",".join(dict.fromkeys(f"http://{h}:{etcd_port}" for h in ("127.0.0.1", host)))
    log = layout.logs / "etcd.log"
    cmd = [_binary("etcd"), "--name", "local", "--data-dir", str(layout.data("etcd")),
           "--listen-client-urls", listen, "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
           "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
           "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
           "--initial-cluster", f"local=http://127.0.0.1:{peer_port}",
           "--max-txn-ops", "20000", "--max-request-bytes", "33554432",
           "--quota-backend-bytes", str(8 * 1024**3), "--log-level", "warn"]
    pid = spawn(cmd, log)
    procs.append(Process("etcd", "etcd", pid, f"127.0.0.1:{etcd_port}", str(log), cmd=cmd))
    took = _wait_until(lambda: httpx.get(f"http://127.0.0.1:{etcd_port}/health", timeout=1).json()["health"] == "true",
                       pid, "etcd", log)
    progress(f"      etcd ready on {listen.replace('http://', '')} ({took:.1f}s)")

    step("starting Consul")
    consul_port = ports.next()
    consul_cfg = layout.config / "consul.json"
    consul_cfg.write_text(json.dumps({
        # single-node server with persistent state: a restart keeps sessions and locks
        "session_ttl_min": "1s", "disable_update_check": True, "performance": {"raft_multiplier": 1},
        "ports": {"http": consul_port, "dns": -1, "grpc": -1, "serf_lan": ports.next(),
                  "serf_wan": ports.next(), "server": ports.next()}}))
    log = layout.logs / "consul.log"
    clients = " ".join(dict.fromkeys(("127.0.0.1", host)))
    cmd = [_binary("consul"), "agent", "-server", "-bootstrap-expect", "1",
           "-data-dir", str(layout.data("consul")), "-bind", "127.0.0.1", "-client", clients,
           "-node", "pydiego-local", "-config-file", str(consul_cfg), "-log-level", "warn"]
    pid = spawn(cmd, log)
    procs.append(Process("consul", "consul", pid, f"127.0.0.1:{consul_port}", str(log), cmd=cmd))
    took = _wait_until(lambda: bool(httpx.get(f"http://{host}:{consul_port}/v1/status/leader", timeout=1).json())
                       and httpx.put(f"http://127.0.0.1:{consul_port}/v1/kv/pydiego-ready", content=b"1",
                                     timeout=1).status_code == 200, pid, "consul", log)
    progress(f"      Consul ready on {clients.replace(' ', ', ')} port {consul_port} ({took:.1f}s)")
    coordination = dict(COORDINATION, consul_address=f"{host}:{consul_port}")

    step(f"starting {BBS_COUNT} BBS processes (one active, the others standby)")
    ctx = tls.client_context(ca_cert, client_cert, client_key)
    bbs_url = ""
    for n in range(BBS_COUNT):
        bbs_port = ports.next()
        url = f"https://{host}:{bbs_port}"
        cfg_path = layout.config / f"bbs-{n}.yml"
        cfg_path.write_text(yaml.safe_dump({
            "listen_address": f"{host}:{bbs_port}", "etcd_endpoints": [f"127.0.0.1:{etcd_port}"],
            "ca_cert": str(ca_cert), "server_cert": str(bbs_cert), "server_key": str(bbs_key),
            "client_cert": str(bbs_cert), "client_key": str(bbs_key), "instance_name": f"bbs-{n}",
            "coordination": coordination,
        }))
        log = layout.logs / f"bbs-{n}.log"
        cmd = [python, "-m", "control.bbs", "--config", str(cfg_path)]
        pid = spawn(cmd, log)
        procs.append(Process("bbs", f"bbs-{n}", pid, url, str(log), active=False, cmd=cmd))
        if n == 0:
            took = _wait_until(lambda: httpx.get(f"{url}/v1/ping", verify=ctx, timeout=1).json()["available"],
                               pid, "the BBS", log)
            progress(f"      bbs-0 active on {url} ({took:.1f}s)")
            bbs_url = url
        else:
            time.sleep(0.3)
            if not alive(pid):
                raise ClusterError(f"bbs-{n} exited during start-up; see {log}")
            progress(f"      bbs-{n} standby on {url}")
    step(f"starting {SINGLETON_COUNT} auctioneers (one active, the other standby)")
    common = {"ca_cert": str(ca_cert), "server_cert": str(bbs_cert), "server_key": str(bbs_key),
              "client_cert": str(bbs_cert), "client_key": str(bbs_key), "bbs_url": bbs_url,
              "etcd_endpoints": [f"127.0.0.1:{etcd_port}"], "coordination": coordination}
    _start_singletons(layout, "auctioneer", "control.auctioneer", python, procs, progress, ports, host, ctx,
                      lambda n, listen: {**common, "listen_address": listen, "instance_name": f"auctioneer-{n}",
                                         "cell_state_timeout": 2, "work_timeout": 5})
    step(f"starting {SINGLETON_COUNT} convergers (one active, the other standby)")
    converger = {k: v for k, v in common.items() if k != "bbs_url"}
    _start_singletons(layout, "converger", "control.converger", python, procs, progress, ports, host, ctx,
                      lambda n, listen: {**converger, "listen_address": listen, "instance_name": f"converger-{n}",
                                         # the local cluster converges faster than Diego's 30 s defaults
                                         "interval": CONVERGENCE_INTERVAL, "stale_unclaimed": CONVERGENCE_INTERVAL})
    return {"bbs_url": bbs_url, "coordination": coordination, "consul_address": f"{host}:{consul_port}",
            "consul_local": f"127.0.0.1:{consul_port}", "etcd_endpoint": f"{host}:{etcd_port}",
            "etcd_local": f"127.0.0.1:{etcd_port}"}


def _start_singletons(layout: Layout, component: str, module: str, python: str, procs: list[Process],
                      progress: Progress, ports: Ports, host: str, ctx: Any,
                      config: Callable[[int, str], dict[str, Any]]) -> None:
    """SINGLETON_COUNT copies of a locked component: the first is waited for until it serves
    /ping (it holds the lock), the others stand by at the lock."""
    for n in range(SINGLETON_COUNT):
        port = ports.next()
        url = f"https://{host}:{port}"
        cfg_path = layout.config / f"{component}-{n}.yml"
        cfg_path.write_text(yaml.safe_dump(config(n, f"{host}:{port}")))
        log = layout.logs / f"{component}-{n}.log"
        cmd = [python, "-m", module, "--config", str(cfg_path)]
        pid = spawn(cmd, log)
        procs.append(Process(component, f"{component}-{n}", pid, url, str(log), active=False, cmd=cmd))
        if n == 0:
            took = _wait_until(lambda: httpx.get(f"{url}/ping", verify=ctx, timeout=1).status_code == 200,
                               pid, f"the {component}", log)
            progress(f"      {component}-0 active on {url} ({took:.1f}s)")
        else:
            time.sleep(0.3)
            if not alive(pid):
                raise ClusterError(f"{component}-{n} exited during start-up; see {log}")
            progress(f"      {component}-{n} standby on {url}")


def _network(layout: Layout, state: ClusterState | None) -> tuple[CellNet, Path] | None:
    """This cluster's cells network and cells root, if it has (or may still have) them: from the
    state file, network.json, or the bridge's alias. A slot whose bridge now carries another
    directory's alias was taken over by another cluster: not ours to remove."""
    doc: dict[str, Any] = dict(state.network) if state is not None and state.network else {}
    if not doc:
        try:
            doc = json.loads(layout.network_file.read_text())
        except (OSError, ValueError):
            slot = cellnet.find_slot(layout.dir)
            doc = {"slot": slot} if slot is not None else {}
    if "slot" not in doc:
        return None
    net = CellNet(int(doc["slot"]))
    if not cellnet.owned_by(net, layout.dir):
        return None
    root = Path(doc.get("cells_root") or cells_mod.cells_root(layout.dir, net.slot))
    return net, root


def _known_cells(root: Path, net: CellNet, state: ClusterState | None) -> list[CellRecord]:
    """The cells to clean: recorded ones, else every cell with a directory or a netns."""
    if state is not None and state.cells:
        return state.cells
    numbers = set(net.cells_present())
    if root.is_dir():
        numbers.update(int(p.name) for p in root.iterdir() if p.name.isdigit())
    return [cells_mod.plan(root, net, n) for n in sorted(numbers)]


def _stop_all(layout: Layout, state: ClusterState | None, roots: list[Path], progress: Progress) -> None:
    """The keeper first (so nothing is restarted behind our back), the reps in place (SIGINT),
    then the BBS, Consul and etcd; then any process of the cluster no record knew about."""
    if state is not None:
        if state.keeper_pid:
            stop_pid(state.keeper_pid)
            if layout.state.exists():  # the keeper may have recorded new pids
                state = ClusterState.load(layout.state)
        reps = [p for p in state.processes if p.component == "rep"]
        if reps:
            progress(f"stopping {len(reps)} rep(s) in place: {', '.join(p.name for p in reps)}")
            cells_mod.stop_reps([p.pid for p in reps])
        for proc in reversed([p for p in state.processes if p.component != "rep"]):  # the BBS first, etcd last
            progress(f"stopping {proc.name} (pid {proc.pid})")
            stop_pid(proc.pid)
    left = orphans(roots)
    if left:
        progress(f"stopping {len(left)} leftover process(es) of this cluster")
        for pid, kind in left:
            if kind == "keeper":
                stop_pid(pid)
        cells_mod.stop_reps([pid for pid, kind in left if kind == "rep"])
        for pid, _ in left:
            stop_pid(pid)


def down(directory: Path, progress: Progress, python: str = sys.executable) -> bool:
    """Stop everything, remove every container, namespace, mount and rule the cluster made, then
    the directory. Idempotent; works from whatever is left (state file, network.json, the
    bridge's alias, processes naming the directory)."""
    layout = Layout(directory)
    state = ClusterState.load(layout.state) if layout.state.exists() else None
    network = _network(layout, state)
    roots = [layout.dir] + ([network[1]] if network else [])
    if state is None and network is None and not orphans(roots):
        if layout.dir.exists() and (layout.dir / "certs").exists():
            shutil.rmtree(layout.dir, ignore_errors=True)
        progress(f"no cluster in {layout.dir}")
        return False
    _stop_all(layout, state, roots, progress)
    failures: list[str] = []
    if network is not None:
        net, root = network
        cells = _known_cells(root, net, state)
        if cells:
            progress(f"removing the containers of {len(cells)} cell(s)")
            failures += cells_mod.clean(cells, net, python)
        progress(f"removing the cells network ({net.bridge}, {len(net.cells_present())} namespace(s), rules)")
        failures += cellnet.teardown(net, layout.dir)
        if not failures:
            shutil.rmtree(root, ignore_errors=True)
    if failures:
        raise ClusterError("cluster down incomplete (run it again; the directory is kept):\n  " + "\n  ".join(failures))
    shutil.rmtree(layout.dir, ignore_errors=True)
    progress(f"cluster in {layout.dir} stopped and removed")
    return True


def _lock_holder(state: ClusterState, name: str) -> LockInfo | None:
    if not state.coordination:
        return None
    cfg = CoordinationConfig.model_validate(state.coordination)

    async def read() -> LockInfo | None:
        etcd = Etcd(cfg.etcd_endpoints)
        coordinator = build(cfg, etcd)
        await coordinator.open()
        try:
            return await coordinator.holder(name)
        finally:
            await coordinator.close()
            await etcd.close()
    try:
        return asyncio.run(asyncio.wait_for(read(), timeout=10))
    except Exception:  # the coordination store is down: nobody is known to hold the lock
        return None


def status(directory: Path) -> tuple[ClusterState | None, dict[str, bool]]:
    """The recorded state refreshed: which processes live, which BBS holds the lock (`active`),
    and whether the active BBS answers."""
    layout = Layout(directory)
    if not layout.state.exists():
        return None, {}
    state = ClusterState.load(layout.state)
    health: dict[str, bool] = {}
    locked = {p.component for p in state.processes} & {"bbs", "auctioneer", "converger"}
    holders = {name: _lock_holder(state, name) for name in sorted(locked)}
    for proc in state.processes:
        running = alive(proc.pid)
        health[proc.name] = running
        if proc.component in holders:
            holder = holders[proc.component]
            proc.active = running and holder is not None and holder.doc.get("owner") == proc.name
            if proc.active and proc.component == "bbs":
                state.bbs_url = proc.address
        else:
            proc.active = running
    try:
        ctx = tls.client_context(state.ca_cert, state.client_cert, state.client_key)
        health["bbs_api"] = bool(httpx.get(f"{state.bbs_url}/v1/ping", verify=ctx, timeout=2).json()["available"])
    except (httpx.HTTPError, ValueError, OSError):
        health["bbs_api"] = False
    return state, health
