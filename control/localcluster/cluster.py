"""Bring a local cluster up and down: etcd, Consul and the BBS as background processes with
generated config and certificates (a cluster CA; server and client certificates).

Everything lives under one directory (default ~/.pydiego/cluster); `down` stops every process
it started and removes the directory. Processes are started in their own sessions so they
outlive the CLI; their pids, addresses and logs are recorded in cluster.json.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from control.coordination.base import CoordinationConfig, LockInfo
from control.coordination.factory import build
from control.kit import tls
from control.kit.etcd import Etcd

from .layout import ClusterState, Layout, Process, alive

Progress = Callable[[str], None]
BBS_COUNT = 2
# The local cluster's coordination settings: fast failover on one machine. Consul's own default
# minimum session TTL is 10 s; the cluster's Consul lowers it to 1 s (see consul.json).
COORDINATION = {"backend": "consul", "lock_ttl": 3, "presence_ttl": 4, "lock_retry_interval": 0.2,
                "lock_delay": 0}


class ClusterError(Exception):
    pass


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


def spawn(cmd: list[str], log: Path) -> int:
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return proc.pid


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


def up(directory: Path, progress: Progress, base_port: int = 0, python: str = sys.executable) -> ClusterState:
    layout = Layout(directory)
    if layout.state.exists():
        state = ClusterState.load(layout.state)
        if all(alive(p.pid) for p in state.processes):
            progress(f"cluster already running in {layout.dir}")
            return state
        progress("found a stopped or broken cluster; cleaning it up first")
        down(directory, progress)
    layout.make()
    ports = Ports(base_port)
    procs: list[Process] = []
    try:
        progress("[1/4] generating the cluster CA and certificates")
        ca_cert, ca_key = tls.make_ca(layout.certs)
        bbs_cert, bbs_key = tls.issue(layout.certs, "bbs", ca_cert, ca_key, ["127.0.0.1", "localhost", "bbs.service.cf.internal"])
        client_cert, client_key = tls.issue(layout.certs, "client", ca_cert, ca_key, [], server=False)

        progress("[2/4] starting etcd")
        etcd_port, peer_port = ports.next(), ports.next()
        log = layout.logs / "etcd.log"
        cmd = [_binary("etcd"), "--name", "local", "--data-dir", str(layout.data("etcd")),
                      "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                      "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                      "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                      "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                      "--initial-cluster", f"local=http://127.0.0.1:{peer_port}",
                      "--max-txn-ops", "20000", "--max-request-bytes", "33554432",
                      "--quota-backend-bytes", str(8 * 1024**3), "--log-level", "warn"]
        pid = spawn(cmd, log)
        procs.append(Process("etcd", "etcd", pid, f"127.0.0.1:{etcd_port}", str(log), cmd=cmd))
        took = _wait_until(lambda: httpx.get(f"http://127.0.0.1:{etcd_port}/health", timeout=1).json()["health"] == "true",
                           pid, "etcd", log)
        progress(f"      etcd ready on 127.0.0.1:{etcd_port} ({took:.1f}s)")

        progress("[3/4] starting Consul")
        consul_port = ports.next()
        consul_cfg = layout.config / "consul.json"
        consul_cfg.write_text(json.dumps({
            # single-node server with persistent state: a restart keeps sessions and locks
            "session_ttl_min": "1s", "disable_update_check": True, "performance": {"raft_multiplier": 1},
            "ports": {"http": consul_port, "dns": -1, "grpc": -1, "serf_lan": ports.next(),
                      "serf_wan": ports.next(), "server": ports.next()}}))
        log = layout.logs / "consul.log"
        cmd = [_binary("consul"), "agent", "-server", "-bootstrap-expect", "1",
                      "-data-dir", str(layout.data("consul")), "-bind", "127.0.0.1", "-client", "127.0.0.1",
                      "-node", "pydiego-local", "-config-file", str(consul_cfg), "-log-level", "warn"]
        pid = spawn(cmd, log)
        procs.append(Process("consul", "consul", pid, f"127.0.0.1:{consul_port}", str(log), cmd=cmd))
        took = _wait_until(lambda: bool(httpx.get(f"http://127.0.0.1:{consul_port}/v1/status/leader", timeout=1).json())
                           and httpx.put(f"http://127.0.0.1:{consul_port}/v1/kv/pydiego-ready", content=b"1",
                                         timeout=1).status_code == 200, pid, "consul", log)
        progress(f"      Consul ready on 127.0.0.1:{consul_port} ({took:.1f}s)")
        coordination = dict(COORDINATION, consul_address=f"127.0.0.1:{consul_port}")

        progress(f"[4/4] starting {BBS_COUNT} BBS processes (one active, the others standby)")
        ctx = tls.client_context(ca_cert, client_cert, client_key)
        for n in range(BBS_COUNT):
            bbs_port = ports.next()
            url = f"https://127.0.0.1:{bbs_port}"
            cfg_path = layout.config / f"bbs-{n}.yml"
            cfg_path.write_text(yaml.safe_dump({
                "listen_address": f"127.0.0.1:{bbs_port}", "etcd_endpoints": [f"127.0.0.1:{etcd_port}"],
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
    except BaseException:
        for p in procs:
            _stop_pid(p.pid)
        raise
    state = ClusterState(directory=str(layout.dir), bbs_url=bbs_url, ca_cert=str(ca_cert), client_cert=str(client_cert),
                         client_key=str(client_key), etcd_endpoint=f"127.0.0.1:{etcd_port}",
                         consul_address=f"127.0.0.1:{consul_port}",
                         coordination=dict(coordination, etcd_endpoints=[f"127.0.0.1:{etcd_port}"]),
                         processes=procs)
    state.save(layout.state)
    progress("starting the keeper (restarts any process that exits, as systemd would)")
    state.keeper_pid = spawn([python, "-m", "control.localcluster.keeper", str(layout.dir)], layout.logs / "keeper.log")
    state.save(layout.state)
    return state


def _stop_pid(pid: int, grace: float = 10.0) -> None:
    if not alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)
    if alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def down(directory: Path, progress: Progress) -> bool:
    layout = Layout(directory)
    if not layout.state.exists():
        if layout.dir.exists() and (layout.dir / "certs").exists():
            shutil.rmtree(layout.dir, ignore_errors=True)
        progress(f"no cluster in {layout.dir}")
        return False
    state = ClusterState.load(layout.state)
    if state.keeper_pid:
        _stop_pid(state.keeper_pid)  # first, so nothing is restarted behind our back
        state = ClusterState.load(layout.state)
    for proc in reversed(state.processes):  # the BBS first, etcd last
        progress(f"stopping {proc.name} (pid {proc.pid})")
        _stop_pid(proc.pid)
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
    holder = _lock_holder(state, "bbs")
    for proc in state.processes:
        running = alive(proc.pid)
        health[proc.name] = running
        if proc.component == "bbs":
            proc.active = running and holder is not None and holder.doc.get("owner") == proc.name
            if proc.active:
                state.bbs_url = proc.address
        else:
            proc.active = running
    try:
        ctx = tls.client_context(state.ca_cert, state.client_cert, state.client_key)
        health["bbs_api"] = bool(httpx.get(f"{state.bbs_url}/v1/ping", verify=ctx, timeout=2).json()["available"])
    except (httpx.HTTPError, ValueError, OSError):
        health["bbs_api"] = False
    return state, health
