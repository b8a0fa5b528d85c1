"""A converger shell over the session's real etcd (unique key prefix), the etcd coordination
backend for cell presences, a fake clock, and recording fakes for the auctioneer and the reps."""
from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from control.bbs.controllers import lifecycle
from control.bbs.controllers.convergence import ConvergenceController
from control.bbs.controllers.task_controller import TaskController
from control.bbs.peers import PresenceCellDirectory
from control.bbs.store.domain_store import DomainStore
from control.bbs.store.keys import Keys
from control.bbs.store.lrp_store import LRPStore
from control.bbs.store.task_store import TaskStore
from control.converger.config import ConvergerConfig
from control.converger.converger import Converger, PassReport
from control.coordination.base import CoordinationConfig, Registration
from control.coordination.etcd_backend import EtcdCoordinator
from control.kit.clock import FakeClock
from control.kit.etcd import Etcd
from control.models.actual_lrp import ActualLRP, ActualLRPState, Presence
from control.models.cell import CellCapacity, CellPresence
from control.models.desired_lrp import DesiredLRP, ModificationTag
from control.models.task import Task
from tests import factories
from tests.fakes import RecordingAuctioneer, RecordingReps
from tests.servers import EtcdServer

S = ActualLRPState
P = Presence
SEC = 1_000_000_000


@dataclass
class World:
    etcd: Etcd
    keys: Keys
    cfg: ConvergerConfig
    clock: FakeClock
    coordinator: EtcdCoordinator
    auctioneer: RecordingAuctioneer
    reps: RecordingReps
    lrps: LRPStore
    tasks: TaskStore
    converger: Converger
    completed: list[Task]
    registrations: dict[str, Registration] = field(default_factory=dict)
    epochs: Any = field(default_factory=lambda: (f"epoch-{n}" for n in itertools.count(1)))

    # ---- writing state directly through the real store --------------------------------------
    async def desire(self, guid: str, instances: int, domain: str = "apps", rows: bool = False) -> DesiredLRP:
        """A DesiredLRP with no instance rows (or UNCLAIMED ones for every index with rows=True)."""
        desired = DesiredLRP.model_validate(factories.desired_lrp(process_guid=guid, instances=instances, domain=domain))
        desired = desired.model_copy(update={"modification_tag": ModificationTag(epoch=next(self.epochs))})
        actuals = [self.unclaimed(guid, i, domain) for i in range(instances)] if rows else []
        await self.lrps.create_desired(desired, actuals)
        return desired

    def unclaimed(self, guid: str, index: int, domain: str = "apps", age_s: float = 0) -> ActualLRP:
        return lifecycle.new_unclaimed(guid, index, domain, self.clock.now_ns() - int(age_s * SEC), next(self.epochs))

    def running(self, guid: str, index: int, cell: str, domain: str = "apps",
                presence: P = P.ORDINARY, state: S = S.RUNNING) -> ActualLRP:
        data: dict[str, Any] = dict(process_guid=guid, index=index, domain=domain, state=state, presence=presence,
                                    instance_guid=f"ig-{guid}-{index}-{cell}", cell_id=cell,
                                    since=self.clock.now_ns(), modification_tag={"epoch": next(self.epochs), "index": 1})
        if state is S.RUNNING:
            data.update(address="10.0.0.1", ports=[{"container_port": 8080, "host_port": 61001}], routable=True)
        return ActualLRP.model_validate(data)

    def crashed(self, guid: str, index: int, count: int, age_s: float = 0, domain: str = "apps") -> ActualLRP:
        return ActualLRP(process_guid=guid, index=index, domain=domain, state=S.CRASHED, crash_count=count,
                         crash_reason="Exit status 1", since=self.clock.now_ns() - int(age_s * SEC),
                         modification_tag=ModificationTag(epoch=next(self.epochs), index=2))

    async def put(self, *lrps: ActualLRP) -> None:
        for lrp in lrps:
            await self.etcd.put(self.keys.actual_lrp(lrp.process_guid, lrp.index, lrp.presence), lrp.to_json())

    async def rows(self, guid: str) -> dict[int, dict[P, ActualLRP]]:
        return await self.lrps.indices(guid)

    async def domain(self, name: str = "apps") -> None:
        await DomainStore(self.etcd, self.keys).upsert(name, 0, self.clock.now_ns())

    async def add_cell(self, cell_id: str) -> None:
        cell = CellPresence(cell_id=cell_id, rep_url=f"http://127.0.0.1:1/{cell_id}",
                            capacity=CellCapacity(memory_mb=1024, disk_mb=1024, containers=10))
        self.registrations[cell_id] = await self.coordinator.register(cell_id, cell.to_json())

    async def remove_cell(self, cell_id: str) -> None:
        await self.coordinator.withdraw(self.registrations.pop(cell_id))

    async def converge(self) -> PassReport:
        return await self.converger.run_pass()


def build_world(etcd: Etcd, etcd_server: EtcdServer, key_prefix: str, **overrides: Any) -> World:
    keys = Keys(key_prefix)
    coordination = CoordinationConfig(backend="etcd", key_prefix=key_prefix, etcd_endpoints=[etcd_server.endpoint],
                                      presence_ttl=timedelta(seconds=60))
    cfg = ConvergerConfig(etcd_endpoints=[etcd_server.endpoint], key_prefix=key_prefix, coordination=coordination,
                          **overrides)
    clock = FakeClock()
    etcd.page_size = cfg.range_page_size  # as the converger process builds its connection
    coordinator = EtcdCoordinator(coordination, etcd)
    auctioneer, reps = RecordingAuctioneer(), RecordingReps()
    lrps, tasks = LRPStore(etcd, keys), TaskStore(etcd, keys)
    completed: list[Task] = []
    guids = (f"guid-{n}" for n in itertools.count(1))
    task_controller = TaskController(tasks, auctioneer, reps, PresenceCellDirectory(coordinator), clock,
                                     on_completed=completed.append)
    controller = ConvergenceController(lrps, task_controller, reps, lambda: next(guids))
    converger = Converger(cfg, lrps, tasks, DomainStore(etcd, keys), coordinator, controller, auctioneer, clock,
                          on_completed=completed.append)
    return World(etcd, keys, cfg, clock, coordinator, auctioneer, reps, lrps, tasks, converger, completed)


@pytest.fixture
async def world(etcd: Etcd, etcd_server: EtcdServer, key_prefix: str) -> AsyncIterator[World]:
    w = build_world(etcd, etcd_server, key_prefix)
    yield w
    for reg in list(w.registrations.values()):
        await w.coordinator.withdraw(reg)
