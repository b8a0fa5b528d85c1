"""BBS configuration: one frozen model, every field with a default and a description."""
from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator

from control.coordination.base import CoordinationConfig


class BBSConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    listen_address: str = Field("127.0.0.1:8889", description="host:port of the API (HTTPS unless plain_http)")
    advertise_url: str = Field("", description="URL other processes use to reach this BBS; derived from listen_address when empty")
    etcd_endpoints: list[str] = Field(["127.0.0.1:2379"], description="etcd client endpoints (host:port)")
    key_prefix: str = Field("/pydiego/v1", description="prefix of every key the BBS writes in etcd")
    plain_http: bool = Field(False, description="serve plain HTTP without TLS: loopback development only")
    ca_cert: str = Field("", description="CA that signs client certificates (and peers' server certificates)")
    server_cert: str = Field("", description="this BBS's server certificate")
    server_key: str = Field("", description="key of server_cert")
    require_client_cert: bool = Field(True, description="mutual TLS: refuse clients without a certificate signed by ca_cert")
    client_cert: str = Field("", description="certificate the BBS presents to reps and the auctioneer")
    client_key: str = Field("", description="key of client_cert")
    auctioneer_url: str = Field("", description=(
        "fixed auctioneer base URL; empty = the holder of the `auctioneer` lock (requests with no holder "
        "are logged and dropped; convergence re-sends them)"))
    max_request_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="largest request body accepted (413 above)")
    max_task_retries: int = Field(3, ge=0, description="task rejections before it fails (reference §2.7)")
    callback_workers: int = Field(16, ge=1, description="concurrent task completion callbacks")
    callback_timeout: timedelta = Field(timedelta(seconds=10), description="HTTP timeout of one completion callback")
    event_buffer: int = Field(1024, ge=1, description="pending events per SSE subscriber before it is dropped")
    etcd_timeout: timedelta = Field(timedelta(seconds=5), description="timeout of one etcd call")
    log_level: str = Field("info", description="debug, info, warning or error")
    coordination: CoordinationConfig = Field(CoordinationConfig(), description=(
        "where the `bbs` lock and the cell presences live; its key_prefix and etcd_endpoints "
        "are always the BBS's own"))
    instance_name: str = Field("", description="this BBS's name in its lock value (default bbs-<host>-<pid>)")

    @model_validator(mode="after")
    def _tls(self) -> "BBSConfig":
        if not self.plain_http and not (self.ca_cert and self.server_cert and self.server_key):
            raise ValueError("ca_cert, server_cert and server_key are required unless plain_http is true")
        return self

    @property
    def coordination_config(self) -> CoordinationConfig:
        return self.coordination.model_copy(update={"key_prefix": self.key_prefix,
                                                    "etcd_endpoints": self.etcd_endpoints})

    @property
    def host(self) -> str:
        return self.listen_address.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen_address.rsplit(":", 1)[1])

    @property
    def url(self) -> str:
        return self.advertise_url or f"{'http' if self.plain_http else 'https'}://{self.listen_address}"
