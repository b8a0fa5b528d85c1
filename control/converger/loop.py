"""The convergence loop: a pass every `interval`, and one at once when a cell disappears or comes
back (the presence watch), so a lost cell's instances turn SUSPECT and get replacements within
about a second of its presence expiring instead of up to an interval later (ARCHITECTURE §4).

The first pass waits one interval, as Diego's converger does: after a restart of the control
plane the cells need a presence TTL to register again, and a pass before that would see them all
missing. The interval is counted from the end of a pass. A pass that fails is logged and the
loop carries on (the next tick retries), except when the lock was taken over (FencedOut), which
ends the process.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

import structlog

from control.kit.etcd import FencedOut

log = structlog.get_logger("converger.loop")
WATCH_RETRY_S = 1.0


class PassRunner(Protocol):
    async def run_pass(self) -> Any: ...


class PresenceWatcher(Protocol):
    def watch_presences(self) -> AsyncIterator[dict[str, bytes]]: ...


class ConvergenceLoop:
    def __init__(self, converger: PassRunner, presences: PresenceWatcher, interval_s: float,
                 debounce_s: float = 0.1) -> None:
        self.converger = converger
        self.presences = presences
        self.interval_s = interval_s
        self.debounce_s = debounce_s
        self._wake = asyncio.Event()
        self.passes_started = 0
        self.last_reason = ""

    async def run(self, ready: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch())
            ready.set()
            while True:
                reason = await self._wait()
                self.passes_started += 1
                self.last_reason = reason
                try:
                    await self.converger.run_pass()
                except FencedOut:
                    raise
                except Exception as exc:
                    log.error("convergence-pass-failed", reason=reason, error=repr(exc))

    async def _wait(self) -> str:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s)
        except TimeoutError:
            self._wake.clear()
            return "interval"
        await asyncio.sleep(self.debounce_s)  # let a burst of presence changes settle
        self._wake.clear()
        return "cells-changed"

    async def _watch(self) -> None:
        """Wake the loop whenever the set of presences changes (not on a mere value refresh)."""
        last: frozenset[str] | None = None
        while True:
            try:
                async with contextlib.aclosing(self.presences.watch_presences()) as updates:
                    async for presences in updates:
                        current = frozenset(presences)
                        if last is not None and current != last:
                            log.info("cells-changed", gone=sorted(last - current), back=sorted(current - last))
                            self._wake.set()
                        last = current
            except Exception as exc:
                log.warning("presence-watch-failed", error=str(exc))
            await asyncio.sleep(WATCH_RETRY_S)
