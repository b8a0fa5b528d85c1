"""Fixtures for the garden backend against the real machine: runc, netns, iptables, loop mounts.

Each test gets its own backend (own tag, bridge subnet, host port range and depot) so tests
cannot see each other's containers; after the test `cleanup_all` removes everything of that
backend. The session fixture sweeps every depot under GARDEN_TEST_ROOT at start (leftovers of a
killed run) and at the end, even when tests failed. Needs root.
"""
from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from agents.garden import GardenConfig, RuncBackend, build_busybox_stack, cleanup_all

GARDEN_TEST_ROOT = Path("/var/tmp/pydiego-garden-tests")

MakeConfig = Callable[..., GardenConfig]


def _sweep(root: Path) -> None:
    if not root.is_dir():
        return
    for depot in sorted(root.glob("depot-*")):
        asyncio.run(cleanup_all(depot))


@pytest.fixture(scope="session")
def garden_root() -> Iterator[Path]:
    _sweep(GARDEN_TEST_ROOT)
    GARDEN_TEST_ROOT.mkdir(parents=True, exist_ok=True)
    try:
        yield GARDEN_TEST_ROOT
    finally:
        _sweep(GARDEN_TEST_ROOT)
        shutil.rmtree(GARDEN_TEST_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(garden_root: Path) -> Path:
    return build_busybox_stack(garden_root / "stack-busybox")


@pytest.fixture(scope="session")
def make_config(garden_root: Path) -> MakeConfig:
    """A fresh, non-overlapping backend config (tag, /24 subnet, 50 host ports, depot) per call."""
    counter = itertools.count()

    def make(port_count: int = 50, **overrides: object) -> GardenConfig:
        n = next(counter)
        values: dict[str, object] = {
            "depot_dir": str(garden_root / f"depot-{n}"),
            "tag": f"t{n}",
            "bridge_subnet": f"10.253.{n}.0/24",
            "port_range_start": 62000 + 50 * n,
            "port_range_end": 62000 + 50 * n + port_count - 1,
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
