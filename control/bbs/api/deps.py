"""What the routes need, built by the composition root."""
from __future__ import annotations

from dataclasses import dataclass

from control.kit.clock import Clock

from ..controllers.lrp_controller import LRPController
from ..controllers.task_controller import TaskController
from ..events.hub import EventHub
from ..peers import CellDirectory
from ..store.domain_store import DomainStore


@dataclass(frozen=True)
class Services:
    lrps: LRPController
    tasks: TaskController
    domains: DomainStore
    cells: CellDirectory
    hub: EventHub
    clock: Clock
