"""Downloads and uploads for the action language, run on the host (reference §1.6).

Containers cannot reach the network the cell sits on, so the executor fetches on the host and
streams the result in (backend.stream_in of a plain tar), and reads files out of containers
(backend.stream_out) to POST them.

Downloads: http(s):// or file:// URLs of a .tar, .tgz or .zip (recognised by their magic bytes,
not their name), at most max_concurrent_downloads at once per cell. md5/sha1/sha256 checksums
are verified over the bytes fetched. With a cache_key the artifact is kept in the cache and
revalidated with ETag / Last-Modified (304 = reuse); the cache is trimmed least recently used
first to download_cache_max_bytes (entries in use are never evicted). Archives are converted to
a plain tar on the host; zip entries keep their unix mode.
"""
from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import os
import shutil
import tarfile
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
import structlog

from control.models.actions import DownloadAction

from .config import ExecutorConfig

log = structlog.get_logger("executor")

ALGORITHMS = ("md5", "sha1", "sha256")
CHUNK = 256 * 1024


class TransferFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Digests:
    def __init__(self) -> None:
        self._hashes = {name: hashlib.new(name) for name in ALGORITHMS}
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        for h in self._hashes.values():
            h.update(chunk)

    def hexdigests(self) -> dict[str, str]:
        return {name: h.hexdigest() for name, h in self._hashes.items()}


def verify_checksum(digests: dict[str, str], algorithm: str | None, expected: str | None) -> None:
    if algorithm is None or expected is None:
        return
    actual = digests.get(algorithm.lower())
    if actual is None:
        raise TransferFailed(f"unsupported checksum algorithm {algorithm}")
    if actual != expected.strip().lower():
        raise TransferFailed(f"checksum mismatch: {algorithm} expected {expected}, got {actual}")


def archive_kind(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(262)
    if head[:2] == b"\x1f\x8b":
        return "tgz"
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if tarfile.is_tarfile(path):
        return "tar"
    raise TransferFailed("downloaded file is not a tar, tgz or zip archive")


def to_plain_tar(src: Path, dst: Path) -> None:
    """Write `src` (tar, tgz or zip) as an uncompressed tar at `dst` (blocking: run in a thread)."""
    kind = archive_kind(src)
    if kind == "tar":
        shutil.copyfile(src, dst)
    elif kind == "tgz":
        with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, CHUNK)
        if not tarfile.is_tarfile(dst):
            raise TransferFailed("downloaded gzip file does not contain a tar archive")
    else:
        _zip_to_tar(src, dst)


def _zip_to_tar(src: Path, dst: Path) -> None:
    try:
        with zipfile.ZipFile(src) as zf, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tf:
            for info in zf.infolist():
                entry = tarfile.TarInfo(info.filename.rstrip("/") if info.is_dir() else info.filename)
                mode = (info.external_attr >> 16) & 0o7777
                entry.mtime = int(time.mktime(info.date_time + (0, 0, -1)))
                if info.is_dir():
                    entry.type = tarfile.DIRTYPE
                    entry.mode = mode or 0o755
                    tf.addfile(entry)
                    continue
                entry.mode = mode or 0o644
                entry.size = info.file_size
                with zf.open(info) as data:
                    tf.addfile(entry, data)
    except zipfile.BadZipFile as exc:
        raise TransferFailed(f"bad zip archive: {exc}") from exc


def _cache_id(cache_key: str) -> str:
    return hashlib.sha256(cache_key.encode()).hexdigest()[:40]


class Transfers:
    """The cell's download limiter and cache, plus uploads; one per executor."""

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config
        self.cache_dir = Path(config.cache_dir)
        self._limit = asyncio.Semaphore(config.max_concurrent_downloads)
        self._key_locks: dict[str, asyncio.Lock] = {}
        self._in_use: dict[str, int] = {}

    def setup(self) -> None:
        """At executor start: the cache directory, without temporary files of a previous run."""
        (self.cache_dir / "tmp").mkdir(parents=True, exist_ok=True)
        for leftover in (self.cache_dir / "tmp").iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()

    @contextlib.asynccontextmanager
    async def download(self, action: DownloadAction) -> AsyncIterator[Path]:
        """A plain tar of the artifact, valid inside the `async with` (cached or temporary)."""
        (self.cache_dir / "tmp").mkdir(parents=True, exist_ok=True)
        if not action.cache_key:
            tar = await self._fetch_uncached(action)
            try:
                yield tar
            finally:
                tar.unlink(missing_ok=True)
            return
        cid = _cache_id(action.cache_key)
        lock = self._key_locks.setdefault(cid, asyncio.Lock())
        async with lock:
            self._in_use[cid] = self._in_use.get(cid, 0) + 1
            try:
                tar = await self._fetch_cached(action, cid)
                yield tar
            finally:
                self._in_use[cid] -= 1
        await asyncio.to_thread(self._evict)

    async def _fetch_uncached(self, action: DownloadAction) -> Path:
        raw = self._tmp("raw")
        try:
            _, digests = await self._get(action.from_, raw, {})
            verify_checksum(digests, action.checksum_algorithm, action.checksum_value)
            tar = self._tmp("tar")
            await asyncio.to_thread(to_plain_tar, raw, tar)
            return tar
        finally:
            raw.unlink(missing_ok=True)

    async def _fetch_cached(self, action: DownloadAction, cid: str) -> Path:
        entry = self.cache_dir / cid
        meta_path, tar = entry / "meta.json", entry / "artifact.tar"
        meta = _read_meta(meta_path) if tar.is_file() else None
        headers: dict[str, str] = {}
        if meta and meta.get("url") == action.from_:
            if meta.get("etag"):
                headers["If-None-Match"] = meta["etag"]
            if meta.get("last_modified"):
                headers["If-Modified-Since"] = meta["last_modified"]
        raw = self._tmp("raw")
        try:
            response_headers, digests = await self._get(action.from_, raw, headers)
            if response_headers is None and meta is not None:  # 304: the cached copy is current
                verify_checksum(meta["digests"], action.checksum_algorithm, action.checksum_value)
                meta["last_used"] = time.time()
                _write_meta(meta_path, meta)
                log.info("download-cache-hit", cache_key=action.cache_key)
                return tar
            verify_checksum(digests, action.checksum_algorithm, action.checksum_value)
            entry.mkdir(parents=True, exist_ok=True)
            new_tar = self._tmp("tar")
            await asyncio.to_thread(to_plain_tar, raw, new_tar)
            os.replace(new_tar, tar)
            _write_meta(meta_path, {
                "cache_key": action.cache_key, "url": action.from_, "digests": digests,
                "etag": (response_headers or {}).get("etag", ""),
                "last_modified": (response_headers or {}).get("last-modified", ""),
                "size": tar.stat().st_size, "last_used": time.time()})
            return tar
        finally:
            raw.unlink(missing_ok=True)

    async def _get(self, url: str, dest: Path, headers: dict[str, str]) -> tuple[dict[str, str] | None, dict[str, str]]:
        """Fetch into `dest`; (response headers, or None on 304; digests of the bytes)."""
        digests = Digests()
        timeout = self.config.download_timeout.total_seconds()
        async with self._limit:
            try:
                async with asyncio.timeout(timeout):
                    if url.startswith("file://"):
                        await asyncio.to_thread(_copy_file, Path(unquote(urlparse(url).path)), dest, digests)
                        return {}, digests.hexdigests()
                    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0), follow_redirects=True) as client:
                        async with client.stream("GET", url, headers=headers) as response:
                            if response.status_code == 304 and headers:
                                return None, {}
                            if response.status_code != 200:
                                raise TransferFailed(f"unexpected status {response.status_code} from {_safe(url)}")
                            with open(dest, "wb") as f:
                                async for chunk in response.aiter_bytes(CHUNK):
                                    digests.update(chunk)
                                    f.write(chunk)
                            return dict(response.headers), digests.hexdigests()
            except TimeoutError:
                raise TransferFailed(f"timed out fetching {_safe(url)}") from None
            except httpx.HTTPError as exc:
                raise TransferFailed(f"fetching {_safe(url)}: {exc or type(exc).__name__}") from exc
            except OSError as exc:
                raise TransferFailed(f"fetching {_safe(url)}: {exc.strerror or exc}") from exc

    async def upload(self, url: str, data: bytes) -> None:
        timeout = self.config.download_timeout.total_seconds()
        try:
            async with asyncio.timeout(timeout):
                async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as client:
                    response = await client.post(url, content=data,
                                                 headers={"Content-Type": "application/octet-stream"})
        except TimeoutError:
            raise TransferFailed(f"timed out uploading to {_safe(url)}") from None
        except httpx.HTTPError as exc:
            raise TransferFailed(f"uploading to {_safe(url)}: {exc or type(exc).__name__}") from exc
        if not 200 <= response.status_code < 300:
            raise TransferFailed(f"upload to {_safe(url)} failed with status {response.status_code}")

    def _tmp(self, kind: str) -> Path:
        return self.cache_dir / "tmp" / f"{uuid.uuid4().hex}.{kind}"

    def _evict(self) -> None:
        """Drop least recently used entries (not in use) until the cache fits its size."""
        entries = []
        for entry in self.cache_dir.iterdir():
            if entry.name == "tmp" or not entry.is_dir():
                continue
            meta = _read_meta(entry / "meta.json") or {}
            entries.append((float(meta.get("last_used", 0)), int(meta.get("size", 0)), entry))
        total = sum(size for _, size, _ in entries)
        for _, size, entry in sorted(entries):
            if total <= self.config.download_cache_max_bytes:
                break
            if self._in_use.get(entry.name):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            total -= size
            log.info("download-cache-evicted", entry=entry.name, size=size)


def _copy_file(src: Path, dest: Path, digests: Digests) -> None:
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        while chunk := fin.read(CHUNK):
            digests.update(chunk)
            fout.write(chunk)


def _read_meta(path: Path) -> dict | None:  # type: ignore[type-arg]
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def _write_meta(path: Path, meta: dict) -> None:  # type: ignore[type-arg]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, path)


def _safe(url: str) -> str:
    """The URL without credentials or query (signed URLs must not end up in logs)."""
    parts = urlparse(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
