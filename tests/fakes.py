"""Small stateful fakes of the BBS's peers (for component tests of the BBS alone)."""
from __future__ import annotations

from dataclasses import dataclass, field

from control.models.auction import LRPStartRequest, TaskStartRequest
from control.models.cell import CellPresence


@dataclass
class RecordingAuctioneer:
    """Records every batched auction request the BBS sends."""

    lrp_batches: list[list[LRPStartRequest]] = field(default_factory=list)
    task_batches: list[list[TaskStartRequest]] = field(default_factory=list)

    async def request_lrp_auctions(self, requests: list[LRPStartRequest]) -> None:
        self.lrp_batches.append(list(requests))

    async def request_task_auctions(self, requests: list[TaskStartRequest]) -> None:
        self.task_batches.append(list(requests))

    def lrp_indices(self, process_guid: str) -> list[int]:
        return sorted(i for batch in self.lrp_batches for r in batch if r.process_guid == process_guid for i in r.indices)


@dataclass
class RecordingReps:
    """Records stop and cancel calls addressed to reps."""

    stops: list[tuple[str, str, str]] = field(default_factory=list)
    cancels: list[tuple[str, str]] = field(default_factory=list)
    fail: bool = False

    async def stop_lrp_instance(self, cell: CellPresence, process_guid: str, instance_guid: str) -> None:
        if self.fail:
            raise ConnectionError("rep unreachable")
        self.stops.append((cell.cell_id, process_guid, instance_guid))

    async def cancel_task(self, cell: CellPresence, task_guid: str) -> None:
        self.cancels.append((cell.cell_id, task_guid))
