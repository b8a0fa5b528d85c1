"""What a cell asks of its container backend, and what it gets back.

These are Garden's nouns (container spec, process spec, port mapping, process exit, metrics) as
frozen pydantic models. They describe one container on one machine; nothing here knows about
runc, namespaces or iptables. Limits of this first version: TCP port mappings only; egress is
IPv4 only (containers have no IPv6, IPv6 destinations are accepted and allow nothing); processes
run as root or a numeric or /etc/passwd user of the rootfs; stdin only from a host file; no TTY.
"""
from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from control.models.base import Guid, Model

PROCESS_ID = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")
HELPER_PREFIX = "pydiego-"  # process ids of the backend's own helpers (stream_in/out): not listed
# Characters that would break an overlayfs option string or a mount table entry.
_BAD_PATH_CHARS = set(",:\n\t ")


class EgressRule(Model):
    """Outbound traffic a container may start (Diego's security group rule, reduced to the firewall).

    Everything not allowed by some rule is rejected. Rules never open the cell itself (its
    services, the bridge) or other containers.
    """

    protocol: Literal["tcp", "udp", "icmp", "all"]
    destinations: tuple[str, ...] = Field(min_length=1, description=(
        "each an IP ('10.0.0.1'), a CIDR ('10.0.0.0/8') or an inclusive range ('10.0.0.1-10.0.0.9')"))
    ports: tuple[int, ...] = Field((), description="tcp/udp destination ports; empty with no port_range = all")
    port_range: tuple[int, int] | None = Field(None, description="tcp/udp inclusive (first, last) port range")
    icmp_type: int | None = Field(None, ge=0, le=255, description="icmp only; None = every type")
    icmp_code: int | None = Field(None, ge=0, le=255, description="icmp only, with icmp_type; None = every code")

    @field_validator("destinations")
    @classmethod
    def _destinations(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for dest in value:
            parse_destination(dest)
        return value

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 1 <= p <= 65535 for p in value):
            raise ValueError("ports must be between 1 and 65535")
        return value

    @model_validator(mode="after")
    def _combination(self) -> "EgressRule":
        problems = []
        if self.port_range is not None:
            first, last = self.port_range
            if not 1 <= first <= last <= 65535:
                problems.append("port_range must be (first, last) with 1 <= first <= last <= 65535")
        if self.ports and self.port_range is not None:
            problems.append("ports and port_range are exclusive")
        if self.protocol not in ("tcp", "udp") and (self.ports or self.port_range is not None):
            problems.append("ports and port_range are only for tcp and udp")
        if self.protocol != "icmp" and (self.icmp_type is not None or self.icmp_code is not None):
            problems.append("icmp_type and icmp_code are only for icmp")
        if self.icmp_code is not None and self.icmp_type is None:
            problems.append("icmp_code needs icmp_type")
        if problems:
            raise ValueError("; ".join(problems))
        return self


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Destination = ipaddress.IPv4Network | ipaddress.IPv6Network | tuple[IPAddress, IPAddress]


def parse_destination(dest: str) -> Destination:
    """'a.b.c.d', 'a.b.c.d/n' (host bits allowed) -> a network; 'first-last' -> an address pair."""
    if "-" in dest:
        first_text, _, last_text = dest.partition("-")
        try:
            first, last = ipaddress.ip_address(first_text.strip()), ipaddress.ip_address(last_text.strip())
        except ValueError:
            raise ValueError(f"destination {dest!r} is not an IP range") from None
        if first.version != last.version or first > last:
            raise ValueError(f"destination range {dest!r} must go upwards within one IP version")
        return (first, last)
    try:
        return ipaddress.ip_network(dest.strip(), strict=False)
    except ValueError:
        raise ValueError(f"destination {dest!r} is not an IP, CIDR or IP range") from None


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
    egress_rules: tuple[EgressRule, ...] = Field((), description="outbound traffic allowed; none = no egress at all")
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
    process_id: str | None = Field(None, pattern=PROCESS_ID.pattern,
                                   description="caller-chosen id (not starting with 'pydiego-'); generated when absent")
    stdin_path: str | None = Field(None, description="host file read as stdin; /dev/null when absent")
    stdout_path: str | None = Field(None, description=(
        "host file that receives stdout (appended); keeps receiving it after the backend process dies"))
    stderr_path: str | None = Field(None, description="host file that receives stderr (appended), likewise")

    @field_validator("env")
    @classmethod
    def _env(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_env(value)

    @field_validator("process_id")
    @classmethod
    def _process_id(cls, value: str | None) -> str | None:
        if value is not None and not valid_process_id(value):
            raise ValueError("process_id must not be '.' or '..'")
        return value


def valid_process_id(value: str) -> bool:
    """Process ids name directories: the pattern of ProcessSpec.process_id, minus '.' and '..'."""
    return PROCESS_ID.fullmatch(value) is not None and value not in (".", "..")


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
    process_ids: tuple[str, ...] = Field((), description=(
        "processes still running, including those started by an earlier backend object on this depot"))
    create_timings_ms: dict[str, float] = Field({}, description=(
        "how long create() spent per stage: 'rootfs' (base or uid-shifted copy, disk image, overlay "
        "mount), 'runc' (/etc/hosts, config.json, `runc run` until the init runs), 'network' (netns, "
        "veth, host ports, DNAT and egress rules), 'total' (all three and the bookkeeping between them)"))


class ExitStatus(Model):
    code: int = Field(description="exit code; 128+N when killed by signal N")
    signal: int | None = Field(None, description="the signal that killed the process, if any")
    oom_killed: bool = False
    reason: str = Field("", description="'out of memory' when the memory cgroup killed it; 'exit status lost'")
    lost: bool = Field(False, description=(
        "the process ended while neither a backend nor its keeper was there to see it: code is 255 "
        "and nothing else is known"))


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
