"""Fan-out of container events to subscribers, each through its own bounded queue.

A subscription is registered when `subscribe()` returns (not when iteration starts), so no event
published after the call is missed. A subscriber whose queue is full is dropped: its iterator
ends and the rep falls back to its periodic bulk pass (reference §2.9), as with Diego's hub.
"""
from __future__ import annotations

import asyncio

import structlog

from .models import ContainerEvent

log = structlog.get_logger("executor")

_END = None


class Subscription:
    """An async iterator of events; `aclose()` (or leaving `async for` early and closing) unsubscribes."""

    def __init__(self, hub: "EventHub", size: int) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[ContainerEvent | None] = asyncio.Queue(size + 1)  # +1: room for the end marker
        self._size = size
        self.closed = False

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> ContainerEvent:
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is _END:
            self.closed = True
            raise StopAsyncIteration
        return event

    def _offer(self, event: ContainerEvent) -> bool:
        if self._queue.qsize() >= self._size:
            return False
        self._queue.put_nowait(event)
        return True

    def _end(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(_END)

    async def aclose(self) -> None:
        self._hub._remove(self)
        self._end()


class EventHub:
    def __init__(self, buffer: int = 1024) -> None:
        self._buffer = buffer
        self._subscribers: set[Subscription] = set()

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self._buffer)
        self._subscribers.add(sub)
        return sub

    def publish(self, event: ContainerEvent) -> None:
        for sub in list(self._subscribers):
            if not sub._offer(event):
                log.warning("event-subscriber-dropped", reason="queue full")
                self._remove(sub)
                sub._end()

    def close(self) -> None:
        for sub in list(self._subscribers):
            sub._end()
        self._subscribers.clear()

    def _remove(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
