"""Supervisor members that hold a lock or a presence for their process.

`LockMember` is the gate of an active/passive singleton: it signals ready only once the lock
is held (so the members after it start only then), sets the fencing token on the process's
etcd connection, renews the lock, and raises LockLost when it is lost, which ends the whole
process (its service manager restarts it, and it waits for the lock again). On a clean stop
it releases the lock at once, so a standby takes over without waiting for a TTL.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable

import structlog

from control.kit.etcd import Etcd

from . import fence
from .base import Coordinator, LockLost, Registration

log = structlog.get_logger("coordination")


def lock_value(owner: str, address: str) -> bytes:
    return json.dumps({"owner": owner, "address": address, "pid": os.getpid()}).encode()


class LockMember:
    def __init__(self, coordinator: Coordinator, name: str, value: bytes, etcd: Etcd | None = None,
                 key_prefix: str = "/pydiego/v1") -> None:
        self.coordinator = coordinator
        self.name = name
        self.value = value
        self.etcd = etcd
        self.key_prefix = key_prefix
        self.token = 0

    async def run(self, ready: asyncio.Event) -> None:
        await self.coordinator.open()
        held = None
        try:
            log.info("lock-waiting", lock=self.name)
            held = await self.coordinator.acquire(self.name, self.value)
            self.token = held.token
            if self.etcd is not None:
                self.etcd.fence = (fence.fence_key(self.key_prefix, self.name), fence.encode(held.token))
            log.info("lock-acquired", lock=self.name, token=held.token)
            ready.set()
            while True:
                await asyncio.sleep(self.coordinator.renew_interval)
                if not await self.coordinator.renew(held):
                    log.error("lock-lost", lock=self.name, token=held.token)
                    held = None
                    raise LockLost(self.name)
        finally:
            if held is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.coordinator.release(held))
                log.info("lock-released", lock=self.name)
            await self.coordinator.close()


class PresenceMember:
    """Keeps a presence registered while the process lives; withdraws it on a clean stop.
    Renewal failures are retried (the owner is alive), never fatal."""

    def __init__(self, coordinator: Coordinator, key: str, value: Callable[[], bytes]) -> None:
        self.coordinator = coordinator
        self.key = key
        self.value = value

    async def run(self, ready: asyncio.Event) -> None:
        await self.coordinator.open()
        reg: Registration | None = None
        try:
            while reg is None:
                try:
                    reg = await self.coordinator.register(self.key, self.value())
                except Exception as exc:  # store down: keep trying, we are alive
                    log.warning("presence-register-failed", key=self.key, error=str(exc))
                    await asyncio.sleep(self.coordinator.renew_interval)
            log.info("presence-registered", key=self.key)
            ready.set()
            while True:
                await asyncio.sleep(self.coordinator.renew_interval)
                try:
                    await self.coordinator.renew_presence(reg)
                except Exception as exc:
                    log.warning("presence-renew-failed", key=self.key, error=str(exc))
        finally:
            if reg is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.coordinator.withdraw(reg))
            await self.coordinator.close()
