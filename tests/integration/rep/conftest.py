"""The rep's world: a real BBS daemon (mTLS) over the session etcd, and real rep daemons
(`python -m agents.rep`) driving runc, each with its own garden tag, container subnet, host
port range, depot and executor state. The auctioneer comes later: tests post /work themselves.

After each test every rep is stopped and everything its backend made is removed; `assert_clean`
checks that for one rep at any point.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agents.garden import build_busybox_stack, cleanup_all
from control.client.bbs_client import BBSClient
from control.kit import tls
from tests.integration.conftest import Certs, Daemon
from tests.servers import EtcdServer, free_port
from tests.slots import hold_slot, slot_dir

ROOT = Path(__file__).resolve().parents[3]
REP_TEST_ROOT = Path("/var/tmp/pydiego-rep-tests")
_counter = itertools.count()


def spawn_until_ping(module: str, config: Path, log: Path, http: Callable[[], httpx.Client],
                     timeout: float) -> subprocess.Popen:  # type: ignore[type-arg]
    """`python -m module --config config`, output appended to `log`; returns once /ping answers."""
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", module, "--config", str(config)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    with http() as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{module} exited early:\n{log.read_text(errors='replace')[-4000:]}"
            try:
                if client.get("/ping").status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    raise AssertionError(f"{module} not ready:\n{log.read_text(errors='replace')[-4000:]}")


@dataclass
class RepDaemon:
    cell_id: str
    config_path: Path
    log: Path
    port: int
    admin_port: int
    depot: Path
    state_dir: Path
    certs: Certs
    config: dict[str, Any]
    proc: subprocess.Popen | None = None  # type: ignore[type-arg]
    starts: int = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def http(self, timeout: float = 10) -> httpx.Client:
        ctx = tls.client_context(self.certs.ca, self.certs.client_cert, self.certs.client_key)
        return httpx.Client(base_url=self.url, verify=ctx, timeout=timeout)

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.admin_port}", timeout=10)

    def start(self, timeout: float = 30) -> "RepDaemon":
        self.starts += 1
        self.proc = spawn_until_ping("agents.rep", self.config_path, self.log, self.http, timeout)
        return self

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()

    def state(self) -> dict[str, Any]:
        with self.http() as client:
            resp = client.get("/state")
            resp.raise_for_status()
            return resp.json()  # type: ignore[no-any-return]

    def post_work(self, lrps: list[dict[str, Any]] = (), tasks: list[dict[str, Any]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
        with self.http() as client:
            resp = client.post("/work", json={"cell_id": self.cell_id, "lrps": list(lrps), "tasks": list(tasks)})
            assert resp.status_code == 200, resp.text
            return resp.json()  # type: ignore[no-any-return]


@dataclass
class AuctioneerDaemon:
    config_path: Path
    log: Path
    port: int
    certs: Certs
    proc: subprocess.Popen | None = None  # type: ignore[type-arg]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def http(self) -> httpx.Client:
        ctx = tls.client_context(self.certs.ca, self.certs.client_cert, self.certs.client_key)
        return httpx.Client(base_url=self.url, verify=ctx, timeout=10)

    def start(self, timeout: float = 20) -> "AuctioneerDaemon":
        self.proc = spawn_until_ping("control.auctioneer", self.config_path, self.log, self.http, timeout)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class World:
    bbs: Daemon
    reps: list[RepDaemon] = field(default_factory=list)
    auctioneers: list[AuctioneerDaemon] = field(default_factory=list)

    def client(self) -> BBSClient:
        ctx = tls.client_context(self.bbs.certs.ca, self.bbs.certs.client_cert, self.bbs.certs.client_key)
        return BBSClient(self.bbs.url, tls=ctx, retries=2)


SLOTS = 5  # concurrent test runs on one machine: each holds a slot (flock) and keeps to its names


@pytest.fixture(scope="session")
def rep_slot() -> Iterator[int]:
    with hold_slot(REP_TEST_ROOT, SLOTS, "rep") as slot:
        yield slot


@pytest.fixture(scope="session")
def rep_root(rep_slot: int) -> Iterator[Path]:
    """This run's directory (slot-<n>); leftovers of a killed run in the same slot are swept first."""
    with slot_dir(REP_TEST_ROOT / f"slot-{rep_slot}", "*/garden") as root:
        yield root


@pytest.fixture(scope="session")
def rep_stack(rep_root: Path) -> Path:
    return build_busybox_stack(rep_root / "stack-busybox")


@pytest.fixture
def world(make_daemon: Any, etcd_server: EtcdServer, key_prefix: str, certs: Certs, rep_root: Path,
          rep_stack: Path, rep_slot: int) -> Iterator[Any]:
    bbs = make_daemon(client_cert=str(certs.client_cert), client_key=str(certs.client_key)).start()
    w = World(bbs)

    def add_rep(**overrides: Any) -> RepDaemon:
        n = next(_counter) % 100
        home = rep_root / f"cell-{n}"
        if home.exists():
            shutil.rmtree(home)
        home.mkdir(parents=True)
        port, admin_port = free_port(), free_port()
        cfg: dict[str, Any] = {
            "cell_id": f"cell-{os.getpid()}-{n}", "zone": "z1",
            "listen_address": f"127.0.0.1:{port}", "admin_listen_address": f"127.0.0.1:{admin_port}",
            "external_ip": "127.0.0.1",
            "ca_cert": str(certs.ca), "server_cert": str(certs.server_cert), "server_key": str(certs.server_key),
            "client_cert": str(certs.client_cert), "client_key": str(certs.client_key),
            "bbs_url": bbs.url,
            "coordination": {"backend": "etcd", "etcd_endpoints": [etcd_server.endpoint], "key_prefix": key_prefix},
            "stacks": {"busybox": str(rep_stack)},
            "image_cache_dir": str(home / "images"),
            "insecure_registries": ["127.0.0.1"],
            "garden": {"depot_dir": str(home / "garden"), "tag": f"r{rep_slot}{n}",
                       "bridge_subnet": f"10.{230 + rep_slot}.{n}.0/24",
                       "port_range_start": 20000 + 1000 * rep_slot + 20 * (n % 50),
                       "port_range_end": 20000 + 1000 * rep_slot + 20 * (n % 50) + 19},
            "executor": {"state_dir": str(home / "executor"), "memory_mb": 2048, "disk_mb": 4096, "containers": 20,
                         "graceful_shutdown_interval": 2, "unhealthy_monitoring_interval": 0.2,
                         "healthy_monitoring_interval": 1, "reserved_expiration": 10, "reaper_interval": 1},
            "polling_interval": 2, "evacuation_polling_interval": 0.5, "evacuation_timeout": 30,
            "log_level": "debug",
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        path = home / "rep.yml"
        path.write_text(yaml.safe_dump(cfg))
        rep = RepDaemon(cfg["cell_id"], path, home / "rep.log", port, admin_port, home / "garden",
                        home / "executor", certs, cfg)
        w.reps.append(rep)
        return rep

    def add_auctioneer(**overrides: Any) -> AuctioneerDaemon:
        port = free_port()
        cfg: dict[str, Any] = {
            "listen_address": f"127.0.0.1:{port}", "bbs_url": bbs.url,
            "ca_cert": str(certs.ca), "server_cert": str(certs.server_cert), "server_key": str(certs.server_key),
            "client_cert": str(certs.client_cert), "client_key": str(certs.client_key),
            "etcd_endpoints": [etcd_server.endpoint], "key_prefix": key_prefix,
            "coordination": {"backend": "etcd"}, "cell_state_timeout": 2, "work_timeout": 5, "log_level": "debug",
        }
        cfg.update(overrides)
        home = rep_root / f"auctioneer-{os.getpid()}-{next(_counter)}"
        home.mkdir(parents=True)
        path = home / "auctioneer.yml"
        path.write_text(yaml.safe_dump(cfg))
        daemon = AuctioneerDaemon(path, home / "auctioneer.log", port, certs)
        w.auctioneers.append(daemon)
        return daemon

    w.add_rep = add_rep  # type: ignore[attr-defined]
    w.add_auctioneer = add_auctioneer  # type: ignore[attr-defined]
    try:
        yield w
    finally:
        print(f"---- log of the BBS ----\n{bbs.log.read_text(errors='replace')[-6000:]}")
        for auctioneer in w.auctioneers:
            auctioneer.kill()
            print(f"---- log of auctioneer ----\n{auctioneer.log.read_text(errors='replace')[-8000:]}")
        for rep in w.reps:
            rep.kill()
            print(f"---- log of rep {rep.cell_id} ----\n{rep.tail(12000)}")  # shown when the test failed
            asyncio.run(cleanup_all(rep.depot))


def wait_for(check: Any, timeout: float = 20, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")
