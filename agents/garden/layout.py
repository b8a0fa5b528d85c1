"""Every name and path the backend creates, derived from (tag, handle) in one place.

Host-level names carry the prefix `pd<tag>-` (interfaces and netns, at most 15 characters:
`pd` + tag + `-` + 8 hex digits of sha256(handle)), iptables chains are `PD-<tag>-*`, cgroups live
at `<cgroup_parent>/<tag>/<handle>`. Cleanup finds leftovers by these prefixes, so nothing
outside them is ever touched.

Depot layout:
    <depot>/garden.json                 the backend config (read by cleanup_all)
    <depot>/runc/                       runc --root (state of this backend's containers only)
    <depot>/stacks/<key>/rootfs         uid-shifted copies of base rootfs for unprivileged containers
    <depot>/containers/<handle>/        bundle: config.json, state.json, rootfs/ (overlay mount),
                                        disk.img + disk/ (loop mount) or upper/ + work/, processes/
    <bundle>/processes/<process_id>/    process.json (runc exec --process), pid (runc's pid file),
                                        runc.log, meta.json (backend), exit_status (keeper)
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path


def short_id(handle: str) -> str:
    return hashlib.sha256(handle.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Names:
    tag: str
    cgroup_parent: str = "/pydiego"

    @property
    def prefix(self) -> str:
        return f"pd{self.tag}-"

    @property
    def bridge(self) -> str:
        return f"pd{self.tag}-br"

    @property
    def chain_dnat(self) -> str:
        return f"PD-{self.tag}-DNAT"

    @property
    def chain_post(self) -> str:
        return f"PD-{self.tag}-POST"

    @property
    def chain_forward(self) -> str:
        return f"PD-{self.tag}-FWD"

    @property
    def chain_input(self) -> str:
        return f"PD-{self.tag}-IN"

    @property
    def chain_egress(self) -> str:
        return f"PD-{self.tag}-EGR"

    @property
    def chain_prefix(self) -> str:
        return f"PD-{self.tag}-"

    @property
    def cgroup_root(self) -> str:
        return f"{self.cgroup_parent.rstrip('/')}/{self.tag}"

    def netns(self, handle: str) -> str:
        return f"{self.prefix}{short_id(handle)}"

    def veth(self, handle: str) -> str:
        return f"{self.prefix}{short_id(handle)}"

    def cgroup(self, handle: str) -> str:
        return f"{self.cgroup_root}/{handle}"

    def rule_comment(self, handle: str) -> str:
        return f"pd{self.tag}:{handle[:200]}"


@dataclass(frozen=True)
class Depot:
    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "garden.json"

    @property
    def runc_root(self) -> Path:
        return self.root / "runc"

    @property
    def stacks(self) -> Path:
        return self.root / "stacks"

    @property
    def containers(self) -> Path:
        return self.root / "containers"

    def bundle(self, handle: str) -> "Bundle":
        return Bundle(self.containers / handle)


@dataclass(frozen=True)
class Bundle:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def state(self) -> Path:
        return self.path / "state.json"

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def image(self) -> Path:
        return self.path / "disk.img"

    @property
    def disk(self) -> Path:
        return self.path / "disk"

    def layer_root(self, with_image: bool) -> Path:
        """Where upper/ and work/ live: inside the loop mount when the disk is limited."""
        return self.disk if with_image else self.path

    @property
    def init_pid(self) -> Path:
        return self.path / "init.pid"

    @property
    def processes(self) -> Path:
        return self.path / "processes"

    def process(self, process_id: str) -> "ProcessDir":
        return ProcessDir(self.processes / process_id)


@dataclass(frozen=True)
class ProcessDir:
    """One process's files; they outlive the backend process (and the process, until pruned)."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def spec(self) -> Path:
        return self.path / "process.json"

    @property
    def pid(self) -> Path:
        return self.path / "pid"

    @property
    def log(self) -> Path:
        return self.path / "runc.log"

    @property
    def meta(self) -> Path:
        return self.path / "meta.json"

    @property
    def exit_status(self) -> Path:
        return self.path / "exit_status"
