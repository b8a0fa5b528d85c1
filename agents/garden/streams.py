"""Files into and out of a container (Garden's StreamIn/StreamOut, reduced to what Diego uses).

Both are a helper process run in the container with `runc exec`: the static busybox mounted at
/.pydiego/sh (the init binary), so they work in a rootfs without tar, cat or even a shell, and
every path, symlink and owner resolves as the container sees it: a symlink cannot lead out of
the container, and an unprivileged container's uid mapping applies to extracted files.

- stream_in: `tar -x` of a host tar file (plain or gzip, detected by its magic bytes) given to
  the helper as stdin, into dest_dir (created), as the given user. Files keep the archive's
  owners when the user is root, and belong to the user otherwise (`tar -o`).
- stream_out: one regular file's bytes, refused beyond `limit` (checked by size first, then by
  reading at most limit + 1 bytes, so a file growing meanwhile is refused too).

This module is pure: it builds the helper's ProcessSpec and interprets its exit; the backend
runs it. Limits: no directory streaming, no streaming of archives out.
"""
from __future__ import annotations

import posixpath
import uuid
from pathlib import Path

from .errors import FileMissing, FileTooLarge, InvalidSpec, StreamFailed
from .models import HELPER_PREFIX, ExitStatus, ProcessSpec
from .ocispec import INIT_PATH

GZIP_MAGIC = b"\x1f\x8b"
# Exit codes of the stream-out script.
MISSING, NOT_REGULAR, TOO_LARGE = 3, 4, 5
STREAM_IN = 'mkdir -p "$1" && exec tar -x $2 -f - -C "$1"'
STREAM_OUT = (
    '[ -e "$1" ] || exit 3; [ -f "$1" ] || exit 4; '
    'size=$(stat -L -c %s "$1") || exit 2; [ "$size" -le "$2" ] || { echo "$size" >&2; exit 5; }; '
    'exec head -c "$(($2 + 1))" "$1"'
)


def helper_id() -> str:
    return f"{HELPER_PREFIX}stream-{uuid.uuid4().hex[:12]}"


def _absolute(path: str, what: str) -> str:
    if not posixpath.isabs(path) or "\0" in path:
        raise InvalidSpec(f"{what} must be an absolute path inside the container: {path!r}")
    return path


def stream_in_spec(dest_dir: str, tar_path: str | Path, user: str) -> ProcessSpec:
    """The helper that extracts `tar_path` (a host file) into dest_dir in the container."""
    dest = _absolute(dest_dir, "dest_dir")
    try:
        with open(tar_path, "rb") as f:
            gzip = f.read(2) == GZIP_MAGIC
    except OSError as exc:
        raise InvalidSpec(f"cannot read tar file {tar_path}: {exc}") from exc
    flags = ("z" if gzip else "") + ("" if user in ("", "root") else "o")
    return ProcessSpec(path=INIT_PATH, args=("-c", STREAM_IN, "stream-in", dest, f"-{flags}" if flags else ""),
                       user=user, stdin_path=str(tar_path), process_id=helper_id())


def check_stream_in(status: ExitStatus, stderr: bytes, dest_dir: str) -> None:
    if status.code != 0:
        raise StreamFailed(f"extracting into {dest_dir} failed (exit {status.code}): {_text(stderr)}")


def stream_out_spec(path: str, limit: int) -> ProcessSpec:
    if limit < 0:
        raise InvalidSpec("limit must not be negative")
    return ProcessSpec(path=INIT_PATH, args=("-c", STREAM_OUT, "stream-out", _absolute(path, "path"), str(limit)),
                       process_id=helper_id())


def stream_out_result(status: ExitStatus, stdout: bytes, stderr: bytes, path: str, limit: int) -> bytes:
    if status.code in (MISSING, NOT_REGULAR):
        kind = "no such file" if status.code == MISSING else "not a regular file"
        raise FileMissing(f"{path}: {kind}", path=path)
    if status.code == TOO_LARGE or (status.code == 0 and len(stdout) > limit):
        size = _text(stderr) or f"more than {limit}"
        raise FileTooLarge(f"{path} is {size} bytes, the limit is {limit}", path=path, limit=limit)
    if status.code != 0:
        raise StreamFailed(f"reading {path} failed (exit {status.code}): {_text(stderr)}")
    return stdout


def _text(data: bytes) -> str:
    return data.decode(errors="replace").strip()[:500]
