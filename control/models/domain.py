"""Domains: the freshness unit of convergence (reference §1.5)."""
from __future__ import annotations

from pydantic import Field

from .base import Model


class DomainUpsert(Model):
    ttl: int = Field(default=0, ge=0, le=10 * 365 * 24 * 3600, description="seconds; 0 = never expires")


class Domain(Model):
    domain: str
    ttl: int = 0
    expires_at: int = Field(default=0, description="ns since epoch; 0 = never")
