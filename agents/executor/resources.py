"""Resource arithmetic of a cell: what it offers, what is booked, whether a request fits.

Pure functions over plain values so the auction-facing numbers are table-testable. Detection
reads /proc/meminfo and statvfs once, at construction of the executor: memory = MemTotal minus a
reserve for the cell itself, disk = the size of the file system holding the state directory.
Nothing is over-committed: every container that exists (reserved ones included) is counted
until it is deleted, as Diego does.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .config import ExecutorConfig
from .models import AllocationRequest, Resources

CONTAINER_EXISTS = "container already exists"


def meminfo_total_mb(text: str) -> int:
    """MemTotal of a /proc/meminfo text, in MiB (0 if absent)."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def filesystem_mb(path: str | Path) -> int:
    """Size of the file system holding `path` (or its nearest existing parent), in MiB."""
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    return st.f_blocks * st.f_frsize // (1024 * 1024)


def detect_total(config: ExecutorConfig, meminfo: str | None = None, disk_mb: int | None = None) -> Resources:
    memory = config.memory_mb
    if memory == 0:
        text = meminfo if meminfo is not None else Path("/proc/meminfo").read_text()
        memory = max(0, meminfo_total_mb(text) - config.memory_reserve_mb)
    disk = config.disk_mb or (disk_mb if disk_mb is not None else filesystem_mb(config.state_dir))
    return Resources(memory_mb=memory, disk_mb=disk, containers=config.max_containers)


def remaining(total: Resources, booked: Iterable[Resources]) -> Resources:
    memory, disk, containers = total.memory_mb, total.disk_mb, total.containers
    for r in booked:
        memory -= r.memory_mb
        disk -= r.disk_mb
        containers -= r.containers
    return Resources(memory_mb=max(0, memory), disk_mb=max(0, disk), containers=max(0, containers))


def shortfall(available: Resources, request: AllocationRequest) -> str | None:
    """Why `request` does not fit into `available`, or None when it does."""
    missing = [name for name, need, have in (
        ("containers", 1, available.containers),
        ("memory", request.memory_mb, available.memory_mb),
        ("disk", request.disk_mb, available.disk_mb),
    ) if need > have]
    return f"insufficient resources: {', '.join(missing)}" if missing else None


def booking(request: AllocationRequest) -> Resources:
    return Resources(memory_mb=request.memory_mb, disk_mb=request.disk_mb, containers=1)


def subtract(available: Resources, used: Resources) -> Resources:
    return remaining(available, [used])
