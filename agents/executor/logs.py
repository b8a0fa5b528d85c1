"""Per-container output: processes write host files, the executor turns them into log lines.

Every run action's stdout and stderr go to append-only host files under the container's state
directory (the backend opens them O_APPEND), so an application keeps writing while no rep runs.
A collector (Executor, every log_poll_interval) reads what is new in each file, cuts it into
lines (at most MAX_MESSAGE bytes, Diego's limit) and appends them, stamped with the source and
stream, to the container's retained log: two JSON-lines segments on disk whose total stays under
log_retention_bytes, mirrored in memory for tail/follow. System lines (CELL, HEALTH) are appended
directly.

The consumed prefix of a raw file is released with FALLOC_FL_PUNCH_HOLE (the file keeps its size,
the writer keeps appending, nothing is lost); on a file system without hole punching a file is
truncated only when fully consumed, which loses bytes written in the instant between the check
and the truncation. Read offsets are saved after each pass, so a restarted executor neither loses
nor repeats more than the lines of one pass.
"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import json
import os
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from pydantic import ValidationError

from control.kit.clock import Clock

from .models import LogLine

log = structlog.get_logger("executor")

MAX_MESSAGE = 61440          # bytes per log line (reference §6.5)
READ_CHUNK = 1024 * 1024     # most bytes read from one file in one pass
RELEASE_EVERY = 64 * 1024    # consumed bytes before the prefix of a raw file is released
_PUNCH = 0x01 | 0x02         # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE

_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def punch_hole(fd: int, length: int) -> bool:
    """Free the first `length` bytes of a file (reads of them return zeros); False if unsupported."""
    if _fallocate(fd, _PUNCH, 0, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS):
        return False
    raise OSError(err, os.strerror(err))


def split_lines(data: bytes, final: bool) -> tuple[list[bytes], int]:
    """Complete lines of `data` (without newline, cut at MAX_MESSAGE) and the bytes consumed.

    A trailing partial line is left for the next pass unless `final` or it is already too long.
    """
    lines: list[bytes] = []
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos, pos + MAX_MESSAGE + 1)
        if nl == -1:
            if final or len(data) - pos >= MAX_MESSAGE:
                end = min(len(data), pos + MAX_MESSAGE)
                lines.append(data[pos:end])
                pos = end
                continue
            break
        line = data[pos:nl]
        lines.append(line[:MAX_MESSAGE])
        pos = nl + 1
    return lines, pos


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class ContainerLog:
    """The retained output of one container and its raw output files."""

    def __init__(self, directory: Path, retention_bytes: int, clock: Clock) -> None:
        self.dir = directory
        self._retention = retention_bytes
        self._clock = clock
        self._sources: dict[str, str] = {}     # raw file name -> log source
        self._offsets: dict[str, int] = {}     # raw file name -> bytes consumed
        self._released: dict[str, int] = {}    # raw file name -> prefix already released
        self._finished: set[str] = set()       # raw files whose writer has exited
        self._lines: deque[tuple[int, LogLine, int]] = deque()  # (seq, line, encoded size)
        self._bytes = 0
        self._seq = 0
        self._segment_bytes = 0
        self._wakeup = asyncio.Event()
        self._counter = 0
        self.closed = False

    # -- setup -----------------------------------------------------------------------------

    def open(self) -> None:
        """Create the directory, or reload the state a previous executor left in it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        index = self.dir / "index.json"
        if index.is_file():
            try:
                state = json.loads(index.read_text())
                self._sources = dict(state.get("sources", {}))
                self._offsets = {k: int(v) for k, v in state.get("offsets", {}).items()}
                self._finished = set(state.get("finished", []))
                self._counter = int(state.get("counter", len(self._sources)))
            except (OSError, ValueError) as exc:
                log.error("log-index-unreadable", path=str(index), error=str(exc))
        for segment in (self.dir / "lines.1.jsonl", self.dir / "lines.jsonl"):
            self._load_segment(segment)
        current = self.dir / "lines.jsonl"
        self._segment_bytes = current.stat().st_size if current.exists() else 0

    def _load_segment(self, path: Path) -> None:
        if not path.is_file():
            return
        for raw in path.read_bytes().splitlines():
            try:
                line = LogLine.model_validate_json(raw)
            except ValidationError:
                continue
            self._remember(line, len(raw) + 1)

    # -- writing ---------------------------------------------------------------------------

    def new_output(self, source: str) -> tuple[str, str]:
        """Host paths for a new process's stdout and stderr, registered for collection."""
        self._counter += 1
        paths = []
        for stream in ("stdout", "stderr"):
            name = f"p{self._counter}.{stream}"
            self._sources[name] = source
            self._offsets[name] = 0
            (self.dir / name).touch()
            paths.append(str(self.dir / name))
        self._save_index()
        return paths[0], paths[1]

    def finish_output(self, stdout_path: str, stderr_path: str) -> None:
        """The writer exited: collect what is left, including a last line without newline."""
        for path in (stdout_path, stderr_path):
            self._finished.add(Path(path).name)
        self.collect()

    def system(self, text: str, source: str = "CELL", stream: str = "stdout") -> None:
        self._append([LogLine(timestamp=self._now(), source=source, stream=stream, line=text)])

    def collect(self) -> int:
        """Read new output of every raw file into the log; returns the number of new lines."""
        if self.closed:
            return 0
        new: list[LogLine] = []
        changed = False
        for name, source in list(self._sources.items()):
            lines, consumed, gone = self._read(name)
            if consumed:
                changed = True
            stream = name.rsplit(".", 1)[1]
            now = self._now()
            new.extend(LogLine(timestamp=now, source=source, stream=stream,
                               line=raw.decode("utf-8", errors="replace")) for raw in lines)
            if gone:
                self._drop(name)
                changed = True
        if new:
            self._append(new)
        if changed:
            self._save_index()
        return len(new)

    def _read(self, name: str) -> tuple[list[bytes], int, bool]:
        """(lines, bytes consumed, file finished and fully read)."""
        path = self.dir / name
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return [], 0, True
        try:
            offset = self._offsets.get(name, 0)
            size = os.fstat(fd).st_size
            if size < offset:  # truncated under us: start over
                offset = self._offsets[name] = 0
            data = os.pread(fd, min(READ_CHUNK, size - offset), offset) if size > offset else b""
            final = name in self._finished and offset + len(data) >= size
            lines, consumed = split_lines(data, final)
            self._offsets[name] = offset + consumed
            self._release(fd, name, offset + consumed, size)
            return lines, consumed, final and offset + consumed >= size
        finally:
            os.close(fd)

    def _release(self, fd: int, name: str, consumed_to: int, size: int) -> None:
        aligned = consumed_to - consumed_to % 4096
        if aligned - self._released.get(name, 0) < RELEASE_EVERY:
            return
        try:
            if punch_hole(fd, aligned):
                self._released[name] = aligned
            elif consumed_to == size:
                os.ftruncate(fd, 0)
                self._offsets[name] = 0
                self._released[name] = 0
        except OSError as exc:
            log.warning("log-release-failed", file=name, error=str(exc))

    def _drop(self, name: str) -> None:
        self._sources.pop(name, None)
        self._offsets.pop(name, None)
        self._released.pop(name, None)
        self._finished.discard(name)
        try:
            (self.dir / name).unlink()
        except FileNotFoundError:
            pass

    def _append(self, lines: list[LogLine]) -> None:
        if self.closed:
            return
        encoded = [line.model_dump_json().encode() + b"\n" for line in lines]
        half = self._retention // 2
        batch: list[bytes] = []
        for data in encoded:  # each segment stays under half the retention: both under all of it
            if self._segment_bytes + len(data) > half and (self._segment_bytes or batch):
                self._write(batch)
                batch = []
                self._rotate()
            batch.append(data)
            self._segment_bytes += len(data)
        self._write(batch)
        for line, data in zip(lines, encoded):
            self._remember(line, len(data))
        waiters, self._wakeup = self._wakeup, asyncio.Event()
        waiters.set()

    def _write(self, batch: list[bytes]) -> None:
        if not batch:
            return
        try:
            with open(self.dir / "lines.jsonl", "ab") as f:
                f.write(b"".join(batch))
        except OSError as exc:
            log.warning("log-write-failed", dir=str(self.dir), error=str(exc))

    def _rotate(self) -> None:
        try:
            os.replace(self.dir / "lines.jsonl", self.dir / "lines.1.jsonl")
        except FileNotFoundError:
            pass
        self._segment_bytes = 0

    def _remember(self, line: LogLine, size: int) -> None:
        self._seq += 1
        self._lines.append((self._seq, line, size))
        self._bytes += size
        while self._bytes > self._retention and self._lines:
            _, _, dropped = self._lines.popleft()
            self._bytes -= dropped

    def _save_index(self) -> None:
        state = {"sources": self._sources, "offsets": self._offsets, "finished": sorted(self._finished),
                 "counter": self._counter}
        try:
            _atomic_write(self.dir / "index.json", json.dumps(state).encode())
        except OSError as exc:
            log.warning("log-index-write-failed", dir=str(self.dir), error=str(exc))

    def _now(self) -> float:
        return self._clock.now_ns() / 1e9

    # -- reading ---------------------------------------------------------------------------

    @property
    def retained_bytes(self) -> int:
        return self._bytes

    def tail(self, count: int) -> list[LogLine]:
        if count <= 0:
            return []
        return [line for _, line, _ in list(self._lines)[-count:]]

    async def follow(self, tail: int) -> AsyncIterator[LogLine]:
        """The last `tail` lines, then every new line until close()."""
        last = self._lines[-1][0] if self._lines else 0
        for line in self.tail(tail):
            yield line
        while True:
            wakeup = self._wakeup
            fresh = []
            for seq, line, _ in reversed(self._lines):
                if seq <= last:
                    break
                fresh.append((seq, line))
            fresh.reverse()
            for seq, line in fresh:
                last = seq
                yield line
            if self.closed:
                return
            if not fresh:
                await wakeup.wait()

    def close(self) -> None:
        """No more lines: followers end."""
        self.closed = True
        waiters, self._wakeup = self._wakeup, asyncio.Event()
        waiters.set()
