"""Applying one layer tarball onto a root filesystem directory, safely, with OCI whiteouts.

Used for image layers (in order, each over the previous) and for `preloaded+layer:` layers
extracted at a path inside a stack; the executor's DownloadAction can use it the same way.

Safety: member names that are absolute or contain `..` are refused (UnsafeLayer). Parent
directories are resolved inside the root the way the container will see them: a symlink with an
absolute target restarts at the root, and one whose relative target climbs above the root is
refused. The last component is never followed: an existing symlink or file there is replaced, so
nothing is ever written outside the root. Hard links must point at an existing non-directory
inside the root.

Whiteouts: `.wh.<name>` removes `<name>` of lower layers; `.wh..wh..opq` empties its directory of
everything lower layers put there (entries of the same layer survive, as the spec says).

Limits: character and block devices are skipped (runc provides /dev; overlayfs would read a 0/0
char device in a lower dir as a whiteout); extended attributes (file capabilities included) are
not applied; owners, modes (setuid included) and mtimes are. Runs synchronously (call it in a
thread); `stop` is checked between members so a cancelled pull ends promptly.
"""
from __future__ import annotations

import os
import shutil
import stat
import tarfile
import threading
from pathlib import Path
from typing import Protocol

from .errors import ImageProblem, UnsafeLayer


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_MAX_SYMLINKS = 40
_CHUNK = 1 << 20


def member_parts(name: str) -> list[str]:
    """A member name split into components; refuses absolute names and `..`."""
    if name.startswith("/"):
        raise UnsafeLayer(f"absolute path {name!r} in layer")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayer(f"path {name!r} in layer climbs out with '..'")
    return parts


def resolve_dir(root: Path, parts: list[str], *, create: bool, created: set[Path] | None = None) -> Path:
    """The host directory that `parts` (relative to root) names, following symlinks inside root.

    Missing directories are made when `create` (and recorded in `created`); a symlink climbing
    above root, a loop, or a non-directory in the way raise.
    """
    current, pending, hops = root, list(parts), 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if current == root:
                raise UnsafeLayer(f"a symlink on the way to {'/'.join(parts)!r} climbs out of the root")
            current = current.parent
            continue
        candidate = current / part
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            if not create:
                raise ImageProblem(f"{'/'.join(parts)!r}: {part!r} does not exist") from None
            os.mkdir(candidate, 0o755)
            if created is not None:
                created.add(candidate)
            current = candidate
            continue
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > _MAX_SYMLINKS:
                raise UnsafeLayer(f"too many symlinks on the way to {'/'.join(parts)!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = root
            pending[:0] = target.split("/")
        elif stat.S_ISDIR(st.st_mode):
            current = candidate
        else:
            raise ImageProblem(f"{'/'.join(parts)!r}: {part!r} is not a directory")
    return current


class _Applier:
    """State of one layer being applied: what it wrote (whiteouts spare those) and dir mtimes."""

    def __init__(self, root: Path, base: Path, stop: threading.Event | None) -> None:
        self.root, self.base, self.stop = root, base, stop
        self.written: set[Path] = set()
        self.dir_times: list[tuple[Path, float]] = []

    def run(self, tar: tarfile.TarFile) -> int:
        count = 0
        while (member := _next(tar, count)) is not None:
            if self.stop is not None and self.stop.is_set():
                raise ImageProblem("layer extraction stopped")
            self.member(tar, member)
            count += 1
        for path, mtime in reversed(self.dir_times):  # children first changed their parents' mtime
            os.utime(path, (mtime, mtime), follow_symlinks=False)
        return count

    def member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = member_parts(member.name)
        if not parts:
            return  # the layer's root entry ("./"): the root keeps its own metadata
        name = parts[-1]
        parent = self._dir(parts[:-1])
        if name == OPAQUE:
            self.opaque(parent)
        elif name.startswith(WHITEOUT):
            if not name.startswith(WHITEOUT + WHITEOUT):  # other .wh..wh.* (aufs metadata) are ignored
                self.whiteout(parent / name[len(WHITEOUT):])
        else:
            self.create(tar, member, parent / name)

    def _dir(self, parts: list[str]) -> Path:
        base_parts = list(self.base.relative_to(self.root).parts)
        return resolve_dir(self.root, base_parts + parts, create=True, created=self.written)

    def whiteout(self, path: Path) -> None:
        if path not in self.written:
            _remove(path)

    def opaque(self, directory: Path) -> None:
        for entry in list(directory.iterdir()):
            if entry not in self.written:
                _remove(entry)
            elif entry.is_dir() and not entry.is_symlink():
                self.opaque(entry)

    def create(self, tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> None:
        if member.isdev():
            return
        existing = _lstat(path)
        if existing is not None and not (member.isdir() and stat.S_ISDIR(existing.st_mode)):
            _remove(path)
        if member.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                os.mkdir(path, 0o700)
            self.dir_times.append((path, member.mtime))
        elif member.isreg():
            self._file(tar, member, path)
        elif member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            self._hardlink(member, path)
        elif member.isfifo():
            os.mkfifo(path, 0o600)
        else:
            return  # other exotic types carry nothing a rootfs needs
        self.written.add(path)
        self._metadata(member, path)

    def _file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> None:
        source = tar.extractfile(member)
        assert source is not None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(_CHUNK):
                out.write(chunk)

    def _hardlink(self, member: tarfile.TarInfo, path: Path) -> None:
        parts = member_parts(member.linkname)
        if not parts:
            raise UnsafeLayer(f"hard link {member.name!r} to the root")
        base_parts = list(self.base.relative_to(self.root).parts)
        source = resolve_dir(self.root, base_parts + parts[:-1], create=False) / parts[-1]
        st = _lstat(source)
        if st is None or stat.S_ISDIR(st.st_mode):
            raise ImageProblem(f"hard link {member.name!r} points at {member.linkname!r}, which is not a file")
        os.link(source, path, follow_symlinks=False)

    def _metadata(self, member: tarfile.TarInfo, path: Path) -> None:
        if member.islnk():
            return  # a hard link shares its target's inode and metadata
        os.lchown(path, member.uid, member.gid)  # before chmod: chown clears setuid bits
        if not member.issym():
            os.chmod(path, member.mode & 0o7777)
        if not member.isdir():
            os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


def apply_layer(root: Path, tar_stream: Readable, *, at: str = "/", stop: threading.Event | None = None) -> int:
    """Apply an uncompressed tar stream onto `root` (at the absolute path `at` inside it).

    Returns the number of members read. Raises UnsafeLayer / ImageProblem; a corrupt archive
    raises ImageProblem. What was already written stays: apply into a scratch directory.
    """
    root = Path(root)
    created: set[Path] = set()
    base = resolve_dir(root, member_parts(at.lstrip("/")), create=True, created=created)
    applier = _Applier(root, base, stop)
    applier.written |= created
    try:
        with tarfile.open(fileobj=tar_stream, mode="r|") as tar:  # type: ignore[call-overload]
            return applier.run(tar)
    except tarfile.TarError as exc:
        raise ImageProblem(f"layer is not a valid tar archive: {exc}") from None


def _next(tar: tarfile.TarFile, count: int) -> tarfile.TarInfo | None:
    """The next member, or None at the end, which may come right after the last member's data.

    umoci (0.4.7) writes layers without the final block padding and end-of-archive blocks; Go's
    tar reader, hence every registry client, reads them as complete, and so do we. A member whose
    data is cut short still fails while its data is read.
    """
    try:
        return tar.next()
    except tarfile.ReadError:
        if count == 0:
            raise
        return None


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _remove(path: Path) -> None:
    st = _lstat(path)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)
