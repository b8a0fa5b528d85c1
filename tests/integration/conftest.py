"""BBS daemons as real processes (`python -m control.bbs --config FILE`) over the session etcd."""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from control.kit import tls
from tests.servers import EtcdServer, free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    ca, ca_key = tls.make_ca(d)
    sc, sk = tls.issue(d, "bbs", ca, ca_key, ["127.0.0.1", "localhost"])
    cc, ck = tls.issue(d, "client", ca, ca_key, [], server=False)
    return Certs(ca, sc, sk, cc, ck)


@dataclass
class Daemon:
    config: Path
    log: Path
    port: int
    tls: bool
    certs: Certs
    proc: subprocess.Popen | None = None  # type: ignore[type-arg]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def http(self) -> httpx.Client:
        if self.tls:
            ctx = tls.client_context(self.certs.ca, self.certs.client_cert, self.certs.client_key)
            return httpx.Client(base_url=self.url, verify=ctx, timeout=10)
        return httpx.Client(base_url=self.url, timeout=10)

    def start_process(self) -> subprocess.Popen:  # type: ignore[type-arg]
        """Start without waiting for the API (a standby never serves)."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "control.bbs", "--config", str(self.config)],
                                         cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        return self.proc

    def start(self, timeout: float = 20) -> "Daemon":
        self.start_process()
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with self.http() as client:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, f"BBS exited early:\n{self.log.read_text()[-3000:]}"
                try:
                    if client.get("/v1/ping").status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"BBS not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


@pytest.fixture
def make_daemon(tmp_path: Path, etcd_server: EtcdServer, key_prefix: str, certs: Certs) -> Iterator:  # type: ignore[type-arg]
    daemons: list[Daemon] = []

    def make(use_tls: bool = True, **extra: object) -> Daemon:
        port = free_port()
        cfg: dict[str, object] = {"listen_address": f"127.0.0.1:{port}", "etcd_endpoints": [etcd_server.endpoint],
                                  "key_prefix": key_prefix, "coordination": {"backend": "etcd"}}
        if use_tls:
            cfg.update(ca_cert=str(certs.ca), server_cert=str(certs.server_cert), server_key=str(certs.server_key))
        else:
            cfg["plain_http"] = True
        cfg.update(extra)
        path = tmp_path / f"bbs-{len(daemons)}.yml"
        path.write_text(yaml.safe_dump(cfg))
        daemon = Daemon(path, tmp_path / f"bbs-{len(daemons)}.log", port, use_tls, certs)
        daemons.append(daemon)
        return daemon

    yield make
    for d in daemons:
        d.stop()
