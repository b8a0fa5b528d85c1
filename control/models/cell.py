"""CellPresence: what a rep advertises about itself (reference §1.4)."""
from __future__ import annotations

from pydantic import Field

from .base import CellId, Model


class CellCapacity(Model):
    memory_mb: int = Field(ge=0)
    disk_mb: int = Field(ge=0)
    containers: int = Field(ge=0)


class Provider(Model):
    name: str
    properties: list[str] = []


class CellPresence(Model):
    cell_id: CellId = Field(min_length=1)
    rep_address: str = ""
    rep_url: str = ""
    zone: str = ""
    capacity: CellCapacity
    rootfs_provider_list: list[Provider] = []
    placement_tags: list[str] = []
    optional_placement_tags: list[str] = []
    annotations: dict[str, str] = {}
