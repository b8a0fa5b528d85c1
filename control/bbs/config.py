"""BBS configuration: one frozen model, every field with a default and a description."""
from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from control.coordination.base import CoordinationConfig
from control.kit.service_config import ServiceConfig


class BBSConfig(ServiceConfig):
    listen_address: str = Field("127.0.0.1:8889", description="host:port of the API (HTTPS unless plain_http)")
    etcd_endpoints: list[str] = Field(["127.0.0.1:2379"], description="etcd client endpoints (host:port)")
    key_prefix: str = Field("/pydiego/v1", description="prefix of every key the BBS writes in etcd")
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

    @property
    def coordination_config(self) -> CoordinationConfig:
        return self.coordination.model_copy(update={"key_prefix": self.key_prefix,
                                                    "etcd_endpoints": self.etcd_endpoints})
