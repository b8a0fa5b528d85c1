"""Typed views of the per-router payloads in DesiredLRP.routes (reference §7, §8.1).

`routes` stays an opaque map on the wire (Diego keeps it raw JSON), but the keys pydiego's own
routers read are validated here when a DesiredLRP is desired or updated:
- `cf-router`: `[{"hostnames": [...], "port": 8080, "route_service_url"?, "isolation_segment"?}]`
- `tcp-router`: `[{"external_port": 61000, "container_port": 8080, "router_group_guid"?}]`
- `diego-ssh`: `{"container_port": 2222, "private_key"?, "host_fingerprint"?, "user"?, "password"?}`
Other keys are kept untouched for other consumers.
"""
from __future__ import annotations

from typing import Any

from pydantic import Field, TypeAdapter

from .base import Model

CF_ROUTER = "cf-router"
TCP_ROUTER = "tcp-router"
DIEGO_SSH = "diego-ssh"


class HTTPRoute(Model):
    hostnames: list[str] = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    route_service_url: str | None = None
    isolation_segment: str | None = None


class TCPRoute(Model):
    external_port: int = Field(ge=1, le=65535)
    container_port: int = Field(ge=1, le=65535)
    router_group_guid: str | None = None
    host_tls_proxy_port: int | None = None


class SSHRoute(Model):
    container_port: int = Field(ge=1, le=65535)
    private_key: str | None = None
    host_fingerprint: str | None = None
    user: str | None = None
    password: str | None = None


_HTTP = TypeAdapter(list[HTTPRoute])
_TCP = TypeAdapter(list[TCPRoute])
_SSH = TypeAdapter(SSHRoute)

ROUTE_ADAPTERS: dict[str, TypeAdapter[Any]] = {CF_ROUTER: _HTTP, TCP_ROUTER: _TCP, DIEGO_SSH: _SSH}


def http_routes(routes: dict[str, Any] | None) -> list[HTTPRoute]:
    return _HTTP.validate_python((routes or {}).get(CF_ROUTER) or [])


def tcp_routes(routes: dict[str, Any] | None) -> list[TCPRoute]:
    return _TCP.validate_python((routes or {}).get(TCP_ROUTER) or [])


def ssh_route(routes: dict[str, Any] | None) -> SSHRoute | None:
    raw = (routes or {}).get(DIEGO_SSH)
    return None if raw is None else _SSH.validate_python(raw)
