"""Resource limits: memory (OOM reported as "out of memory"), disk (ENOSPC), pids, CPU shares, metrics."""
from __future__ import annotations

from pathlib import Path

from agents.garden import ContainerSpec, RuncBackend

from .helpers import sh

CGROUP = Path("/sys/fs/cgroup")


async def test_memory_limit_kills_and_reports_oom(backend: RuncBackend, stack: Path) -> None:
    await backend.create(ContainerSpec(handle="mem", rootfs=str(stack), memory_mb=32))
    cgroup = backend.names.cgroup("mem")
    assert (CGROUP / f"memory{cgroup}/memory.limit_in_bytes").read_text().strip() == str(32 * 2**20)
    assert (CGROUP / f"memory{cgroup}/memory.memsw.limit_in_bytes").read_text().strip() == str(32 * 2**20)

    small, _ = await sh(backend, "mem", "dd if=/dev/zero of=/dev/null bs=8M count=1")
    assert small.code == 0 and not small.oom_killed
    status, _ = await sh(backend, "mem", "dd if=/dev/zero of=/dev/null bs=64M count=1")
    assert (status.code, status.oom_killed, status.reason) == (137, True, "out of memory")
    assert "out of memory" in (await backend.info("mem")).events
    metrics = await backend.metrics("mem")
    assert metrics.memory_limit_bytes == 32 * 2**20 and metrics.cpu_ns > 0


async def test_disk_limit_gives_enospc(backend: RuncBackend, stack: Path) -> None:
    await backend.create(ContainerSpec(handle="disk", rootfs=str(stack), disk_mb=16))
    status, out = await sh(backend, "disk", "dd if=/dev/zero of=/filler bs=1M count=32")
    assert status.code != 0 and "No space left on device" in out.err
    metrics = await backend.metrics("disk")
    assert 12 * 2**20 < metrics.disk_bytes <= 16 * 2**20 and metrics.disk_limit_bytes == 16 * 2**20
    # Freeing space works again (the layer is a real filesystem, not a one-way counter).
    status, _ = await sh(backend, "disk", "rm /filler && dd if=/dev/zero of=/small bs=1M count=4")
    assert status.code == 0


async def test_pids_limit_and_cpu_shares(backend: RuncBackend, stack: Path) -> None:
    await backend.create(ContainerSpec(handle="pids", rootfs=str(stack), max_pids=10, cpu_weight=50))
    cgroup = backend.names.cgroup("pids")
    assert (CGROUP / f"pids{cgroup}/pids.max").read_text().strip() == "10"
    assert (CGROUP / f"cpu{cgroup}/cpu.shares").read_text().strip() == "512"
    status, out = await sh(backend, "pids", "for i in $(seq 1 30); do sleep 2 & done; wait")
    assert status.code != 0 and "can't fork" in out.err
    assert (await backend.metrics("pids")).pids <= 10
