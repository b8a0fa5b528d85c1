"""The rep's wire contract, shared by the rep and the auctioneer: the work the auctioneer posts
and the state it reads (reference §4.7, §6.1).

`Work` is what `POST /work` takes and returns (the returned Work holds what could NOT be taken,
each with its reason). `CellState` is `GET /state`: capacity, what is free, what runs here.
"""
from __future__ import annotations

from pydantic import Field

from .auction import Resource
from .base import CellId, DomainName, Guid, Model, ProcessGuid, TaskGuid
from .cell import Provider

MAX_WORK_ITEMS = 10_000


class LRPWork(Model):
    process_guid: ProcessGuid
    index: int = Field(ge=0)
    domain: DomainName
    resource: Resource = Resource()
    rootfs: str = Field(min_length=1)
    placement_tags: list[str] = []
    reason: str = Field("", description="only in a /work answer: why this item was not taken")


class TaskWork(Model):
    task_guid: TaskGuid
    domain: DomainName
    resource: Resource = Resource()
    rootfs: str = Field(min_length=1)
    placement_tags: list[str] = []
    reason: str = Field("", description="only in a /work answer: why this item was not taken")


class Work(Model):
    cell_id: CellId = ""
    lrps: list[LRPWork] = Field([], max_length=MAX_WORK_ITEMS)
    tasks: list[TaskWork] = Field([], max_length=MAX_WORK_ITEMS)


class Resources(Model):
    memory_mb: int = 0
    disk_mb: int = 0
    containers: int = 0


class StateLRP(Model):
    process_guid: str
    instance_guid: str
    index: int
    domain: str
    rootfs: str = ""
    memory_mb: int = 0
    disk_mb: int = 0
    max_pids: int = 0
    state: str = Field(description="CLAIMED, RUNNING, SHUTDOWN or CRASHED (reference §6.1)")


class StateTask(Model):
    task_guid: str
    domain: str
    rootfs: str = ""
    memory_mb: int = 0
    disk_mb: int = 0
    state: str
    failed: bool = False


class CellState(Model):
    cell_id: str
    rep_url: str
    zone: str
    rootfs_providers: list[Provider]
    total_resources: Resources
    available_resources: Resources
    starting_container_count: int
    running_container_count: int
    lrps: list[StateLRP]
    tasks: list[StateTask]
    evacuating: bool
    placement_tags: list[str] = []
    optional_placement_tags: list[str] = []


class EvacuateAnswer(Model):
    ping_path: str = "/ping"


__all__ = ["CellState", "EvacuateAnswer", "Guid", "LRPWork", "Resources", "StateLRP", "StateTask", "TaskWork", "Work"]
