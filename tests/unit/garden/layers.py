"""Building small layer tarballs in memory for the image tests."""
from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    link: str = ""
    uid: int = 0
    gid: int = 0
    mtime: int = 1_700_000_000


def file(name: str, data: bytes | str = b"", mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(name, tarfile.REGTYPE, data.encode() if isinstance(data, str) else data, mode, uid=uid, gid=gid)


def directory(name: str, mode: int = 0o755) -> Entry:
    return Entry(name, tarfile.DIRTYPE, mode=mode)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.SYMTYPE, mode=0o777, link=target)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.LNKTYPE, link=target)


def chardev(name: str) -> Entry:
    return Entry(name, tarfile.CHRTYPE, mode=0o666)


def tar_bytes(*entries: Entry) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type, info.mode, info.uid, info.gid, info.mtime = e.kind, e.mode, e.uid, e.gid, e.mtime
            info.linkname = e.link
            info.size = len(e.data) if e.kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(e.data) if e.kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"
