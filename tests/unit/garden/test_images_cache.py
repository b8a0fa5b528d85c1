"""The cache's building blocks: keyed locks, cancellable thread work, tmp sweep, atomic publish, refs."""
from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agents.garden.images.cache import CacheLayout, KeyedLocks, in_thread, is_complete, remove_tree


async def test_keyed_locks_serialize_one_key_and_forget_idle_keys() -> None:
    locks, order = KeyedLocks(), []

    async def worker(key: str, name: str) -> None:
        async with locks.hold(key):
            order.append(f"{name}+")
            await asyncio.sleep(0.02)
            order.append(f"{name}-")

    await asyncio.gather(worker("a", "1"), worker("a", "2"), worker("b", "3"))
    assert order.index("1-") < order.index("2+")  # same key: one after the other
    assert order.index("3+") < order.index("1-")  # other key: concurrently
    assert locks._locks == {}


async def test_in_thread_cancel_sets_stop_and_waits_for_the_thread() -> None:
    started, finished = threading.Event(), threading.Event()

    def work(stop: threading.Event) -> None:
        started.set()
        stop.wait(5)
        time.sleep(0.05)  # still busy after stop: the caller must wait for this
        finished.set()

    task = asyncio.ensure_future(in_thread(work))
    while not started.is_set():
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()


async def test_in_thread_returns_and_raises() -> None:
    assert await in_thread(lambda stop: 42) == 42
    with pytest.raises(ZeroDivisionError):
        await in_thread(lambda stop: 1 / 0)


async def test_remove_tree_finishes_even_when_cancelled(tmp_path: Path) -> None:
    for i in range(200):
        (tmp_path / "t" / str(i)).mkdir(parents=True)
    task = asyncio.ensure_future(remove_tree(tmp_path / "t"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not (tmp_path / "t").exists()


def test_sweep_removes_tmp_of_dead_processes_only(tmp_path: Path) -> None:
    cache = CacheLayout(tmp_path)
    mine = cache.new_tmp()
    dead_pid = _dead_pid()
    stale = cache.tmp / f"{dead_pid}-abc"
    (stale / "rootfs").mkdir(parents=True)
    assert cache.sweep() == [stale]
    assert mine.is_dir() and not stale.exists()


def test_publish_keeps_an_existing_final(tmp_path: Path) -> None:
    cache = CacheLayout(tmp_path)
    final = cache.image("sha256:" + "a" * 64)
    first, second = cache.new_tmp(), cache.new_tmp()
    for tmp, text in ((first, "first"), (second, "second")):
        (tmp / "rootfs").mkdir()
        (tmp / "image.json").write_text(text)
        (tmp / "rootfs" / "f").write_text(text)
    cache.publish(first, final)
    cache.publish(second, final)  # lost the race: no error, the first stays
    assert is_complete(final) and (final / "rootfs" / "f").read_text() == "first"
    assert final == tmp_path / "images" / "sha256" / ("a" * 64)


def test_refs_remember_what_a_tag_resolved_to(tmp_path: Path) -> None:
    cache = CacheLayout(tmp_path)
    assert cache.read_ref("h:1/x:v1") == ""
    cache.write_ref("h:1/x:v1", "sha256:" + "b" * 64)
    cache.write_ref("h:1/x:v1", "sha256:" + "c" * 64)
    assert cache.read_ref("h:1/x:v1") == "sha256:" + "c" * 64
    assert [p.suffix for p in cache.refs.iterdir()] == [".json"]


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert not os.path.exists(f"/proc/{proc.pid}")
    return proc.pid
