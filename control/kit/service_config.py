"""The fields every pydiego server shares: where it listens, how it is reached, its mutual TLS.

BBSConfig, AuctioneerConfig and RepConfig inherit these (each may redeclare `listen_address`
with its own default port); `server_tls()` is what APIServer takes, `client_tls()` what the
process presents to its peers.
"""
from __future__ import annotations

import ssl

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .http_server import ServerTLS
from .tls import client_context


class ServiceConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    listen_address: str = Field("127.0.0.1:8000", description="host:port of the API (HTTPS unless plain_http)")
    advertise_url: str = Field("", description="URL other processes use to reach this one; derived when empty")
    plain_http: bool = Field(False, description="serve plain HTTP without TLS: loopback development only")
    ca_cert: str = Field("", description="cluster CA: verifies clients and peers' server certificates")
    server_cert: str = Field("", description="this process's server certificate")
    server_key: str = Field("", description="key of server_cert")
    require_client_cert: bool = Field(True, description="mutual TLS: refuse clients without a certificate signed by ca_cert")
    client_cert: str = Field("", description="certificate this process presents to its peers")
    client_key: str = Field("", description="key of client_cert")

    @model_validator(mode="after")
    def _tls(self) -> "ServiceConfig":
        if not self.plain_http and not (self.ca_cert and self.server_cert and self.server_key):
            raise ValueError("ca_cert, server_cert and server_key are required unless plain_http is true")
        return self

    @property
    def host(self) -> str:
        return self.listen_address.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen_address.rsplit(":", 1)[1])

    @property
    def url(self) -> str:
        return self.advertise_url or f"{'http' if self.plain_http else 'https'}://{self.listen_address}"

    def server_tls(self) -> ServerTLS | None:
        if self.plain_http:
            return None
        return ServerTLS(self.ca_cert, self.server_cert, self.server_key, self.require_client_cert)

    def client_tls(self) -> ssl.SSLContext | None:
        return client_context(self.ca_cert, self.client_cert, self.client_key) if self.ca_cert else None
