"""What a cell asks of its container backend, and what it gets back.

These are Garden's nouns (container spec, process spec, port mapping, process exit, metrics) as
frozen pydantic models. They describe one container on one machine; nothing here knows about
runc, namespaces or iptables. Limits of this first version: TCP port mappings only, no egress
rules (containers reach nothing but their mapped-port peers), processes run as root or a numeric
or /etc/passwd user of the rootfs, no stdin, no TTY.
"""
from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from pydantic import Field, field_validator

from control.models.base import Guid, Model

# Characters that would break an overlayfs option string or a mount table entry.
_BAD_PATH_CHARS = set(",:\n\t ")


class ContainerSpec(Model):
    """One container: its root filesystem, limits, ports and environment."""

    handle: Guid = Field(description="unique name; Diego uses the instance guid (LRP) or the task guid")
    rootfs: str = Field(description="absolute path of an unpacked base root filesystem (read-only lower layer)")
    env: tuple[str, ...] = Field((), description="KEY=VALUE entries every process in the container starts with")
    memory_mb: int = Field(0, ge=0, description="memory (and memory+swap) limit in MiB; 0 = unlimited")
    disk_mb: int = Field(0, ge=0, description="size of the writable layer in MiB; 0 = unlimited (plain directory)")
    cpu_weight: int = Field(100, ge=1, le=100, description="relative CPU weight; cpu.shares = 1024 * weight / 100")
    max_pids: int = Field(0, ge=0, description="pids.max of the container cgroup; 0 = unlimited")
    privileged: bool = Field(False, description="False = a user namespace mapping root to an unprivileged host id range")
    ports: tuple[int, ...] = Field((), description="container TCP ports to map to host ports")
    properties: dict[str, str] = Field({}, description="caller's tags, returned by info() (Garden properties)")

    @field_validator("rootfs")
    @classmethod
    def _rootfs(cls, value: str) -> str:
        if not posixpath.isabs(value):
            raise ValueError("rootfs must be an absolute path")
        if _BAD_PATH_CHARS & set(value):
            raise ValueError("rootfs path must not contain commas, colons or whitespace")
        return posixpath.normpath(value)

    @field_validator("env")
    @classmethod
    def _env(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_env(value)

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 1 <= p <= 65535 for p in value):
            raise ValueError("ports must be between 1 and 65535")
        if len(set(value)) != len(value):
            raise ValueError("ports must be unique")
        return value


class ProcessSpec(Model):
    """A process to start inside a running container (`runc exec`)."""

    path: str = Field(description="executable, absolute or looked up in the PATH of the container")
    args: tuple[str, ...] = Field((), description="arguments after the executable")
    env: tuple[str, ...] = Field((), description="KEY=VALUE entries added to (and overriding) the container env")
    dir: str = Field("/", description="working directory inside the container")
    user: str = Field("root", description="'root', a numeric 'uid[:gid]', or a name from the rootfs /etc/passwd")
    process_id: str | None = Field(None, pattern=r"^[a-zA-Z0-9_.-]{1,128}$",
                                   description="caller-chosen id; generated when absent")
    stdout_path: str | None = Field(None, description="host file that receives stdout (appended)")
    stderr_path: str | None = Field(None, description="host file that receives stderr (appended)")

    @field_validator("env")
    @classmethod
    def _env(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_env(value)


@dataclass(frozen=True)
class ProcessIO:
    """Streaming callbacks for a process's output (behaviour, so kept out of ProcessSpec).

    Each callback gets raw chunks as they arrive; it runs on the event loop and must not block.
    A callback wins over the matching ProcessSpec path.
    """

    stdout: Callable[[bytes], None] | None = None
    stderr: Callable[[bytes], None] | None = None


class ContainerState(StrEnum):
    ACTIVE = "active"    # init is running: processes can be started
    STOPPED = "stopped"  # stop() ran or init died: only destroy() makes sense


class PortMapping(Model):
    host_port: int
    container_port: int


class ContainerInfo(Model):
    handle: str
    state: ContainerState
    container_ip: str = Field(description="address on the cell bridge")
    bridge_ip: str = Field(description="the bridge (gateway) address; mapped ports answer on it too")
    ports: tuple[PortMapping, ...] = ()
    privileged: bool
    memory_mb: int
    disk_mb: int
    max_pids: int
    cpu_shares: int
    created_at: float = Field(description="unix time of creation")
    init_pid: int = Field(description="host pid of the container's init (0 once stopped)")
    bundle_path: str
    events: tuple[str, ...] = Field((), description="Garden-style events, e.g. 'out of memory'")
    properties: dict[str, str] = {}
    process_ids: tuple[str, ...] = Field((), description="processes started since this backend object began")


class ExitStatus(Model):
    code: int = Field(description="exit code; 128+N when killed by signal N")
    signal: int | None = Field(None, description="the signal that killed the process, if any")
    oom_killed: bool = False
    reason: str = Field("", description="'out of memory' when the memory cgroup killed it")


class ContainerMetrics(Model):
    memory_bytes: int = Field(description="cgroup usage minus inactive page cache (working set)")
    memory_limit_bytes: int = Field(description="0 = unlimited")
    cpu_ns: int = Field(description="cumulated CPU time of every process, nanoseconds")
    disk_bytes: int = Field(description="bytes written to the container's writable layer")
    disk_limit_bytes: int = Field(description="0 = unlimited")
    pids: int = Field(description="current number of tasks in the container")


def _check_env(value: tuple[str, ...]) -> tuple[str, ...]:
    for entry in value:
        if "=" not in entry or entry.startswith("="):
            raise ValueError(f"env entry {entry!r} is not KEY=VALUE")
    return value


def merge_env(*layers: tuple[str, ...]) -> list[str]:
    """Later layers override earlier ones key by key; first-seen order is kept."""
    merged: dict[str, str] = {}
    for layer in layers:
        for entry in layer:
            key, _, val = entry.partition("=")
            merged[key] = val
    return [f"{k}={v}" for k, v in merged.items()]
