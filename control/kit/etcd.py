"""A thin asyncio etcd v3 layer over aetcd: paged ranges, compare-and-swap transactions,
leases, and watches that resume after a server restart.

Limits: aetcd does not resume watches by itself (environment.md §4); `watch_prefix` here
re-creates the watch from the last seen revision + 1 and gives up only when cancelled. A
range larger than gRPC's message limit is read in pages of `page_size` keys.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aetcd
import aetcd.exceptions
import grpc
from aetcd import rpc, utils

from control.models.errors import Unavailable

MAX_MESSAGE = 256 * 1024 * 1024


class FencedOut(Unavailable):
    """This process's lock was taken over: its writes are refused."""

    type = "FencedOut"


@dataclass(frozen=True, slots=True)
class KV:
    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int = 0
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Change:
    """One watched change: `value`/`prev` are None for absent (created/deleted) keys."""

    key: bytes
    value: bytes | None
    prev: bytes | None
    revision: int


@dataclass(slots=True)
class Txn:
    """Compares and operations accumulated for one etcd transaction."""

    compares: list[Any] = field(default_factory=list)
    ops: list[Any] = field(default_factory=list)

    def expect_rev(self, tx: Any, key: bytes, mod_revision: int | None) -> None:
        """Expect `key` unchanged since it was read (or still absent when None)."""
        if mod_revision is None:
            self.compares.append(tx.version(key) == 0)
        else:
            self.compares.append(tx.mod(key) == mod_revision)

    def put(self, tx: Any, key: bytes, value: bytes, lease: int | None = None) -> None:
        self.ops.append(tx.put(key, value, lease=lease))

    def delete(self, tx: Any, key: bytes) -> None:
        self.ops.append(tx.delete(key))


class Etcd:
    """Connection to an etcd cluster (first reachable endpoint of `endpoints`)."""

    def __init__(self, endpoints: Sequence[str], timeout_s: float = 5.0, page_size: int = 5000) -> None:
        host, _, port = endpoints[0].removeprefix("http://").partition(":")
        self._endpoints = list(endpoints)
        self._client = aetcd.Client(host=host, port=int(port or 2379), timeout=timeout_s, options={
            "grpc.max_receive_message_length": MAX_MESSAGE,
            "grpc.max_send_message_length": MAX_MESSAGE,
        })
        self.page_size = page_size
        # (fence key, token) once this process holds a lock: every write is then conditional
        # on the fence still carrying our token (see control/coordination/fence.py).
        self.fence: tuple[bytes, bytes] | None = None

    @property
    def tx(self) -> Any:
        return self._client.transactions

    async def connect(self) -> None:
        try:
            await self._client.connect()
            await self._client.status()
        except (aetcd.exceptions.ClientError, grpc.aio.AioRpcError) as exc:
            raise Unavailable(f"etcd at {self._endpoints[0]} is unreachable: {exc}") from exc

    async def close(self) -> None:
        await self._client.close()

    async def get(self, key: bytes) -> KV | None:
        try:
            got = await self._client.get(key)
        except (aetcd.exceptions.ClientError, grpc.aio.AioRpcError) as exc:
            raise Unavailable(f"etcd get failed: {exc}") from exc
        if got is None:
            return None
        return KV(key, got.value, got.mod_revision, got.create_revision, got.lease)

    async def range(self, prefix: bytes, keys_only: bool = False) -> tuple[list[KV], int]:
        """Every key under `prefix`, read in pages at one revision; returns (kvs, revision)."""
        return await self._range(prefix, keys_only, values_only=False)  # type: ignore[return-value]

    async def range_values(self, prefix: bytes) -> list[bytes]:
        """Only the values under `prefix` (no per-row objects: the fast path of big lists)."""
        values, _ = await self._range(prefix, False, values_only=True)
        return values  # type: ignore[return-value]

    async def _range(self, prefix: bytes, keys_only: bool, values_only: bool) -> tuple[list[object], int]:
        end = utils.prefix_range_end(prefix)
        start, revision, out = prefix, 0, []  # type: ignore[var-annotated]
        try:
            await self._client.connect()
            while True:
                req = rpc.RangeRequest(key=start, range_end=end, limit=self.page_size,
                                       revision=revision, keys_only=keys_only)
                resp = await self._client.kvstub.Range(req, timeout=30)
                if not revision:
                    revision = resp.header.revision
                if values_only:
                    out.extend(kv.value for kv in resp.kvs)
                else:
                    out.extend(KV(kv.key, kv.value, kv.mod_revision, kv.create_revision, kv.lease)
                               for kv in resp.kvs)
                if not resp.more or not resp.kvs:
                    return out, revision
                start = resp.kvs[-1].key + b"\x00"
        except (aetcd.exceptions.ClientError, grpc.aio.AioRpcError) as exc:
            raise Unavailable(f"etcd range failed: {_reason(exc)}") from exc

    async def commit(self, txn: Txn, fenced: bool = True) -> bool:
        """Run the transaction; True when every compare held and the ops were applied.
        With a fence set, raises FencedOut when a newer lock holder has taken over."""
        compares = list(txn.compares)
        if fenced and self.fence is not None:
            compares.append(self.tx.value(self.fence[0]) == self.fence[1])
        try:
            ok, _ = await self._client.transaction(compare=compares, success=txn.ops, failure=[])
        except (aetcd.exceptions.ClientError, grpc.aio.AioRpcError) as exc:
            raise Unavailable(f"etcd transaction failed: {_reason(exc)}") from exc
        if not ok and fenced and self.fence is not None:
            current = await self.get(self.fence[0])
            if current is None or current.value != self.fence[1]:
                raise FencedOut(f"fenced out: lock token {int(self.fence[1])} was superseded "
                                f"by {int(current.value) if current else 'nothing'}")
        return bool(ok)

    async def put(self, key: bytes, value: bytes, lease: int | None = None, fenced: bool = True) -> None:
        txn = Txn()
        txn.put(self.tx, key, value, lease=lease)
        if not await self.commit(txn, fenced):
            raise Unavailable("etcd put refused")  # only a fence can refuse an unconditional put

    async def delete(self, key: bytes, fenced: bool = True) -> None:
        txn = Txn()
        txn.delete(self.tx, key)
        if not await self.commit(txn, fenced):
            raise Unavailable("etcd delete refused")

    async def grant(self, ttl_s: int) -> int:
        try:
            lease = await self._client.lease(ttl_s)
        except (aetcd.exceptions.ClientError, grpc.aio.AioRpcError) as exc:
            raise Unavailable(f"etcd lease failed: {_reason(exc)}") from exc
        return lease.id

    async def revoke(self, lease_id: int) -> None:
        try:
            await self._client.revoke_lease(lease_id)
        except (aetcd.exceptions.ClientError, grpc.aio.AioRpcError):
            pass  # already expired or revoked: nothing left to release

    async def refresh(self, lease_id: int) -> int:
        """Keep a lease alive; returns its new TTL in seconds, or 0 when it has expired."""
        try:
            reply = await self._client.refresh_lease(lease_id)
        except (aetcd.exceptions.ClientError, grpc.aio.AioRpcError) as exc:
            raise Unavailable(f"etcd lease refresh failed: {_reason(exc)}") from exc
        return max(0, int(reply.TTL)) if reply is not None else 0

    async def revision(self) -> int:
        """The store's current revision (watch from revision + 1 to see only new changes)."""
        try:
            await self._client.connect()
            resp = await self._client.kvstub.Range(rpc.RangeRequest(key=b"\x00", limit=1, count_only=True), timeout=5)
        except (aetcd.exceptions.ClientError, grpc.aio.AioRpcError) as exc:
            raise Unavailable(f"etcd is unreachable: {_reason(exc)}") from exc
        return int(resp.header.revision)

    async def watch_prefix(self, prefix: bytes, start_revision: int,
                           retry_s: float = 0.5) -> AsyncIterator[list[Change]]:
        """Yield the changes under `prefix` from `start_revision` on, one list per etcd watch
        response, so a transaction's changes arrive together. Resumes after errors."""
        next_rev = start_revision
        end = utils.prefix_range_end(prefix)
        loop = asyncio.get_running_loop()
        while True:
            batches: asyncio.Queue[list[Change] | BaseException] = asyncio.Queue()  # drained at once by the hub
            pending: list[Change] = []

            def flush() -> None:
                if pending:
                    batch = pending.copy()
                    pending.clear()
                    batches.put_nowait(batch)

            async def on_event(event_or_error: Any) -> None:
                # aetcd calls this for every event of a response without suspending between
                # them, so a flush scheduled with call_soon runs after the whole response.
                if event_or_error is None:
                    return  # aetcd's end-of-watch marker after a cancel
                if isinstance(event_or_error, BaseException):
                    batches.put_nowait(event_or_error)
                    return
                if not pending:
                    loop.call_soon(flush)
                pending.append(_change(event_or_error))

            callback = None
            try:
                await self._client.connect()
                callback = await self._client._watcher.add_callback(
                    prefix, on_event, range_end=end, start_revision=next_rev, prev_kv=True)
                while True:
                    item = await batches.get()
                    if isinstance(item, BaseException):
                        raise item
                    next_rev = item[-1].revision + 1
                    yield item
            except aetcd.exceptions.RevisionCompactedError as exc:
                # History before the compaction is gone; resume from the oldest revision kept.
                next_rev = exc.compacted_revision
            except (aetcd.exceptions.ClientError, grpc.aio.AioRpcError):
                await asyncio.sleep(retry_s)  # etcd restarting or unreachable: resume from next_rev
            finally:
                if callback is not None and callback.watch_id is not None:
                    try:
                        await self._client._watcher.cancel(callback.watch_id)
                    except Exception:  # the stream is already gone after a server restart
                        pass


def _reason(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    return str(details() if callable(details) else exc).splitlines()[0][:200]


def _change(event: Any) -> Change:
    # aetcd always passes a prev_kv message; an absent previous key has create_revision 0
    prev = event.prev_kv.value if event.prev_kv is not None and event.prev_kv.create_revision else None
    return Change(key=event.kv.key, value=None if event.kind == "DELETE" else event.kv.value,
                  prev=prev, revision=event.kv.mod_revision)


class EtcdConnection:
    """An Etcd connection as a supervised member: connected before ready, closed on the way out."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd

    async def run(self, ready: asyncio.Event) -> None:
        await self.etcd.connect()
        ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            await self.etcd.close()
