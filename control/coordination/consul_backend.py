"""The coordination contract on Consul (py-consul's asyncio client).

A lock is a KV key acquired with a session (behavior "release", lock-delay configurable); a
presence is a KV key acquired with its own session (behavior "delete"), so it vanishes when the
session is invalidated. Contenders and watchers use blocking queries, so a released lock or a
vanished presence is seen within milliseconds rather than at the next poll.

Consul invalidates a session between TTL and 2 x TTL after its last renewal, so sessions are
created with TTL = 0.45 x lock_ttl (0.45 x presence_ttl): a dead holder's lock is free, and a dead
cell's presence gone, within the configured TTL. Consul refuses TTLs below its
`session_ttl_min` (10 s by default); the local cluster and the Ansible role set it to 1 s.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import consul
import consul.aio
from consul.callback import CB

from control.kit.etcd import Etcd
from control.models.errors import Unavailable

from . import fence
from .base import CoordinationConfig, Held, LockInfo, Registration

ERRORS = (consul.ConsulException, aiohttp.ClientError, asyncio.TimeoutError, OSError)


def _seconds(value: float) -> str:
    return f"{max(value, 0):.3f}s"


class ConsulCoordinator:
    def __init__(self, cfg: CoordinationConfig, etcd: Etcd) -> None:
        self.cfg = cfg
        self.etcd = etcd  # fences always live in etcd, next to the data they protect
        host, _, port = cfg.consul_address.partition(":")
        self.host, self.port = host, int(port or 8500)
        self.client: consul.aio.Consul | None = None
        # 0.45 rather than 0.5 leaves Consul's invalidation timer a little slack; 1 s is the
        # lowest session TTL Consul accepts even with session_ttl_min lowered
        self.lock_session_ttl = max(1.0, cfg.lock_ttl.total_seconds() * 0.45)
        self.presence_session_ttl = max(1.0, cfg.presence_ttl.total_seconds() * 0.45)

    @property
    def c(self) -> consul.aio.Consul:
        assert self.client is not None, "open() first"
        return self.client

    def _key(self, kind: str, name: str) -> str:
        return f"{self.cfg.key_prefix.strip('/')}/{kind}/{name}"

    async def open(self) -> None:
        self.client = consul.aio.Consul(host=self.host, port=self.port, connections_timeout=30)
        await self.etcd.connect()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def _session(self, name: str, ttl: float, behavior: str) -> str:
        body = json.dumps({"Name": name, "TTL": _seconds(ttl), "Behavior": behavior,
                           "LockDelay": _seconds(self.cfg.lock_delay.total_seconds())})
        try:
            sid = await self.c.http.put(CB.json(is_id=True), "/v1/session/create", data=body)
        except ERRORS as exc:
            raise Unavailable(f"consul session create failed: {exc}") from exc
        return str(sid)

    async def _destroy(self, sid: str) -> None:
        try:
            await self.c.session.destroy(sid)
        except ERRORS:
            pass  # already invalidated, or Consul is away: the TTL ends it

    # ---- locks --------------------------------------------------------------------------------
    @property
    def renew_interval(self) -> float:
        return min(self.lock_session_ttl, self.presence_session_ttl) / 3

    async def acquire(self, name: str, value: bytes) -> Held:
        key = self._key("locks", name)
        retry = self.cfg.lock_retry_interval.total_seconds()
        sid = ""
        while True:
            try:
                index, data = await self.c.kv.get(key)
                if data is not None and data.get("Session"):
                    # held: block until the holder's session goes (released or invalidated)
                    await self.c.kv.get(key, index=index, wait="5s")
                    continue
                if sid:
                    await self.c.session.renew(sid)
                else:
                    sid = await self._session(f"lock-{name}", self.lock_session_ttl, "release")
                started = time.monotonic()
                if await self.c.kv.put(key, value, acquire=sid):
                    token = await fence.bump(self.etcd, self.cfg.key_prefix, name)
                    return Held(name, value, token, sid, started)
                await asyncio.sleep(retry)  # lost a race, or inside the lock-delay
            except consul.NotFound:
                sid = ""  # our session expired meanwhile: make a new one
            except (Unavailable, *ERRORS):
                sid = ""
                await asyncio.sleep(retry)

    async def renew(self, held: Held) -> bool:
        sent = time.monotonic()
        try:
            await self.c.session.renew(held.handle)
            _, data = await self.c.kv.get(self._key("locks", held.name))
        except consul.NotFound:
            return False  # the session was invalidated
        except ERRORS:
            return time.monotonic() - held.renewed_at < self.lock_session_ttl
        if data is None or data.get("Session") != held.handle:
            return False
        held.renewed_at = sent
        return True

    async def release(self, held: Held) -> None:
        try:
            await self.c.kv.put(self._key("locks", held.name), held.value, release=held.handle)
        except ERRORS:
            pass
        await self._destroy(held.handle)

    async def holder(self, name: str) -> LockInfo | None:
        try:
            _, data = await self.c.kv.get(self._key("locks", name))
        except ERRORS as exc:
            raise Unavailable(f"consul read failed: {exc}") from exc
        if data is None or not data.get("Session"):
            return None
        return LockInfo(name, data.get("Value") or b"", await fence.current(self.etcd, self.cfg.key_prefix, name))

    async def locks(self) -> list[LockInfo]:
        prefix = self._key("locks", "")
        try:
            _, items = await self.c.kv.get(prefix, recurse=True)
        except ERRORS as exc:
            raise Unavailable(f"consul read failed: {exc}") from exc
        out = []
        for item in items or []:
            if item.get("Session"):
                name = item["Key"][len(prefix):]
                out.append(LockInfo(name, item.get("Value") or b"", await fence.current(self.etcd, self.cfg.key_prefix, name)))
        return out

    # ---- presences ----------------------------------------------------------------------------
    async def register(self, key: str, value: bytes) -> Registration:
        sid = await self._session(f"presence-{key}", self.presence_session_ttl, "delete")
        try:
            ok = await self.c.kv.put(self._key("cells", key), value, acquire=sid)
        except ERRORS as exc:
            await self._destroy(sid)
            raise Unavailable(f"consul write failed: {exc}") from exc
        if not ok:
            await self._destroy(sid)
            raise Unavailable(f"presence {key} is held by another session (a second rep with the same cell id?)")
        return Registration(key, value, sid, time.monotonic())

    async def renew_presence(self, reg: Registration) -> None:
        sent = time.monotonic()
        try:
            await self.c.session.renew(reg.handle)
        except consul.NotFound:
            fresh = await self.register(reg.key, reg.value)  # invalidated while we live: come back
            reg.handle = fresh.handle
        except ERRORS as exc:
            raise Unavailable(f"consul renew failed: {exc}") from exc
        reg.renewed_at = sent

    async def withdraw(self, reg: Registration) -> None:
        await self._destroy(reg.handle)

    async def presences(self) -> dict[str, bytes]:
        try:
            _, items = await self.c.kv.get(self._key("cells", ""), recurse=True)
        except ERRORS as exc:
            raise Unavailable(f"consul read failed: {exc}") from exc
        return self._presence_map(items)

    def _presence_map(self, items: list[dict[str, Any]] | None) -> dict[str, bytes]:
        prefix = self._key("cells", "")
        return {i["Key"][len(prefix):]: i.get("Value") or b"" for i in items or [] if i.get("Session")}

    async def watch_presences(self) -> AsyncIterator[dict[str, bytes]]:
        """The full set now, then again after every change, with blocking queries."""
        index = None
        last: dict[str, bytes] | None = None
        retry = self.cfg.lock_retry_interval.total_seconds()
        while True:
            try:
                new_index, items = await self.c.kv.get(self._key("cells", ""), recurse=True, index=index, wait="30s")
            except ERRORS:
                await asyncio.sleep(retry)
                continue
            if index is not None and new_index is not None and int(new_index) < int(index):
                new_index = None  # Consul's index went backwards (restart): start over
            index = new_index
            current = self._presence_map(items)
            if current != last:
                last = current
                yield dict(current)
