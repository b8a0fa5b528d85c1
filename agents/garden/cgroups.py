"""Reading and removing the cgroup v1 directories runc makes for a container.

runc is always given an absolute cgroupsPath, so the container sits at the same path under every
hierarchy mounted in /sys/fs/cgroup (measured on this kernel: without it the memory cgroup would
land under the caller's own memory cgroup). This module only reads counters and removes
directories; limits are written by runc from config.json.
"""
from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def hierarchies(root: Path = CGROUP_ROOT) -> list[Path]:
    """Every mounted hierarchy (v1 controllers, name=systemd and the unified v2 mount)."""
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    except FileNotFoundError:
        return []


def existing_dirs(cgroup_path: str, root: Path = CGROUP_ROOT) -> list[Path]:
    rel = cgroup_path.lstrip("/")
    return [h / rel for h in hierarchies(root) if (h / rel).is_dir()]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError, OSError):
        return ""


def _read_int(path: Path) -> int:
    text = _read(path).strip()
    return int(text) if text.lstrip("-").isdigit() else 0


def oom_kills(cgroup_path: str, root: Path = CGROUP_ROOT) -> int:
    """The memory cgroup's oom_kill counter (memory.oom_control, kernel >= 4.13)."""
    for line in _read(oom_control(cgroup_path, root)).splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0


def oom_control(cgroup_path: str, root: Path = CGROUP_ROOT) -> Path:
    """The file whose oom_kill line oom_kills() reads (the keeper reads it when a process exits)."""
    return root / "memory" / cgroup_path.lstrip("/") / "memory.oom_control"


def memory_usage(cgroup_path: str, root: Path = CGROUP_ROOT) -> tuple[int, int]:
    """(working set bytes, limit bytes or 0); working set = usage - inactive file cache."""
    base = root / "memory" / cgroup_path.lstrip("/")
    usage = _read_int(base / "memory.usage_in_bytes")
    inactive = 0
    for line in _read(base / "memory.stat").splitlines():
        key, _, value = line.partition(" ")
        if key == "total_inactive_file":
            inactive = int(value)
    limit = _read_int(base / "memory.limit_in_bytes")
    if limit >= 2**62:  # "unlimited" is PAGE_COUNTER_MAX pages
        limit = 0
    return max(usage - inactive, 0), limit


def cpu_usage_ns(cgroup_path: str, root: Path = CGROUP_ROOT) -> int:
    return _read_int(root / "cpuacct" / cgroup_path.lstrip("/") / "cpuacct.usage")


def pids_current(cgroup_path: str, root: Path = CGROUP_ROOT) -> int:
    return _read_int(root / "pids" / cgroup_path.lstrip("/") / "pids.current")


def procs(cgroup_path: str, root: Path = CGROUP_ROOT) -> set[int]:
    """Host pids of every process in the cgroup, across all hierarchies."""
    found: set[int] = set()
    for d in existing_dirs(cgroup_path, root):
        for sub, _dirs, files in os.walk(d):
            if "cgroup.procs" in files:
                found.update(int(x) for x in _read(Path(sub) / "cgroup.procs").split() if x.isdigit())
    return found


async def remove(cgroup_path: str, root: Path = CGROUP_ROOT, attempts: int = 50) -> None:
    """SIGKILL whatever is left in the cgroup and rmdir it (children first) in every hierarchy.

    Dying tasks linger for a moment after SIGKILL, so rmdir (EBUSY) is retried for ~1 s; a
    directory that still cannot be removed raises OSError.
    """
    for attempt in range(attempts):
        for pid in procs(cgroup_path, root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        busy: OSError | None = None
        for d in existing_dirs(cgroup_path, root):
            for sub, _dirs, _files in sorted(os.walk(d), key=lambda w: -len(w[0])):
                try:
                    os.rmdir(sub)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    busy = exc
        if busy is None:
            return
        if attempt == attempts - 1:
            raise busy
        await asyncio.sleep(0.02)


def remove_empty_parents(cgroup_path: str, stop_at: str, root: Path = CGROUP_ROOT) -> None:
    """rmdir cgroup_path and its ancestors up to and including stop_at, where empty."""
    path = cgroup_path.rstrip("/")
    stop = stop_at.rstrip("/")
    while path and (path == stop or path.startswith(stop + "/")):
        for d in existing_dirs(path, root):
            try:
                os.rmdir(d)
            except OSError:
                pass
        path = path.rsplit("/", 1)[0]
