"""Configuration of the runc container backend: one frozen model, every field with a default.

`tag` keeps several backends on one machine apart (a local cluster runs several cells): it is
part of every name the backend creates (bridge, veths, netns, iptables chains, cgroups), and
`cleanup_all(depot)` only removes what carries the tag recorded in that depot.
"""
from __future__ import annotations

import ipaddress
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator


class GardenConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    depot_dir: str = Field("/var/lib/pydiego/garden", description="bundles, disk images, runc state and rootfs copies")
    tag: str = Field("0", pattern=r"^[a-z0-9]{1,4}$",
                     description="short id of this backend inside every host-level name (pd<tag>-...)")
    runc_path: str = Field("runc", description="runc binary")
    init_binary: str = Field("/bin/busybox", description=(
        "static busybox bind-mounted read-only into every container as its pause-and-reap init"))
    bridge_subnet: str = Field("10.254.0.0/22", description="container network; the first address is the bridge's")
    port_range_start: int = Field(61000, ge=1, le=65535, description="first host port handed out for mappings")
    port_range_end: int = Field(61999, ge=1, le=65535, description="last host port handed out (inclusive)")
    unprivileged_host_id: int = Field(2_000_000_000, ge=65536, description=(
        "host uid/gid that root of an unprivileged container maps to"))
    unprivileged_id_count: int = Field(65536, ge=1, description="size of the uid/gid mapping")
    cgroup_parent: str = Field("/pydiego", pattern=r"^/[a-zA-Z0-9_/-]+$",
                               description="absolute cgroup path under which /<tag>/<handle> lives")
    command_timeout: timedelta = Field(timedelta(seconds=30), description="timeout of one external command")

    @model_validator(mode="after")
    def _check(self) -> "GardenConfig":
        net = ipaddress.ip_network(self.bridge_subnet, strict=True)
        if net.version != 4 or net.prefixlen > 29:
            raise ValueError("bridge_subnet must be an IPv4 network of at least /29")
        if self.port_range_end < self.port_range_start:
            raise ValueError("port_range_end must not be below port_range_start")
        if self.unprivileged_host_id + self.unprivileged_id_count > 2**32 - 1:
            raise ValueError("the unprivileged id range must fit below 2**32 - 1")
        return self

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.bridge_subnet)

    @property
    def bridge_ip(self) -> ipaddress.IPv4Address:
        return next(self.network.hosts())
