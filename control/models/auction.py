"""Auction requests: what the BBS asks the auctioneer to place (reference §4.1)."""
from __future__ import annotations

from pydantic import Field

from .base import DomainName, Model, ProcessGuid, TaskGuid


class Resource(Model):
    memory_mb: int = Field(default=0, ge=0)
    disk_mb: int = Field(default=0, ge=0)
    max_pids: int = Field(default=0, ge=0)


class LRPStartRequest(Model):
    process_guid: ProcessGuid
    domain: DomainName
    indices: list[int] = Field(min_length=1)
    resource: Resource = Resource()
    rootfs: str
    placement_tags: list[str] = []
    volume_drivers: list[str] = []


class TaskStartRequest(Model):
    task_guid: TaskGuid
    domain: DomainName
    resource: Resource = Resource()
    rootfs: str
    placement_tags: list[str] = []
    volume_drivers: list[str] = []
