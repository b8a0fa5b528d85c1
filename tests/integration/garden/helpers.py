"""Helpers for garden tests: run a command and collect its output, list host-level traces."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from agents.garden import ExitStatus, ProcessIO, ProcessSpec, RuncBackend


@dataclass
class Output:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)

    def io(self) -> ProcessIO:
        return ProcessIO(stdout=self.stdout.extend, stderr=self.stderr.extend)

    @property
    def out(self) -> str:
        return self.stdout.decode()

    @property
    def err(self) -> str:
        return self.stderr.decode()


async def sh(backend: RuncBackend, handle: str, script: str, **spec: object) -> tuple[ExitStatus, Output]:
    """Run `sh -c script` in the container and wait for it."""
    output = Output()
    process = await backend.run(handle, ProcessSpec(path="/bin/sh", args=("-c", script), **spec), output.io())
    return await process.wait(), output


def _lines(*argv: str) -> list[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.splitlines()


def traces(backend: RuncBackend, handle: str) -> dict[str, list[str]]:
    """Everything on the machine that still belongs to `handle`, by kind (empty lists = clean)."""
    names, bundle = backend.names, backend.depot.bundle(handle)
    netns, veth = names.netns(handle), names.veth(handle)
    cgroup = names.cgroup(handle).lstrip("/")
    return {
        "netns": [line for line in _lines("ip", "netns", "list") if line.split()[0] == netns],
        "links": [line for line in _lines("ip", "-o", "link") if f" {veth}@" in line or f" {veth}:" in line],
        "mounts": [line for line in Path("/proc/mounts").read_text().splitlines() if str(bundle.path) in line],
        "loops": [line for line in _lines("losetup", "-a") if str(bundle.path) in line],
        "iptables": [line for line in _lines("iptables-save") if names.rule_comment(handle) in line],
        "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{cgroup}")],
        "runc": [str(p) for p in [backend.depot.runc_root / handle] if p.exists()],
        "bundle": [str(bundle.path)] if bundle.path.exists() else [],
    }


def assert_no_traces(backend: RuncBackend, handle: str) -> None:
    left = {kind: found for kind, found in traces(backend, handle).items() if found}
    assert not left, f"{handle} left traces behind: {left}"


def backend_traces(tag: str, depot: Path) -> dict[str, list[str]]:
    """Everything of a whole backend (tag) on the machine."""
    prefix = f"pd{tag}-"
    return {
        "netns": [line for line in _lines("ip", "netns", "list") if line.startswith(prefix)],
        "links": [line for line in _lines("ip", "-o", "link") if f" {prefix}" in line],
        "mounts": [line for line in Path("/proc/mounts").read_text().splitlines() if str(depot) in line],
        "loops": [line for line in _lines("losetup", "-a") if str(depot) in line],
        "iptables": [line for line in _lines("iptables-save") if f"PD-{tag}-" in line or f"pd{tag}" in line],
        "cgroups": [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/pydiego/{tag}")],
        "depot": [str(depot)] if depot.exists() else [],
    }
