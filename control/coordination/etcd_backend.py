"""The coordination contract on etcd: a lock is a key created in a transaction only while it
is absent and bound to the holder's lease; a presence is a key bound to its owner's lease.

Waiting contenders watch the lock key and retry as soon as it is deleted (released, or its
lease expired), so failover after a clean release takes one watch round trip.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

from control.kit.etcd import Etcd, Txn
from control.models.errors import Unavailable

from . import fence
from .base import CoordinationConfig, Held, LockInfo, Registration


class EtcdCoordinator:
    def __init__(self, cfg: CoordinationConfig, etcd: Etcd) -> None:
        self.cfg = cfg
        self.etcd = etcd
        self.lock_ttl_s = max(1, math.ceil(cfg.lock_ttl.total_seconds()))
        self.presence_ttl_s = max(1, math.ceil(cfg.presence_ttl.total_seconds()))

    def _lock_key(self, name: str) -> bytes:
        return f"{self.cfg.key_prefix}/locks/{name}".encode()

    def _presence_prefix(self) -> bytes:
        return f"{self.cfg.key_prefix}/cells/".encode()

    @property
    def renew_interval(self) -> float:
        return min(self.lock_ttl_s, self.presence_ttl_s) / 4

    async def open(self) -> None:
        await self.etcd.connect()

    async def close(self) -> None:
        pass  # the etcd connection belongs to the caller

    # ---- locks --------------------------------------------------------------------------------
    async def _try_acquire(self, name: str, value: bytes) -> Held | None:
        """One transaction creates the lock key (only if absent) and bumps the fence counter
        (only if unchanged since read), so acquisition and token are atomic."""
        fence_key = fence.fence_key(self.cfg.key_prefix, name)
        current = await self.etcd.get(fence_key)
        token = (int(current.value) if current else 0) + 1
        lease = await self.etcd.grant(self.lock_ttl_s)
        started = time.monotonic()
        key = self._lock_key(name)
        txn = Txn()
        txn.expect_rev(self.etcd.tx, key, None)
        txn.expect_rev(self.etcd.tx, fence_key, current.mod_revision if current else None)
        txn.put(self.etcd.tx, key, value, lease=lease)
        txn.put(self.etcd.tx, fence_key, fence.encode(token))
        if await self.etcd.commit(txn, fenced=False):
            return Held(name, value, token, str(lease), started)
        await self.etcd.revoke(lease)
        return None

    async def acquire(self, name: str, value: bytes) -> Held:
        retry = self.cfg.lock_retry_interval.total_seconds()
        while True:
            try:
                held = await self._try_acquire(name, value)
                if held is not None:
                    return held
                await self._wait_for_release(name, retry)
            except Unavailable:
                await asyncio.sleep(retry)

    async def _wait_for_release(self, name: str, timeout: float) -> None:
        key = self._lock_key(name)
        start = await self.etcd.revision() + 1
        if await self.etcd.get(key) is None:
            return

        async def deleted() -> None:
            async for batch in self.etcd.watch_prefix(key, start):
                if any(c.key == key and c.value is None for c in batch):
                    return
        try:
            await asyncio.wait_for(deleted(), timeout=max(timeout, 0.05) * 10)
        except TimeoutError:
            pass

    async def renew(self, held: Held) -> bool:
        """False once the lock is lost: the lease expired or the key is not ours, or renewals
        have failed for longer than the TTL (the lease may have expired meanwhile)."""
        sent = time.monotonic()
        try:
            ttl = await self.etcd.refresh(int(held.handle))
            current = await self.etcd.get(self._lock_key(held.name))
        except Unavailable:
            return time.monotonic() - held.renewed_at < self.lock_ttl_s * 0.8
        if ttl <= 0 or current is None or current.lease != int(held.handle):
            return False
        held.renewed_at = sent
        return True

    async def release(self, held: Held) -> None:
        # revoking the lease deletes the lock key with it, in one step, and only if it is ours
        await self.etcd.revoke(int(held.handle))

    async def holder(self, name: str) -> LockInfo | None:
        kv = await self.etcd.get(self._lock_key(name))
        if kv is None:
            return None
        return LockInfo(name, kv.value, await fence.current(self.etcd, self.cfg.key_prefix, name))

    async def locks(self) -> list[LockInfo]:
        prefix = f"{self.cfg.key_prefix}/locks/".encode()
        kvs, _ = await self.etcd.range(prefix)
        out = []
        for kv in kvs:
            name = kv.key[len(prefix):].decode()
            out.append(LockInfo(name, kv.value, await fence.current(self.etcd, self.cfg.key_prefix, name)))
        return out

    # ---- presences ----------------------------------------------------------------------------
    async def register(self, key: str, value: bytes) -> Registration:
        lease = await self.etcd.grant(self.presence_ttl_s)
        await self.etcd.put(self._presence_prefix() + key.encode(), value, lease=lease, fenced=False)
        return Registration(key, value, str(lease), time.monotonic())

    async def renew_presence(self, reg: Registration) -> None:
        """Keep the presence; if it expired while its owner lives (an etcd outage longer than
        the TTL), put it back under a new lease."""
        sent = time.monotonic()
        ttl = await self.etcd.refresh(int(reg.handle))
        if ttl <= 0:
            fresh = await self.register(reg.key, reg.value)
            reg.handle = fresh.handle
        reg.renewed_at = sent

    async def withdraw(self, reg: Registration) -> None:
        await self.etcd.revoke(int(reg.handle))

    async def presences(self) -> dict[str, bytes]:
        prefix = self._presence_prefix()
        kvs, _ = await self.etcd.range(prefix)
        return {kv.key[len(prefix):].decode(): kv.value for kv in kvs}

    async def watch_presences(self) -> AsyncIterator[dict[str, bytes]]:
        """The full set now, then again after every change (a watch, not polling)."""
        prefix = self._presence_prefix()
        kvs, revision = await self.etcd.range(prefix)
        current = {kv.key[len(prefix):].decode(): kv.value for kv in kvs}
        yield dict(current)
        async for batch in self.etcd.watch_prefix(prefix, revision + 1):
            for change in batch:
                name = change.key[len(prefix):].decode()
                if change.value is None:
                    current.pop(name, None)
                else:
                    current[name] = change.value
            yield dict(current)
