"""Rep configuration: one frozen model, every field with a default and a description.

The rep embeds the executor (agents/executor) and the container backend (agents/garden), so
their configs are nested here; the local cluster and the Ansible role render exactly this.
"""
from __future__ import annotations

import socket
from datetime import timedelta

from pydantic import Field

from control.coordination.base import CoordinationConfig
from control.kit.service_config import ServiceConfig

from agents.executor.config import ExecutorConfig
from agents.garden.config import GardenConfig


class RepConfig(ServiceConfig):
    cell_id: str = Field(default_factory=socket.gethostname, pattern=r"^[a-zA-Z0-9_.-]+$",
                         description="this cell's id in the BBS and its presence key")
    zone: str = Field("z1", description="availability zone the auctioneer balances across")
    placement_tags: list[str] = Field([], description="tags an LRP/task must all match to land here")
    optional_placement_tags: list[str] = Field([], description="tags that may match")
    listen_address: str = Field("0.0.0.0:1801", description="host:port of the cell API (HTTPS unless plain_http)")
    admin_listen_address: str = Field("127.0.0.1:1800", description="loopback admin API: /ping, /evacuate")
    external_ip: str = Field("127.0.0.1", description="the cell's address: mapped ports and the API are reached there")
    advertise_url: str = Field("", description="rep URL for the auctioneer and the BBS; default https://external_ip:port")
    bbs_url: str = Field("https://127.0.0.1:8889", description="BBS URL; the active BBS is also found through its lock")
    coordination: CoordinationConfig = Field(CoordinationConfig(), description="where presences and locks live")
    presence_prefix: str = Field("cell-", description="presence key = prefix + cell_id")
    stacks: dict[str, str] = Field({"busybox": "/var/lib/pydiego/stacks/busybox"},
                                   description="preloaded stacks: name -> unpacked rootfs directory")
    image_cache_dir: str = Field("/var/lib/pydiego/images", description="OCI layer and image cache of this cell")
    insecure_registries: list[str] = Field([], description="registries reached over plain HTTP (host:port)")
    garden: GardenConfig = Field(GardenConfig(), description="container backend")
    executor: ExecutorConfig = Field(ExecutorConfig(), description="container lifecycle, health checks, logs")
    polling_interval: timedelta = Field(timedelta(seconds=30), description="bulk harmonizer pass period (§2.9)")
    evacuation_timeout: timedelta = Field(timedelta(seconds=600), description="longest evacuation before cleanup (§2.5)")
    evacuation_polling_interval: timedelta = Field(timedelta(seconds=10), description="evacuation re-check period")
    max_request_bytes: int = Field(1024 * 1024, ge=1024, description="largest /work body accepted (413 above)")
    log_level: str = Field("info", description="debug, info, warning or error")

    @property
    def url(self) -> str:
        scheme = "http" if self.plain_http else "https"
        return self.advertise_url or f"{scheme}://{self.external_ip}:{self.port}"
