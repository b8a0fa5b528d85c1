"""Composition root of the rep process: one cell's agent (reference §6).

```
 backend (runc) ─► executor ─► harmonizer ◄─► BBS        auctioneer ─► cell API (/state, /work, ...)
                     ▲  events      │  bulk pass 30 s                 admin API (/ping, /evacuate)
                     └──────────────┘                                 presence (Consul/etcd)
```
Members start in that order, so the presence appears only once the cell can take work. SIGTERM
and `POST /evacuate` evacuate (reference §2.5) and then end the process with status 0. SIGINT
stops at once and leaves the containers running: a rep started again on the same directories
re-adopts them (an in-place upgrade or a crash looks the same to the containers).
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

import structlog

from control.client.bbs_client import BBSClient
from control.client.locator import LockLocator
from control.coordination.factory import build as build_coordinator
from control.coordination.members import PresenceMember
from control.kit.clock import Clock, SystemClock
from control.kit.etcd import Etcd
from control.kit.http_server import APIServer
from control.kit.supervisor import Runner, run_members
from control.models.cell import CellCapacity, CellPresence, Provider

from agents.executor.executor import Executor
from agents.garden.images import ImageStore
from agents.garden.runc import BackendRunner, RuncBackend

from .api import create_admin_app, create_cell_app
from .cell import CellRep
from .config import RepConfig
from .evacuation import Evacuator
from .harmonizer import Harmonizer

log = structlog.get_logger("rep")


class Rep:
    def __init__(self, cfg: RepConfig, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.clock = clock or SystemClock()
        self.backend = RuncBackend(cfg.garden)
        self.images = ImageStore(cfg.image_cache_dir, cfg.stacks, insecure_registries=cfg.insecure_registries)
        executor_cfg = cfg.executor.model_copy(update={"external_ip": cfg.external_ip})
        self.executor = Executor(executor_cfg, self.backend, self.images, self.clock)
        tls = cfg.client_tls()
        coordination = cfg.coordination
        self.bbs = BBSClient(cfg.bbs_url, tls=tls, locate=LockLocator(coordination))
        self.harmonizer = Harmonizer(self.bbs, self.executor, cfg.cell_id, cfg.polling_interval.total_seconds(),
                                     evacuating=lambda: self.evacuator.evacuating)
        self.evacuator = Evacuator(self.executor, self.harmonizer, cfg.evacuation_timeout.total_seconds(),
                                   cfg.evacuation_polling_interval.total_seconds())
        self.cell = CellRep(self.executor, cfg.cell_id, cfg.url, cfg.zone, self.images.providers, self.images.offers,
                            evacuating=lambda: self.evacuator.evacuating, placement_tags=cfg.placement_tags,
                            optional_placement_tags=cfg.optional_placement_tags)
        self.api = APIServer(create_cell_app(self.cell, self.executor, cfg.max_request_bytes, self._metrics),
                             cfg.host, cfg.port, cfg.server_tls())
        admin_host, _, admin_port = cfg.admin_listen_address.rpartition(":")
        self.admin = APIServer(create_admin_app(self.evacuator.start), admin_host, int(admin_port), None)
        self._etcd = Etcd(coordination.etcd_endpoints) if coordination.backend == "etcd" else None
        self.presence = PresenceMember(build_coordinator(coordination, self._etcd),
                                       cfg.presence_prefix + cfg.cell_id, self.presence_value)

    def presence_value(self) -> bytes:
        total = self.executor.total_resources()
        presence = CellPresence(
            cell_id=self.cfg.cell_id, rep_address=self.cfg.url, rep_url=self.cfg.url, zone=self.cfg.zone,
            capacity=CellCapacity(memory_mb=total.memory_mb, disk_mb=total.disk_mb, containers=total.containers),
            rootfs_provider_list=[Provider(name=n, properties=p) for n, p in self.images.providers()],
            placement_tags=self.cfg.placement_tags, optional_placement_tags=self.cfg.optional_placement_tags)
        return presence.to_json()

    def _metrics(self) -> str:
        return self.executor.metrics_snapshot().prometheus() + (f"rep_harmonizer_passes_total {self.harmonizer.passes}\n"
                f"rep_harmonizer_errors_total {self.harmonizer.errors}\n"
                f"rep_evacuating {int(self.evacuator.evacuating)}\n")

    def members(self) -> list[tuple[str, Runner]]:
        return [("backend", BackendRunner(self.backend)), ("executor", self.executor),
                ("harmonizer", self.harmonizer), ("api", self.api), ("admin", self.admin),
                ("presence", self.presence), ("evacuator", self.evacuator)]

    async def run(self) -> int:
        log.info("rep-starting", cell_id=self.cfg.cell_id, listen=self.cfg.listen_address, bbs=self.cfg.bbs_url,
                 stacks=json.dumps(self.cfg.stacks))
        members = asyncio.ensure_future(run_members(self.members()))
        done = asyncio.ensure_future(self.evacuator.done.wait())
        try:
            await asyncio.wait([members, done], return_when=asyncio.FIRST_COMPLETED)
            if members.done():
                members.result()
                return 1
            log.info("rep-exiting-after-evacuation")
            return 0
        finally:
            for fut in (done, members):
                fut.cancel()
            await asyncio.wait([members, done])
            await self._close()

    async def _close(self) -> None:
        await self.cell.aclose()
        await self.bbs.close()
        await self.images.aclose()
        if self._etcd is not None:
            await self._etcd.close()

    async def evacuate(self) -> None:
        """SIGTERM: evacuate, then the process ends (run() returns)."""
        await self.evacuator.evacuate()


def build(cfg: RepConfig, **kwargs: Any) -> Rep:
    return Rep(cfg, **kwargs)
