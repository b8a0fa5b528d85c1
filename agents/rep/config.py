"""Rep configuration: one frozen model, every field with a default and a description.

The rep embeds the executor (agents/executor) and the container backend (agents/garden), so
their configs are nested here; the local cluster and the Ansible role render exactly this.
"""
from __future__ import annotations

import socket
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator

from control.coordination.base import CoordinationConfig

from agents.executor.config import ExecutorConfig
from agents.garden.config import GardenConfig


class RepConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cell_id: str = Field(default_factory=socket.gethostname, pattern=r"^[a-zA-Z0-9_.-]+$",
                         description="this cell's id in the BBS and its presence key")
    zone: str = Field("z1", description="availability zone the auctioneer balances across")
    placement_tags: list[str] = Field([], description="tags an LRP/task must all match to land here")
    optional_placement_tags: list[str] = Field([], description="tags that may match")
    listen_address: str = Field("0.0.0.0:1801", description="host:port of the cell API (HTTPS unless plain_http)")
    admin_listen_address: str = Field("127.0.0.1:1800", description="loopback admin API: /ping, /evacuate")
    external_ip: str = Field("127.0.0.1", description="the cell's address: mapped ports and the API are reached there")
    advertise_url: str = Field("", description="rep URL for the auctioneer and the BBS; default https://external_ip:port")
    plain_http: bool = Field(False, description="serve plain HTTP without TLS: loopback development only")
    ca_cert: str = Field("", description="cluster CA: verifies clients and the BBS")
    server_cert: str = Field("", description="this rep's server certificate")
    server_key: str = Field("", description="key of server_cert")
    require_client_cert: bool = Field(True, description="mutual TLS on the cell API")
    client_cert: str = Field("", description="certificate presented to the BBS")
    client_key: str = Field("", description="key of client_cert")
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

    @model_validator(mode="after")
    def _tls(self) -> "RepConfig":
        if not self.plain_http and not (self.ca_cert and self.server_cert and self.server_key):
            raise ValueError("ca_cert, server_cert and server_key are required unless plain_http is true")
        return self

    @staticmethod
    def _split(address: str) -> tuple[str, int]:
        host, _, port = address.rpartition(":")
        return host, int(port)

    @property
    def host(self) -> str:
        return self._split(self.listen_address)[0]

    @property
    def port(self) -> int:
        return self._split(self.listen_address)[1]

    @property
    def url(self) -> str:
        scheme = "http" if self.plain_http else "https"
        return self.advertise_url or f"{scheme}://{self.external_ip}:{self.port}"
