"""create() reports where its time went (bench/cell_bench.py breaks container start-up down by it)."""
from __future__ import annotations

from pathlib import Path

from agents.garden import ContainerSpec, RuncBackend


async def test_create_timings_are_reported_and_survive_a_new_backend(backend: RuncBackend, stack: Path) -> None:
    info = await backend.create(ContainerSpec(handle="timed", rootfs=str(stack), disk_mb=16, ports=(8080,)))
    timings = info.create_timings_ms
    assert set(timings) == {"rootfs", "runc", "network", "total"}
    assert all(value > 0 for value in timings.values())
    assert timings["rootfs"] + timings["runc"] + timings["network"] <= timings["total"] + 0.01

    assert (await backend.info("timed")).create_timings_ms == timings
    again = RuncBackend(backend.config)  # a restarted backend reads them from the container record
    await again.setup()
    try:
        assert (await again.info("timed")).create_timings_ms == timings
    finally:
        await again.aclose()
