"""Processes started in a container through the keeper (keeper.py), and how their exit is classified.

The backend builds a process.json, hands `runc exec --detach` plus the process's stdio fds to
the keeper, and gets back the host pid once runc has started it ("failed" without a pid file
means it never started: missing executable, bad cwd, ...; runc's reason is in its JSON log).
The exit status arrives when the process itself exits, even if children it put in the
background still hold its output: whatever the process wrote is drained from the pipes first,
later output of such children keeps streaming until they close it. A SIGKILL while the memory
cgroup's oom_kill counter went up is reported as "out of memory".

Restart safety: processes outlive the backend's Python process and so do their exit statuses
(the keeper writes each one to the process's exit_status file). A later backend re-attaches with
a pidfd on the recorded pid (start time checked against pid reuse), waits for it to end, then
reads that file. If the keeper died too, the status is lost: ExitStatus(code=255, lost=True,
reason="exit status lost"). Output to host files (stdout_path) keeps flowing after the backend
dies; output to callbacks flows through pipes that die with it (later writes get EPIPE/SIGPIPE).
"""
from __future__ import annotations

import asyncio
import json
import os
import signal as signals
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from . import cgroups, store
from .errors import GardenError
from .layout import ProcessDir
from .models import ExitStatus, ProcessIO
from .store import ExitRecord, ProcessRecord

log = structlog.get_logger("garden")
OOM_REASON = "out of memory"
LOST_CODE = 255
LOST_REASON = "exit status lost"
STATUS_GRACE_S = 5.0   # how long a live keeper may take to write a status after the exit
FOLLOW_INTERVAL = 0.25  # seconds between reads of a re-attached process's output files


def exit_status(wait_status: int, oom: bool) -> ExitStatus:
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        oom = oom and sig == signals.SIGKILL
        return ExitStatus(code=128 + sig, signal=sig, oom_killed=oom, reason=OOM_REASON if oom else "")
    return ExitStatus(code=os.WEXITSTATUS(wait_status), signal=None, oom_killed=False, reason="")


def lost_status() -> ExitStatus:
    """The documented convention for a process that ended unobserved (its keeper was killed)."""
    return ExitStatus(code=LOST_CODE, signal=None, oom_killed=False, reason=LOST_REASON, lost=True)


class OutputPump:
    """Feeds a pipe's read end to a callback from the event loop until EOF or close()."""

    def __init__(self, fd: int, callback: Callable[[bytes], None], label: str,
                 on_close: Callable[["OutputPump"], None]) -> None:
        self._fd: int | None = fd
        self._callback = callback
        self._label = label
        self._on_close = on_close
        os.set_blocking(fd, False)
        asyncio.get_running_loop().add_reader(fd, self.drain)

    def drain(self) -> None:
        """Deliver everything readable right now (all of it, for a writer that has exited)."""
        while self._fd is not None:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.close()
                return
            try:
                self._callback(chunk)
            except Exception as exc:
                log.error("process-output-callback-failed", stream=self._label, error=str(exc))

    def close(self) -> None:
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
            self._on_close(self)


class Stdio:
    """The three fds a process starts with (given to the keeper), and pumps for the piped ones.

    A callback gets a pipe; otherwise a path gets an append-mode file; otherwise /dev/null.
    stdin is a host file opened read-only, or /dev/null.
    """

    def __init__(self) -> None:
        self.child_fds: list[int] = []
        self.pumps: list[OutputPump] = []

    @classmethod
    def open(cls, io: ProcessIO, stdout_path: str | None, stderr_path: str | None, label: str,
             on_pump_close: Callable[[OutputPump], None], stdin_path: str | None = None) -> "Stdio":
        stdio = cls()
        try:
            stdio.child_fds.append(os.open(stdin_path or os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            for callback, path, name in ((io.stdout, stdout_path, "stdout"), (io.stderr, stderr_path, "stderr")):
                if callback is not None:
                    read_end, write_end = os.pipe2(os.O_CLOEXEC)
                    stdio.child_fds.append(write_end)
                    stdio.pumps.append(OutputPump(read_end, callback, f"{label}/{name}", on_pump_close))
                elif path:
                    stdio.child_fds.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644))
                else:
                    stdio.child_fds.append(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC))
        except BaseException:
            stdio.close_child_ends()
            stdio.close_pumps()
            raise
        return stdio

    @property
    def fds(self) -> tuple[int, int, int]:
        return self.child_fds[0], self.child_fds[1], self.child_fds[2]

    def close_child_ends(self) -> None:
        """Our copies of the child's fds: closed once the keeper has them, so EOF means the child is done."""
        for fd in self.child_fds:
            os.close(fd)
        self.child_fds = []

    def close_pumps(self, drain: bool = False) -> None:
        for pump in self.pumps:
            if drain:
                pump.drain()
            pump.close()


class PidHandle:
    """A pidfd on one process: signals and exit detection immune to pid reuse, parent or not."""

    def __init__(self, fd: int, pid: int, ticks: int | None) -> None:
        self.fd: int | None = fd
        self.pid = pid
        self.ticks = ticks

    @classmethod
    def open(cls, pid: int, expected_ticks: int | None = None) -> "PidHandle | None":
        """None when no such process runs any more (or the pid now belongs to another one)."""
        try:
            fd = os.pidfd_open(pid)
        except (ProcessLookupError, ValueError, OSError):
            return None
        ticks = start_ticks(pid)
        if ticks is None or (expected_ticks is not None and ticks != expected_ticks):
            os.close(fd)
            return None
        return cls(fd, pid, ticks)

    def send(self, signum: int) -> None:
        if self.fd is not None:
            try:
                signals.pidfd_send_signal(self.fd, signum)
            except ProcessLookupError:
                pass

    async def gone(self) -> None:
        """Return once the process has exited (a zombie counts)."""
        if self.fd is None:
            return
        loop = asyncio.get_running_loop()
        ended = loop.create_future()
        loop.add_reader(self.fd, lambda: ended.done() or ended.set_result(None))
        try:
            await ended
        finally:
            loop.remove_reader(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def start_ticks(pid: int) -> int | None:
    """starttime of /proc/<pid>/stat (clock ticks after boot); None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(pid: int, ticks: int | None) -> bool:
    current = start_ticks(pid) if pid > 0 else None
    return current is not None and (ticks is None or current == ticks)


class FileFollower:
    """Feeds what is appended to a file from now on to a callback (re-attached processes)."""

    def __init__(self, path: str, callback: Callable[[bytes], None]) -> None:
        self._path = path
        self._callback = callback
        try:
            self._offset = os.stat(path).st_size
        except OSError:
            self._offset = 0

    def poll(self) -> None:
        try:
            with open(self._path, "rb") as f:
                if os.fstat(f.fileno()).st_size < self._offset:  # truncated: start over
                    self._offset = 0
                f.seek(self._offset)
                while chunk := f.read(65536):
                    self._offset += len(chunk)
                    self._callback(chunk)
        except OSError:
            return
        except Exception as exc:
            log.error("process-output-callback-failed", stream=self._path, error=str(exc))


class RuncProcess:
    """One process; `wait()` may be awaited any number of times, by any number of callers.

    Its exit comes from the keeper's message when this backend object started it. Otherwise (a
    process of an earlier backend object) or once the keeper is lost, from its pidfd and then
    the status file its keeper wrote; without one the status is lost (LOST_CODE, `lost=True`).
    """

    def __init__(self, pdir: ProcessDir, handle: str, record: ProcessRecord, exited: asyncio.Future[ExitRecord] | None,
                 pid: PidHandle | None, cgroup_path: str, pumps: Sequence[OutputPump] = (),
                 followers: Sequence[FileFollower] = ()) -> None:
        self.id = pdir.id
        self.handle = handle
        self.pid = record.pid
        self._dir = pdir
        self._record = record
        self._exited = exited
        self._pidfd = pid
        self._cgroup = cgroup_path
        self._pumps = list(pumps)
        self._followers = list(followers)
        self._waiter = asyncio.get_running_loop().create_task(self._wait(), name=f"garden-process-{self.id}")

    async def _wait(self) -> ExitStatus:
        try:
            status = None
            if self._exited is not None:
                try:
                    status = self._classify(await self._exited)
                except GardenError:  # the keeper is lost: its status file may still tell
                    pass
            if status is None:
                status = await self._wait_detached()
            for pump in self._pumps:
                pump.drain()
            for follower in self._followers:
                follower.poll()
        finally:
            if self._pidfd is not None:
                self._pidfd.close()
        log.debug("process-exited", handle=self.handle, process_id=self.id, code=status.code, oom=status.oom_killed)
        return status

    async def _wait_detached(self) -> ExitStatus:
        exit_record = store.load_exit(self._dir)
        if exit_record is None and self._pidfd is not None:
            gone = asyncio.ensure_future(self._pidfd.gone())
            try:
                while not gone.done():
                    await asyncio.wait([gone], timeout=FOLLOW_INTERVAL if self._followers else None)
                    for follower in self._followers:
                        follower.poll()
            finally:
                gone.cancel()
                await asyncio.wait([gone])
        if exit_record is None:
            exit_record = await self._status_file()
        return self._classify(exit_record) if exit_record is not None else lost_status()

    async def _status_file(self) -> ExitRecord | None:
        """The keeper writes the file right after reaping: wait for it while that keeper lives."""
        deadline = asyncio.get_running_loop().time() + STATUS_GRACE_S
        while True:
            found = store.load_exit(self._dir)
            if found is not None:
                return found
            if not alive(self._record.keeper_pid, self._record.keeper_start_ticks):
                return store.load_exit(self._dir)
            if asyncio.get_running_loop().time() > deadline:
                return None
            await asyncio.sleep(0.02)

    def _classify(self, exit_record: ExitRecord) -> ExitStatus:
        kills = exit_record.oom_kills if exit_record.oom_kills is not None else cgroups.oom_kills(self._cgroup)
        return exit_status(exit_record.wait_status, kills > self._record.oom_kills_before)

    def on_exit(self, callback: Callable[[], None]) -> None:
        def done(task: asyncio.Task[ExitStatus]) -> None:
            if not task.cancelled():
                task.exception()  # seen here; callers of wait() still get it
            callback()
        self._waiter.add_done_callback(done)

    @property
    def exited(self) -> bool:
        return self._waiter.done()

    async def wait(self) -> ExitStatus:
        return await asyncio.shield(self._waiter)

    def signal(self, signum: int) -> None:
        """Signal the process itself (through its pidfd); a no-op once it has exited."""
        if not self._waiter.done() and self._pidfd is not None:
            self._pidfd.send(signum)

    async def settle(self) -> None:
        """Wait for the waiter to finish however it ends (never raises)."""
        try:
            await asyncio.shield(self._waiter)
        except (Exception, asyncio.CancelledError):
            pass

    async def aclose(self) -> None:
        """Stop watching (backend shutdown): the process itself keeps running."""
        self._waiter.cancel()
        try:
            await self._waiter
        except (Exception, asyncio.CancelledError):
            pass


def runc_error(log_file: Path) -> str:
    """The last error message in a runc --log-format json log, or ''."""
    message = ""
    try:
        lines = log_file.read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("level") in ("error", "fatal"):
            message = str(entry.get("msg", ""))
    return message


def resolve_user(user: str, rootfs: Path) -> tuple[int, int]:
    """'root', 'uid[:gid]' or a name from the container's /etc/passwd -> (uid, gid)."""
    if user in ("", "root"):
        return 0, 0
    head, _, tail = user.partition(":")
    if head.isdigit():
        uid = int(head)
        return uid, int(tail) if tail.isdigit() else uid
    passwd = (rootfs / "etc" / "passwd").resolve()
    if rootfs.resolve() not in passwd.parents:  # a symlink pointing out of the container
        raise LookupError(f"user {user!r}: /etc/passwd is not inside the container")
    try:
        for line in passwd.read_text().splitlines():
            fields = line.split(":")
            if len(fields) >= 4 and fields[0] == head:
                return int(fields[2]), int(fields[3])
    except (OSError, ValueError) as exc:
        raise LookupError(f"user {user!r}: {exc}") from exc
    raise LookupError(f"user {user!r} not found in the container's /etc/passwd")
