"""Composition root of the converger process: builds every object from the config and runs them
as supervised members: etcd connection → `converger` lock (fenced writes) → /ping and /metrics →
completion-callback worker → the convergence loop. A standby waits at the lock and does nothing;
the process exits when the lock is lost.
"""
from __future__ import annotations

import os
import socket

import structlog

from control.bbs.controllers.callbacks import CallbackWorker
from control.bbs.controllers.convergence import ConvergenceController
from control.bbs.controllers.task_controller import TaskController
from control.bbs.peers import (AuctioneerClient, HTTPAuctioneer, HTTPRepClient, LocatingAuctioneer, PooledClient,
                               PresenceCellDirectory, RepClient)
from control.bbs.store.domain_store import DomainStore
from control.bbs.store.keys import Keys
from control.bbs.store.lrp_store import LRPStore
from control.bbs.store.task_store import TaskStore
from control.coordination.base import Coordinator
from control.coordination.factory import build as build_coordinator
from control.coordination.members import LockMember, lock_value
from control.kit.clock import Clock, SystemClock, new_guid
from control.kit.etcd import Etcd, EtcdConnection
from control.kit.http_server import APIServer, ServerTLS
from control.kit.supervisor import Runner, run_members
from control.kit.tls import client_context

from .config import ConvergerConfig
from .converger import Converger
from .http import create_app
from .loop import ConvergenceLoop
from .metrics import ConvergerMetrics

log = structlog.get_logger("converger")


class ConvergerProcess:
    """Everything one converger process holds; `members()` lists what the supervisor runs."""

    def __init__(self, cfg: ConvergerConfig, clock: Clock | None = None,
                 auctioneer: AuctioneerClient | None = None, reps: RepClient | None = None,
                 coordinator: Coordinator | None = None) -> None:
        self.cfg = cfg
        self.clock = clock or SystemClock()
        keys = Keys(cfg.key_prefix)
        self.etcd = Etcd(cfg.etcd_endpoints, timeout_s=cfg.etcd_timeout.total_seconds(),
                         page_size=cfg.range_page_size)
        self.coordinator = coordinator or build_coordinator(cfg.coordination_config, self.etcd)
        peer_tls = client_context(cfg.ca_cert, cfg.client_cert, cfg.client_key) if cfg.ca_cert else None
        if auctioneer is None:  # a fixed URL, else the active auctioneer found through its lock
            auctioneer = (HTTPAuctioneer(cfg.auctioneer_url, peer_tls) if cfg.auctioneer_url
                          else LocatingAuctioneer(self.coordinator, peer_tls))
        reps = reps or HTTPRepClient(peer_tls, timeout_s=cfg.rep_timeout.total_seconds())
        self._peers = [p for p in (auctioneer, reps) if isinstance(p, PooledClient)]  # closed by run()
        self.name = cfg.instance_name or f"converger-{socket.gethostname()}-{os.getpid()}"
        self.lock = LockMember(self.coordinator, "converger", lock_value(self.name, cfg.url), self.etcd,
                               cfg.key_prefix)
        lrp_store, task_store = LRPStore(self.etcd, keys), TaskStore(self.etcd, keys)
        self.callbacks: CallbackWorker
        tasks = TaskController(task_store, auctioneer, reps, PresenceCellDirectory(self.coordinator), self.clock,
                               on_completed=lambda task: self.callbacks.submit(task))
        self.callbacks = CallbackWorker(tasks, workers=cfg.callback_workers,
                                        timeout_s=cfg.callback_timeout.total_seconds())
        self.metrics = ConvergerMetrics()
        self.converger = Converger(cfg, lrp_store, task_store, DomainStore(self.etcd, keys), self.coordinator,
                                   ConvergenceController(lrp_store, tasks, reps, new_guid), auctioneer,
                                   self.clock, on_completed=self.callbacks.submit, metrics=self.metrics)
        self.loop = ConvergenceLoop(self.converger, self.coordinator, cfg.interval.total_seconds(),
                                    cfg.presence_debounce.total_seconds())
        tls = ServerTLS(cfg.ca_cert, cfg.server_cert, cfg.server_key, cfg.require_client_cert) if cfg.server_cert else None
        self.http = APIServer(create_app(self.metrics.exposition), cfg.host, cfg.port, tls)

    def members(self) -> list[tuple[str, Runner]]:
        return [("etcd", EtcdConnection(self.etcd)), ("lock", self.lock), ("http", self.http),
                ("callbacks", self.callbacks), ("loop", self.loop)]

    async def run(self) -> None:
        log.info("converger-starting", listen=self.cfg.listen_address, etcd=self.cfg.etcd_endpoints,
                 interval_s=self.cfg.interval.total_seconds())
        try:
            await run_members(self.members())
        finally:
            for peer in self._peers:
                await peer.aclose()
