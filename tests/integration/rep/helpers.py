"""Helpers for rep tests: LRP/task recipes on the busybox stack, cell-level trace checks."""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

from .conftest import RepDaemon

HTTPD_PORT = 8080


def httpd_lrp(process_guid: str, domain: str = "test", instances: int = 1, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "process_guid": process_guid, "domain": domain, "rootfs": "preloaded:busybox", "instances": instances,
        "memory_mb": 64, "disk_mb": 64, "ports": [HTTPD_PORT],
        "setup": {"run": {"path": "/bin/sh", "args": ["-c", "mkdir -p /www && echo hello-$INSTANCE_INDEX > /www/index.html"],
                          "user": "root"}},
        "action": {"run": {"path": "/usr/sbin/httpd", "args": ["-f", "-p", str(HTTPD_PORT), "-h", "/www"], "user": "root"}},
        "check_definition": {"checks": [{"tcp_check": {"port": HTTPD_PORT}}]},
        "start_timeout_ms": 10000,
    }
    body.update(overrides)
    return body


def lrp_work(process_guid: str, index: int = 0, domain: str = "test", rootfs: str = "preloaded:busybox",
             memory_mb: int = 64, disk_mb: int = 64) -> dict[str, Any]:
    return {"process_guid": process_guid, "index": index, "domain": domain, "rootfs": rootfs,
            "resource": {"memory_mb": memory_mb, "disk_mb": disk_mb}}


def task_work(task_guid: str, domain: str = "test", rootfs: str = "preloaded:busybox") -> dict[str, Any]:
    return {"task_guid": task_guid, "domain": domain, "rootfs": rootfs, "resource": {"memory_mb": 32, "disk_mb": 32}}


def http_get(host: str, port: int, path: str = "/", timeout: float = 3) -> str:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode(errors="replace")


def _lines(*argv: str) -> list[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.splitlines()


def container_traces(rep: RepDaemon) -> dict[str, list[str]]:
    """What containers of this cell left on the machine (the cell's bridge and base chains aside)."""
    tag = rep.config["garden"]["tag"]
    prefix, bridge, comment = f"pd{tag}-", f"pd{tag}-br", f"pd{tag}:"
    containers_dir = Path(rep.depot) / "containers"
    return {
        "netns": [ln for ln in _lines("ip", "netns", "list") if ln.startswith(prefix)],
        "links": [ln for ln in _lines("ip", "-o", "link") if f" {prefix}" in ln and f" {bridge}:" not in ln],
        "mounts": [ln for ln in Path("/proc/mounts").read_text().splitlines() if str(containers_dir) in ln],
        "loops": [ln for ln in _lines("losetup", "-a") if str(containers_dir) in ln],
        "iptables": [ln for ln in _lines("iptables-save") if comment in ln],
        "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/pydiego/{tag}/*") if p.is_dir()],
        "bundles": [str(p) for p in containers_dir.iterdir()] if containers_dir.exists() else [],
    }


def assert_cell_clean(rep: RepDaemon) -> None:
    left = {kind: found for kind, found in container_traces(rep).items() if found}
    assert not left, f"cell {rep.cell_id} has container leftovers: {left}"
