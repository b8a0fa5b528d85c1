"""The per-cell image cache on disk, and the small concurrency tools the store needs.

    <cache>/blobs/sha256/<hex>             verified blobs (layers, configs) from registries
    <cache>/images/sha256/<hex>/rootfs     an unpacked image, by platform manifest digest
    <cache>/images/sha256/<hex>/image.json its config (env, working dir, user, entrypoint, cmd)
    <cache>/layered/<key>/{rootfs,image.json}  a stack with a layer on top (preloaded+layer:)
    <cache>/refs/<key>.json                what a tag last resolved to (used when offline)
    <cache>/tmp/<pid>-<random>             work in progress

Everything is made in tmp/ and renamed into place, so a final path exists only complete; a
failed or cancelled build removes its tmp entry, and tmp entries of dead processes are swept.
Limits: no eviction (the cache only grows); entries are trusted once renamed into place.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

from .manifest import ImageConfig

T = TypeVar("T")


class CacheLayout:
    """Paths of the cache and the atomic moves between them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.images = root / "images" / "sha256"
        self.layered = root / "layered"
        self.refs = root / "refs"
        self.tmp = root / "tmp"

    def blob(self, digest: str) -> Path:
        return self.blobs / digest.removeprefix("sha256:")

    def image(self, digest: str) -> Path:
        return self.images / digest.removeprefix("sha256:")

    def layered_image(self, key: str) -> Path:
        return self.layered / hashlib.sha256(key.encode()).hexdigest()

    def new_tmp(self) -> Path:
        """A fresh private directory under tmp/, named after this process (for the sweep)."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        path = self.tmp / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        path.mkdir()
        return path

    def publish(self, tmp: Path, final: Path) -> None:
        """Rename tmp to final; if final appeared meanwhile (another process), keep that one."""
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise

    def sweep(self) -> list[Path]:
        """Remove tmp entries left by processes that no longer run; return them."""
        removed = []
        for entry in self.tmp.glob("*-*") if self.tmp.is_dir() else ():
            pid = entry.name.split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                _rmtree(entry)
                removed.append(entry)
        return removed

    def read_ref(self, ref: str) -> str:
        try:
            return str(json.loads(self._ref_file(ref).read_text())["digest"])
        except (OSError, ValueError, KeyError):
            return ""

    def write_ref(self, ref: str, digest: str) -> None:
        self.refs.mkdir(parents=True, exist_ok=True)
        tmp = self.refs / f".{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps({"reference": ref, "digest": digest}))
        os.rename(tmp, self._ref_file(ref))

    def _ref_file(self, ref: str) -> Path:
        return self.refs / f"{hashlib.sha256(ref.encode()).hexdigest()}.json"


def write_config(directory: Path, config: ImageConfig) -> None:
    data = asdict(config)
    data.pop("diff_ids")
    (directory / "image.json").write_text(json.dumps(data))


def read_config(directory: Path) -> ImageConfig:
    data = json.loads((directory / "image.json").read_text())
    return ImageConfig(env=tuple(data["env"]), working_dir=data["working_dir"], user=data["user"],
                       entrypoint=tuple(data["entrypoint"]), cmd=tuple(data["cmd"]))


def is_complete(directory: Path) -> bool:
    return (directory / "image.json").is_file() and (directory / "rootfs").is_dir()


class KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


async def in_thread(fn: Callable[[threading.Event], T]) -> T:
    """Run fn(stop) in a worker thread; when cancelled, set stop and wait for fn to return.

    So a cancelled caller never races a thread still writing into a directory it will remove.
    """
    stop = threading.Event()
    future = asyncio.get_running_loop().run_in_executor(None, fn, stop)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        stop.set()
        await _settle(future)
        raise


async def remove_tree(path: Path) -> None:
    """rmtree in a thread, finished even when the caller is cancelled meanwhile (then re-raised)."""
    future = asyncio.get_running_loop().run_in_executor(None, _rmtree, path)
    if await _settle(future):
        raise asyncio.CancelledError


async def _settle(future: asyncio.Future[T]) -> bool:
    """Wait until future is done whatever happens; return whether we were cancelled meanwhile."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:
            break
    if not future.cancelled():
        future.exception()  # mark it retrieved: the caller is already raising something else
    return cancelled


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
