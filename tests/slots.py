"""Test slots: several test runs may share this machine (a developer's run beside CI, helpers'
runs), so each run of a real-runc suite holds one slot (an flock under that suite's directory)
and keeps to the names, subnets, host ports and directories derived from its slot number."""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import shutil
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def hold_slot(root: Path, slots: int, suite: str) -> Iterator[int]:
    """The first free slot number of `root` (0..slots-1), held until the context ends."""
    root.mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        lock = open(root / f"slot-{slot}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        try:
            yield slot
        finally:
            lock.close()
        return
    raise RuntimeError(f"all {slots} {suite} test slots are taken by other test runs")


def sweep_depots(root: Path, pattern: str) -> None:
    """Remove everything the garden depots matching `pattern` under `root` made (a killed run's)."""
    from agents.garden import cleanup_all
    for depot in sorted(root.glob(pattern)):
        asyncio.run(cleanup_all(depot))


@contextlib.contextmanager
def slot_dir(root: Path, depots: str) -> Iterator[Path]:
    """A slot's directory: swept of leftover depots (glob `depots`) before and after, then removed."""
    sweep_depots(root, depots)
    root.mkdir(parents=True, exist_ok=True)
    try:
        yield root
    finally:
        sweep_depots(root, depots)
        shutil.rmtree(root, ignore_errors=True)
