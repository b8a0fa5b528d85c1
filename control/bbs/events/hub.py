"""The event hub: one etcd watch over the whole key space, fanned out to SSE subscribers.

Because events come from the watch, a change is an event whichever process wrote it. Each
subscriber has a bounded queue (1024, reference §3.3); one that falls behind is dropped and
must resubscribe and resync by listing, as in Diego. No replay.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum

import structlog

from control.kit.etcd import Change, Etcd
from control.models.actual_lrp import ActualLRP
from control.models.base import Model
from control.models.events import Event, event_cell_ids
from control.models.task import Task

from ..store.keys import Keys
from .translate import actual_events, desired_events, task_events

log = structlog.get_logger("bbs.events")
MAX_PENDING = 1024


class Stream(StrEnum):
    LRP = "lrp"          # desired + actual instance events
    TASK = "task"
    INSTANCE = "instance"  # same as LRP, optionally filtered by cell


_CLOSED = object()


@dataclass(eq=False)
class Subscription:
    stream: Stream
    cell_id: str = ""
    queue: asyncio.Queue[object] = field(default_factory=lambda: asyncio.Queue(MAX_PENDING))
    dropped: bool = False

    def wants(self, event: Event, is_task: bool) -> bool:
        if is_task:
            return self.stream is Stream.TASK
        if self.stream is Stream.TASK:
            return False
        if self.cell_id and event[0].startswith("actual_lrp"):
            return self.cell_id in event_cell_ids(event)
        return True

    async def next(self) -> Event | None:
        item = await self.queue.get()
        return None if item is _CLOSED else item  # type: ignore[return-value]


class EventHub:
    def __init__(self, etcd: Etcd, keys: Keys, max_pending: int = MAX_PENDING) -> None:
        self.etcd = etcd
        self.keys = keys
        self.max_pending = max_pending
        self.subscribers: set[Subscription] = set()
        self.delivered = 0
        self.last_latency_s = 0.0

    def subscribe(self, stream: Stream, cell_id: str = "") -> Subscription:
        sub = Subscription(stream, cell_id, asyncio.Queue(self.max_pending + 1))
        self.subscribers.add(sub)
        return sub

    def close_all(self) -> None:
        """End every subscriber's stream (the API is shutting down)."""
        for sub in list(self.subscribers):
            self._close(sub)

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)

    async def run(self, ready: asyncio.Event) -> None:
        start = await self.etcd.revision() + 1
        ready.set()
        try:
            async for batch in self.etcd.watch_prefix(self.keys.root, start):
                try:
                    await self._dispatch(batch)
                except Exception:  # a bad document must not stop the stream
                    log.exception("event-translation-failed", revision=batch[-1].revision)
        finally:
            self.close_all()

    async def _fetch_run(self, guid: str) -> bytes | None:
        kv = await self.etcd.get(self.keys.run(guid))
        return None if kv is None else kv.value

    def _readable(self, changes: list[Change], model: type[Model]) -> list[Change]:
        """Drop (and log) the changes whose documents do not parse, so that one bad document
        written by a foreign writer costs only its own event, not the batch's."""
        out = []
        for change in changes:
            try:
                for raw in (change.value, change.prev):
                    if raw is not None:
                        model.model_validate_json(raw)
            except ValueError:
                log.warning("undecodable-document-skipped", key=change.key.decode(errors="replace"))
                continue
            out.append(change)
        return out

    async def _dispatch(self, batch: list[Change]) -> None:
        k = self.keys
        actual = self._readable([c for c in batch if c.key.startswith(k.actual)], ActualLRP)
        desired = [c for c in batch if c.key.startswith(k.desired)]
        tasks = self._readable([c for c in batch if c.key.startswith(k.tasks)], Task)
        lrp_events = (await desired_events(k, desired, self._fetch_run) if desired else []) + \
            (actual_events(k, actual) if actual else [])
        for event in lrp_events:
            self._publish(event, is_task=False)
        for event in task_events(tasks) if tasks else []:
            self._publish(event, is_task=True)

    def _publish(self, event: Event, is_task: bool) -> None:
        for sub in list(self.subscribers):
            if not sub.wants(event, is_task):
                continue
            if sub.queue.qsize() >= self.max_pending:
                log.warning("slow-consumer-dropped", stream=sub.stream, cell_id=sub.cell_id)
                self._close(sub)
                continue
            sub.queue.put_nowait(event)
            self.delivered += 1

    def _close(self, sub: Subscription) -> None:
        sub.dropped = True
        self.subscribers.discard(sub)
        sub.queue.put_nowait(_CLOSED)  # the queue keeps one slot for this marker
