"""Layer blobs on disk: digest-verified reading, decompression, and applying them to a rootfs.

`apply_blob` streams a (gzip-compressed or plain) layer file once: it hashes the compressed
bytes (the blob digest) and the uncompressed tar (the config's diff_id) while `apply_layer`
extracts it, then compares both. A mismatch raises after extraction, so callers extract into a
scratch directory they throw away on error. Limits: gzip and uncompressed layers only (zstd is
refused with a clear message; Python 3.11 has no zstd); sha256 only.
"""
from __future__ import annotations

import gzip
import hashlib
import threading
import zlib
from pathlib import Path

from .errors import ImageProblem
from .tarlayer import Readable, apply_layer

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20


class HashingReader:
    """A read-only file wrapper that hashes (sha256) and counts everything read through it."""

    def __init__(self, source: Readable) -> None:
        self._source = source
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1, /) -> bytes:
        data = self._source.read(n)
        self._hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    @property
    def digest(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"


def apply_blob(root: Path, blob: Path, *, digest: str = "", diff_id: str = "", at: str = "/",
               stop: threading.Event | None = None, name: str = "") -> None:
    """Extract the layer file `blob` onto root at `at`; verify digest / diff_id when given."""
    label = name or digest or blob.name
    try:
        with open(blob, "rb") as raw_file:
            magic = raw_file.read(4)
            raw_file.seek(0)
            if magic.startswith(ZSTD_MAGIC):
                raise ImageProblem(f"layer {label} is zstd-compressed, which is not supported")
            raw = HashingReader(raw_file)
            unpacked: Readable = raw
            if magic.startswith(GZIP_MAGIC):
                unpacked = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[call-overload]
            tar = HashingReader(unpacked)
            apply_layer(root, tar, at=at, stop=stop)
            tar.drain()
            raw.drain()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ImageProblem(f"layer {label} is corrupt: {exc}") from None
    except OSError as exc:
        raise ImageProblem(f"layer {label} could not be applied: {exc}") from None
    if digest and raw.digest != digest:
        raise ImageProblem(f"layer {label} has digest {raw.digest}, expected {digest}")
    if diff_id and tar.digest != diff_id:
        raise ImageProblem(f"layer {label} unpacks to {tar.digest}, but the image config says {diff_id}")
