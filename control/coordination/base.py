"""The coordination contract, kept by the Consul and the etcd backends alike.

- A **lock** has at most one holder. `acquire` blocks until this caller holds it; `renew`
  keeps it and reports loss; `release` gives it up at once. The holder publishes a value
  (JSON with its address) that clients read with `holder` to find the active instance.
- A **presence** is a value under a key that exists only while its owner renews it; a dead
  owner's presence disappears within the presence TTL, and `watch_presences` reports the new
  set of presences promptly after every change.

Timing contract: a holder that cannot renew steps down (renew returns False) no later than
`lock_ttl` after its last successful renewal, and no other contender can acquire the lock
before that moment, so two holders are never active at once.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field


class CoordinationConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["consul", "etcd"] = Field("consul", description="where locks and presences live")
    consul_address: str = Field("127.0.0.1:8500", description="Consul agent HTTP address (backend consul)")
    etcd_endpoints: list[str] = Field(["127.0.0.1:2379"], description="etcd endpoints (backend etcd; fences always)")
    key_prefix: str = Field("/pydiego/v1", description="prefix of lock, presence and fence keys")
    lock_ttl: timedelta = Field(timedelta(seconds=3), description="a dead holder's lock is free after at most this long (Consul: 2 x session TTL)")
    lock_retry_interval: timedelta = Field(timedelta(milliseconds=500), description="how often a waiting contender retries at most")
    lock_delay: timedelta = Field(timedelta(0), description="Consul lock-delay after an invalidated session (0 = fail over at once)")
    presence_ttl: timedelta = Field(timedelta(seconds=4), description="a dead owner's presence disappears within this long")


@dataclass
class Held:
    """A held lock: `token` is its fencing token (strictly increasing per lock name)."""

    name: str
    value: bytes
    token: int = 0
    handle: str = ""          # Consul session id or etcd lease id
    renewed_at: float = 0.0   # monotonic time of the last successful renewal (or acquisition)


@dataclass
class Registration:
    key: str
    value: bytes
    handle: str = ""
    renewed_at: float = 0.0


@dataclass(frozen=True)
class LockInfo:
    name: str
    value: bytes
    token: int

    @property
    def doc(self) -> dict[str, object]:
        try:
            parsed = json.loads(self.value)
        except ValueError:
            return {"raw": self.value.decode(errors="replace")}
        return parsed if isinstance(parsed, dict) else {"value": parsed}


@dataclass
class PresenceSet:
    """A snapshot of every live presence, key → value."""

    values: dict[str, bytes] = field(default_factory=dict)


class LockLost(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"lost the {name} lock")
        self.name = name


class Coordinator(Protocol):
    @property
    def renew_interval(self) -> float: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def acquire(self, name: str, value: bytes) -> Held: ...

    async def renew(self, held: Held) -> bool: ...

    async def release(self, held: Held) -> None: ...

    async def holder(self, name: str) -> LockInfo | None: ...

    async def locks(self) -> list[LockInfo]: ...

    async def register(self, key: str, value: bytes) -> Registration: ...

    async def renew_presence(self, reg: Registration) -> None: ...

    async def withdraw(self, reg: Registration) -> None: ...

    async def presences(self) -> dict[str, bytes]: ...

    def watch_presences(self) -> AsyncIterator[dict[str, bytes]]: ...
