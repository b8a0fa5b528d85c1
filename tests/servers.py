"""Real etcd and Consul servers for tests, on free loopback ports in a temporary directory."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {timeout}s:\n{log.read_text()[-2000:]}")


@dataclass
class EtcdServer:
    directory: Path
    client_port: int = 0
    peer_port: int = 0
    proc: subprocess.Popen | None = None  # type: ignore[type-arg]

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self) -> "EtcdServer":
        self.client_port = self.client_port or free_port()
        self.peer_port = self.peer_port or free_port()
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "etcd.log"
        cmd = [shutil.which("etcd") or "etcd", "--name", "test", "--data-dir", str(self.directory / "data"),
               "--listen-client-urls", f"http://127.0.0.1:{self.client_port}",
               "--advertise-client-urls", f"http://127.0.0.1:{self.client_port}",
               "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
               "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
               "--initial-cluster", f"test=http://127.0.0.1:{self.peer_port}",
               "--max-txn-ops", "20000", "--max-request-bytes", "33554432",
               "--quota-backend-bytes", str(8 * 1024**3), "--log-level", "warn"]
        with log.open("ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait(lambda: httpx.get(f"http://{self.endpoint}/health", timeout=1).json().get("health") == "true",
              20, "etcd", self.proc, log)
        return self

    def stop(self, sig: int = 15) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class ConsulServer:
    """A single-node Consul server with persistent data (so a restart keeps sessions, as a real
    cluster does) and `session_ttl_min` lowered to 1 s for fast failover."""

    directory: Path
    http_port: int = 0
    proc: subprocess.Popen | None = None  # type: ignore[type-arg]
    ports: dict[str, int] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def start(self) -> "ConsulServer":
        self.http_port = self.http_port or free_port()
        self.ports = self.ports or {"serf_lan": free_port(), "serf_wan": free_port(), "server": free_port()}
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "consul.json"
        config.write_text(json.dumps({
            "session_ttl_min": "1s", "disable_update_check": True, "leave_on_terminate": False,
            "performance": {"raft_multiplier": 1},
            "ports": {"http": self.http_port, "dns": -1, "grpc": -1, "serf_lan": self.ports["serf_lan"],
                      "serf_wan": self.ports["serf_wan"], "server": self.ports["server"]}}))
        log = self.directory / "consul.log"
        cmd = [shutil.which("consul") or "consul", "agent", "-server", "-bootstrap-expect", "1",
               "-data-dir", str(self.directory / "data"), "-bind", "127.0.0.1", "-client", "127.0.0.1",
               "-node", f"test-{os.getpid()}", "-config-file", str(config), "-log-level", "warn"]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait(lambda: bool(httpx.get(f"http://{self.address}/v1/status/leader", timeout=1).json())
              and httpx.put(f"http://{self.address}/v1/kv/ready-check", content=b"1", timeout=1).status_code == 200,
              40, "consul", self.proc, log)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
