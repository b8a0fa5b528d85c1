"""Evacuation (reference §2.5): hand this cell's instances to other cells, then stop.

Started by `POST /evacuate` on the admin API or by SIGTERM. While evacuating, `/state` says so
(the auctioneer skips the cell), `/work` returns everything, and the harmonizer switches to the
evacuation decisions: running instances get an EVACUATING row and keep serving until their
replacement runs elsewhere, everything else is handed back at once. Every
`evacuation_polling_interval` the harmonizer re-runs, until no container is left or
`evacuation_timeout` passes; then the remaining containers are deleted (stranded evacuating
rows are counted and logged) and `done` is set, which ends the rep process.
Tasks never move: they run until they finish or the timeout hits.
"""
from __future__ import annotations

import asyncio
import contextlib

import structlog

from agents.executor.api import ExecutorAPI

from .harmonizer import Harmonizer

log = structlog.get_logger("rep.evacuation")


class Evacuator:
    def __init__(self, executor: ExecutorAPI, harmonizer: Harmonizer, timeout: float, polling_interval: float) -> None:
        self.executor = executor
        self.harmonizer = harmonizer
        self.timeout = timeout
        self.polling_interval = polling_interval
        self.evacuating = False
        self.started = asyncio.Event()
        self.done = asyncio.Event()
        self.stranded = 0

    def start(self) -> None:
        if not self.evacuating:
            log.info("evacuation-started", containers=len(self.executor.list()))
            self.evacuating = True
            self.started.set()

    async def run(self, ready: asyncio.Event) -> None:
        ready.set()
        await self.started.wait()
        await self._evacuate()
        await asyncio.Event().wait()  # the process ends through `done`

    async def evacuate(self) -> None:
        """Start evacuation (idempotent) and wait until it has finished."""
        self.start()
        await self.done.wait()

    async def _evacuate(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while self.executor.list() and loop.time() < deadline:
            try:
                await self.harmonizer.bulk_pass()
            except Exception as exc:  # BBS away: retry until the deadline
                log.warning("evacuation-pass-failed", error=repr(exc))
            if not self.executor.list():
                break
            await asyncio.sleep(min(self.polling_interval, max(0.0, deadline - loop.time())))
        await self._cleanup()
        self.done.set()

    async def _cleanup(self) -> None:
        left = self.executor.list()
        with contextlib.suppress(Exception):
            rows = await self.harmonizer.bbs.actual_lrps(cell_id=self.harmonizer.cell_id)
            self.stranded = sum(1 for r in rows if r.presence.value == "EVACUATING")
        for container in left:
            with contextlib.suppress(Exception):
                await self.executor.delete(container.guid)
        log.info("evacuation-finished", deleted=len(left), stranded_evacuating=self.stranded)
