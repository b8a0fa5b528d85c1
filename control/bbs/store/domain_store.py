"""Domains in etcd. A domain with ttl > 0 is attached to an etcd lease of that TTL, so it
disappears by itself when nobody re-upserts it; ttl = 0 keeps it forever (reference §1.5)."""
from __future__ import annotations

import json

from control.kit.etcd import Etcd
from control.models.domain import Domain

from .keys import Keys


class DomainStore:
    def __init__(self, etcd: Etcd, keys: Keys) -> None:
        self.etcd = etcd
        self.keys = keys

    async def upsert(self, name: str, ttl: int, now_ns: int) -> Domain:
        key = self.keys.domain(name)
        previous = await self.etcd.get(key)
        lease = await self.etcd.grant(ttl) if ttl > 0 else None
        domain = Domain(domain=name, ttl=ttl, expires_at=now_ns + ttl * 1_000_000_000 if ttl else 0)
        await self.etcd.put(key, domain.to_json(), lease=lease)
        if previous is not None and previous.lease and previous.lease != lease:
            await self.etcd.revoke(previous.lease)  # the key moved to the new lease
        return domain

    async def fresh(self) -> list[Domain]:
        """Domains that have not expired (expired ones were deleted by their lease)."""
        kvs, _ = await self.etcd.range(self.keys.domains)
        return [Domain.model_validate(json.loads(kv.value)) for kv in kvs]

    async def fresh_names(self) -> set[str]:
        return {d.domain for d in await self.fresh()}
