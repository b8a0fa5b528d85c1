"""Injected time and id sources, so policies and tests never read the wall clock directly."""
from __future__ import annotations

import time
import uuid
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int: ...


class SystemClock:
    def now_ns(self) -> int:
        return time.time_ns()


class FakeClock:
    """A clock that only moves when told to (unit and component tests)."""

    def __init__(self, start_ns: int = 1_700_000_000 * 1_000_000_000) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += int(seconds * 1_000_000_000)


def new_guid() -> str:
    return str(uuid.uuid4())
