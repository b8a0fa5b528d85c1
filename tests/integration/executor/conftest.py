"""Fixtures for the executor on real runc: one backend + executor ("cell") per call of make_cell.

Each cell has its own garden tag, /24 bridge subnet, host port range and depot (ranges distinct
from the garden and rep tests', and per slot, so several runs can share the machine), and its
own executor state dir. After
the test every container is deleted through the executor (which must leave no trace of it),
the runner is cancelled, and `cleanup_all` must leave nothing of the cell on the machine. Needs root.
"""
from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agents.executor.config import ExecutorConfig
from agents.executor.executor import Executor
from agents.garden import GardenConfig, RuncBackend, build_busybox_stack, cleanup_all
from control.kit.clock import SystemClock
from tests.integration.garden.helpers import assert_no_traces, backend_traces

from .helpers import StackResolver
from tests.slots import hold_slot, slot_dir

EXECUTOR_TEST_ROOT = Path("/var/tmp/pydiego-executor-tests")
FAST = {
    "graceful_shutdown_interval": timedelta(seconds=1),
    "unhealthy_monitoring_interval": timedelta(milliseconds=200),
    "healthy_monitoring_interval": timedelta(milliseconds=500),
    "reaper_interval": timedelta(milliseconds=100),
    "log_poll_interval": timedelta(milliseconds=50),
    "memory_mb": 4096, "disk_mb": 8192,
}


SLOTS = 5
CELLS_PER_RUN = 50
PORTS_PER_CELL = 10  # host ports 30000-32499: below the ephemeral range, apart from garden's and rep's tests


@pytest.fixture(scope="session")
def executor_slot() -> Iterator[int]:
    with hold_slot(EXECUTOR_TEST_ROOT, SLOTS, "executor") as slot:
        yield slot


@pytest.fixture(scope="session")
def executor_root(executor_slot: int) -> Iterator[Path]:
    with slot_dir(EXECUTOR_TEST_ROOT / f"slot-{executor_slot}", "depot-*") as root:
        yield root


@pytest.fixture(scope="session")
def busybox_stack(executor_root: Path) -> Path:
    return build_busybox_stack(executor_root / "stack-busybox")


@pytest.fixture(scope="session")
def make_garden_config(executor_root: Path, executor_slot: int) -> Callable[[], GardenConfig]:
    """A fresh backend config per call: tag x<slot><nn>, subnet 10.251.<k>.0/24, 10 host ports, own depot."""
    counter = itertools.count()

    def make() -> GardenConfig:
        n = next(counter)
        assert n < CELLS_PER_RUN, "out of test cells"
        k = executor_slot * CELLS_PER_RUN + n
        first_port = 30000 + k * PORTS_PER_CELL
        return GardenConfig(depot_dir=str(executor_root / f"depot-{n}"), tag=f"x{executor_slot}{n:02d}",
                            bridge_subnet=f"10.251.{k}.0/24", port_range_start=first_port,
                            port_range_end=first_port + PORTS_PER_CELL - 1)

    return make


@dataclass
class Cell:
    garden: GardenConfig
    backend: RuncBackend
    executor: Executor
    runner: asyncio.Task[None]
    resolver: StackResolver

    async def detach(self) -> None:
        """Cancel the executor's runner: containers keep running (a rep shutting down)."""
        if not self.runner.done():
            self.runner.cancel()
            await asyncio.gather(self.runner, return_exceptions=True)


MakeCell = Callable[..., Awaitable[Cell]]


@pytest.fixture
async def make_cell(make_garden_config: Callable[[], GardenConfig], busybox_stack: Path,
                    tmp_path: Path) -> AsyncIterator[MakeCell]:
    cells: list[Cell] = []
    backends: list[RuncBackend] = []

    async def make(garden: GardenConfig | None = None, state_dir: Path | None = None, **overrides: Any) -> Cell:
        garden = garden or make_garden_config()
        backend = RuncBackend(garden)
        backends.append(backend)
        await backend.setup()
        config = ExecutorConfig(state_dir=str(state_dir or tmp_path / f"executor-{len(cells)}"),
                                **{**FAST, **overrides})
        resolver = StackResolver({"busybox": busybox_stack})
        executor = Executor(config, backend, resolver, SystemClock())
        ready = asyncio.Event()
        runner = asyncio.create_task(executor.run(ready), name=f"executor-{len(cells)}")
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait([runner, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if runner.done():
            runner.result()
        cell = Cell(garden, backend, executor, runner, resolver)
        cells.append(cell)
        return cell

    try:
        yield make
    finally:
        try:
            for cell in cells:
                if not cell.runner.done():
                    for container in cell.executor.list():
                        await cell.executor.delete(container.guid)
                        assert_no_traces(cell.backend, container.guid)
                    assert cell.executor.list() == [] and await cell.backend.list() == []
                    assert not any(cell.backend.depot.containers.iterdir()), "bundles left behind"
                await cell.detach()
            for backend in backends:
                await cleanup_all(backend.depot.root)
            for backend in backends:
                left = {k: v for k, v in backend_traces(backend.config.tag, backend.depot.root).items() if v}
                assert not left, f"cell {backend.config.tag} left traces: {left}"
        finally:
            for backend in backends:
                await backend.aclose()


@pytest.fixture
async def cell(make_cell: MakeCell) -> Cell:
    return await make_cell()
