"""Declarative health checks (reference §1.1 check_definition, §6.4).

Each check names exactly one kind: `{"tcp_check": {"port": 8080}}` or `{"http_check": {...}}`.
`readiness_checks` toggle an instance's `routable` flag instead of crashing it.
"""
from __future__ import annotations

from pydantic import Field, model_validator

from .base import Model

PortNumber = Field(ge=1, le=65535)


class TCPCheck(Model):
    port: int = PortNumber
    connect_timeout_ms: int | None = Field(default=None, ge=0)
    interval_ms: int | None = Field(default=None, ge=0)


class HTTPCheck(Model):
    port: int = PortNumber
    path: str = "/"
    request_timeout_ms: int | None = Field(default=None, ge=0)
    interval_ms: int | None = Field(default=None, ge=0)


class Check(Model):
    tcp_check: TCPCheck | None = None
    http_check: HTTPCheck | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "Check":
        if (self.tcp_check is None) == (self.http_check is None):
            raise ValueError("a check has exactly one of tcp_check or http_check")
        return self


class CheckDefinition(Model):
    checks: list[Check] = []
    readiness_checks: list[Check] = []
    log_source: str = ""
