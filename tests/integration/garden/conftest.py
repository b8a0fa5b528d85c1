"""Fixtures for the garden backend against the real machine: runc, netns, iptables, loop mounts.

Each test gets its own backend (own tag, bridge subnet, host port range and depot) so tests
cannot see each other's containers; after the test `cleanup_all` removes everything of that
backend. Several test runs may share the machine: each holds one of SLOTS slots (a flock) and
keeps to its names (tag `<slot><n>`), subnets (10.<243+slot>.<n>.0/24), host ports and depots
(GARDEN_TEST_ROOT/slot-<slot>). The session fixture sweeps its slot's depots at start
(leftovers of a killed run) and at the end, even when tests failed. Needs root.
"""
from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from agents.garden import GardenConfig, RuncBackend, build_busybox_stack, cleanup_all
from tests.slots import hold_slot, slot_dir, sweep_depots

GARDEN_TEST_ROOT = Path("/var/tmp/pydiego-garden-tests")
SLOTS = 5
BACKENDS_PER_RUN = 40
PORTS_PER_BACKEND = 20  # host ports 61000-64999: above the ephemeral range (32768-60999)

MakeConfig = Callable[..., GardenConfig]


@pytest.fixture(scope="session")
def garden_slot() -> Iterator[int]:
    with hold_slot(GARDEN_TEST_ROOT, SLOTS, "garden") as slot:
        yield slot


@pytest.fixture(scope="session")
def garden_root(garden_slot: int) -> Iterator[Path]:
    sweep_depots(GARDEN_TEST_ROOT, "depot-*")  # depots of the layout before slots
    with slot_dir(GARDEN_TEST_ROOT / f"slot-{garden_slot}", "depot-*") as root:
        yield root


@pytest.fixture(scope="session")
def stack(garden_root: Path) -> Path:
    return build_busybox_stack(garden_root / "stack-busybox")


@pytest.fixture(scope="session")
def make_config(garden_root: Path, garden_slot: int) -> MakeConfig:
    """A fresh, non-overlapping backend config (tag, /24 subnet, 20 host ports, depot) per call."""
    counter = itertools.count()

    def make(port_count: int = PORTS_PER_BACKEND, **overrides: object) -> GardenConfig:
        n = next(counter)
        assert n < BACKENDS_PER_RUN and port_count <= PORTS_PER_BACKEND, "out of test backends or ports"
        first_port = 61000 + (garden_slot * BACKENDS_PER_RUN + n) * PORTS_PER_BACKEND
        values: dict[str, object] = {
            "depot_dir": str(garden_root / f"depot-{n}"),
            "tag": f"{garden_slot}{n}",
            "bridge_subnet": f"10.{243 + garden_slot}.{n}.0/24",
            "port_range_start": first_port,
            "port_range_end": first_port + port_count - 1,
        }
        values.update(overrides)
        return GardenConfig.model_validate(values)

    return make


@pytest.fixture
async def make_backend(make_config: MakeConfig) -> AsyncIterator[Callable[..., "asyncio.Future[RuncBackend]"]]:
    backends: list[RuncBackend] = []

    async def make(**overrides: object) -> RuncBackend:
        backend = RuncBackend(make_config(**overrides))
        backends.append(backend)
        await backend.setup()
        return backend

    try:
        yield make  # type: ignore[misc]
    finally:
        try:  # while the keepers still reap the dying inits (runc waits for unreaped ones)
            for backend in backends:
                await cleanup_all(backend.depot.root)
        finally:
            for backend in backends:
                await backend.aclose()


@pytest.fixture
async def backend(make_backend: Callable[..., "asyncio.Future[RuncBackend]"]) -> RuncBackend:
    return await make_backend()
