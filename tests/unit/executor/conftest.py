"""An Executor over the in-memory backend, with a fake clock and short intervals."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agents.executor.config import ExecutorConfig
from agents.executor.executor import Executor
from control.kit.clock import FakeClock

from .fakes import FakeBackend, FakeImages

FAST: dict[str, Any] = {
    "graceful_shutdown_interval": timedelta(milliseconds=200),
    "unhealthy_monitoring_interval": timedelta(milliseconds=20),
    "healthy_monitoring_interval": timedelta(milliseconds=50),
    "memory_mb": 1024, "disk_mb": 2048, "containers": 4,
}


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0.01)
    leaked = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    assert not leaked, f"test leaked asyncio tasks: {leaked}"


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def images() -> FakeImages:
    return FakeImages()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_executor(tmp_path: Path, backend: FakeBackend, images: FakeImages,
                        clock: FakeClock) -> AsyncIterator[Callable[..., Executor]]:
    made: list[Executor] = []

    def make(**overrides: Any) -> Executor:
        config = ExecutorConfig(state_dir=str(tmp_path / "state"), **{**FAST, **overrides})
        executor = Executor(config, backend, images, clock)
        executor.records.setup()
        made.append(executor)
        return executor

    yield make
    for executor in made:
        for container in executor.list():
            await executor.delete(container.guid)


@pytest.fixture
def executor(make_executor: Callable[..., Executor]) -> Executor:
    return make_executor()
