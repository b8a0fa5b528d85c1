"""Auctioneer configuration: one frozen model, every field with a default and a description."""
from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from control.coordination.base import CoordinationConfig
from control.kit.service_config import ServiceConfig


class AuctioneerConfig(ServiceConfig):
    listen_address: str = Field("127.0.0.1:9016", description="host:port of the API (HTTPS unless plain_http)")
    bbs_url: str = Field("https://127.0.0.1:8889", description="BBS URL; the active BBS is also found through its lock")
    etcd_endpoints: list[str] = Field(["127.0.0.1:2379"], description="etcd (fencing tokens, and the etcd coordination backend)")
    key_prefix: str = Field("/pydiego/v1", description="prefix of the cluster's keys in etcd")
    coordination: CoordinationConfig = Field(CoordinationConfig(), description="where the lock and the cell presences live")
    cell_state_timeout: timedelta = Field(timedelta(seconds=10), description="timeout of one GET /state (reference §4.1)")
    work_timeout: timedelta = Field(timedelta(seconds=10), description="timeout of one POST /work")
    starting_container_weight: float = Field(0.25, ge=0, description="score penalty per starting container (§4.3)")
    bin_pack_first_fit_weight: float = Field(0.0, ge=0, le=1, description="> 0 packs onto low-index cells (§4.3)")
    starting_container_count_maximum: int = Field(0, ge=0, description="in-flight start limit across cells; 0 = none")
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest auction request body (413 above)")
    max_batch: int = Field(100_000, ge=1, description="queued start requests accepted before 503")
    log_level: str = Field("info", description="debug, info, warning or error")
    instance_name: str = Field("", description="this auctioneer's name in its lock value (default auctioneer-<host>-<pid>)")

    @property
    def coordination_config(self) -> CoordinationConfig:
        return self.coordination.model_copy(update={"key_prefix": self.key_prefix,
                                                    "etcd_endpoints": self.etcd_endpoints})
