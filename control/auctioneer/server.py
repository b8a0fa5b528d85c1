"""Composition root of the auctioneer process: lock `auctioneer` → API → auction runner.

A standby waits at the lock and does not listen (the BBS finds the active one through the lock
value); a process that loses its lock exits. Cells are the presences in the coordination layer.
"""
from __future__ import annotations

import os
import socket

import structlog

from control.client.bbs_client import BBSClient
from control.client.locator import LockLocator
from control.coordination.factory import build as build_coordinator
from control.coordination.members import LockMember, lock_value
from control.kit.etcd import Etcd
from control.kit.http_server import APIServer
from control.kit.supervisor import Runner, run_members
from control.models.cell import CellPresence

from .api import create_app
from .batch import Batch
from .cells import HTTPCellClient
from .config import AuctioneerConfig
from .runner import AuctionRunner, Settings

log = structlog.get_logger("auctioneer")


class Auctioneer:
    def __init__(self, cfg: AuctioneerConfig) -> None:
        self.cfg = cfg
        self.etcd = Etcd(cfg.etcd_endpoints)
        self.coordinator = build_coordinator(cfg.coordination_config, self.etcd)
        self.name = cfg.instance_name or f"auctioneer-{socket.gethostname()}-{os.getpid()}"
        self.lock = LockMember(self.coordinator, "auctioneer", lock_value(self.name, cfg.url), self.etcd,
                               cfg.key_prefix)
        tls = cfg.client_tls()
        self.bbs = BBSClient(cfg.bbs_url, tls=tls, locate=LockLocator(cfg.coordination_config))
        self.cells = HTTPCellClient(tls, cfg.cell_state_timeout.total_seconds(), cfg.work_timeout.total_seconds())
        self.batch = Batch(cfg.max_batch)
        self.runner = AuctionRunner(self.batch, self.list_cells, self.cells, self.bbs, Settings(
            state_timeout=cfg.cell_state_timeout.total_seconds(), bin_pack_weight=cfg.bin_pack_first_fit_weight,
            starting_weight=cfg.starting_container_weight, max_in_flight=cfg.starting_container_count_maximum))
        self.api = APIServer(create_app(self.batch, cfg.max_request_bytes, self._metrics), cfg.host, cfg.port,
                             cfg.server_tls())

    async def list_cells(self) -> list[CellPresence]:
        out = []
        for key, value in (await self.coordinator.presences()).items():
            try:
                out.append(CellPresence.model_validate_json(value))
            except ValueError:
                log.warning("invalid-cell-presence", key=key)
        return out

    def _metrics(self) -> str:
        r = self.runner
        last = r.last.seconds if r.last else 0.0
        return (f"auctioneer_rounds_total {r.rounds}\nauctioneer_placed_total {r.placed_total}\n"
                f"auctioneer_failed_total {r.failed_total}\nauctioneer_last_round_seconds {last}\n"
                f"auctioneer_queued {len(self.batch)}\n")

    def members(self) -> list[tuple[str, Runner]]:
        return [("lock", self.lock), ("api", self.api), ("runner", self.runner)]

    async def run(self) -> None:
        log.info("auctioneer-starting", listen=self.cfg.listen_address, bbs=self.cfg.bbs_url)
        try:
            await run_members(self.members())
        finally:
            await self.cells.aclose()
            await self.bbs.close()
            await self.etcd.close()
