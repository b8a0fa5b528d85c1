"""Processes started in a container through the keeper (keeper.py), and how their exit is classified.

The backend builds a process.json, hands `runc exec --detach` plus the process's stdio fds to
the keeper, and gets back the host pid once runc has started it ("failed" without a pid file
means it never started: missing executable, bad cwd, ...; runc's reason is in its JSON log).
The exit status arrives when the process itself exits, even if children it put in the
background still hold its output: whatever the process wrote is drained from the pipes first,
later output of such children keeps streaming until they close it. A SIGKILL while the memory
cgroup's oom_kill counter went up is reported as "out of memory".

Limit: processes outlive the backend's Python process, but their exit status does not.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal as signals
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

from . import cgroups
from .errors import GardenError
from .models import ExitStatus, ProcessIO

log = structlog.get_logger("garden")
T = TypeVar("T")
OOM_REASON = "out of memory"
KEEPER = Path(__file__).with_name("keeper.py")


def exit_status(wait_status: int, oom: bool) -> ExitStatus:
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        oom = oom and sig == signals.SIGKILL
        return ExitStatus(code=128 + sig, signal=sig, oom_killed=oom, reason=OOM_REASON if oom else "")
    return ExitStatus(code=os.WEXITSTATUS(wait_status), signal=None, oom_killed=False, reason="")


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
    """

    def __init__(self) -> None:
        self.child_fds: list[int] = []
        self.pumps: list[OutputPump] = []

    @classmethod
    def open(cls, io: ProcessIO, stdout_path: str | None, stderr_path: str | None, label: str,
             on_pump_close: Callable[[OutputPump], None]) -> "Stdio":
        stdio = cls()
        try:
            stdio.child_fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
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


class ProcessKeeper:
    """Client of one keeper helper process (started by `start`, ended by `aclose`)."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._started: dict[str, asyncio.Future[int | None]] = {}
        self._exits: dict[str, asyncio.Future[int]] = {}

    async def start(self) -> None:
        """Start the keeper, or restart it if it died (idempotent)."""
        if self._sock is not None:
            return
        if self._proc is not None:  # it died: collect it before starting a new one
            await self._proc.wait()
            self._proc = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", str(KEEPER), str(theirs.fileno()), pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL)
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        asyncio.get_running_loop().add_reader(ours.fileno(), self._readable)

    async def spawn(self, key: str, argv: list[str], pid_file: Path,
                    fds: tuple[int, int, int]) -> tuple[int | None, asyncio.Future[int]]:
        """Run `argv` (`runc run|exec --detach --pid-file`) with fds as stdio.

        Returns (pid from the pid file, or None if runc exited without writing it; a future of
        that process's wait status, resolved when it exits).
        """
        if self._sock is None:
            raise GardenError("process keeper is not running")
        loop = asyncio.get_running_loop()
        started, exited = loop.create_future(), loop.create_future()
        self._started[key], self._exits[key] = started, exited
        message = json.dumps({"op": "exec", "id": key, "argv": argv, "pid_file": str(pid_file)}).encode()
        while True:
            try:
                socket.send_fds(self._sock, [message], list(fds))
                break
            except BlockingIOError:
                await asyncio.sleep(0.001)
        try:
            pid = await asyncio.wait_for(asyncio.shield(started), self._timeout)
        except BaseException:
            self._exits.pop(key, None)
            raise
        finally:
            self._started.pop(key, None)
        if pid is None:
            self._exits.pop(key, None)
        return pid, exited

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            message = json.loads(data)
            key, event = message.get("id", ""), message.get("event")
            if event == "started" and key in self._started:
                _resolve(self._started[key], message["pid"])
            elif event == "failed" and key in self._started:
                _resolve(self._started[key], None)
            elif event == "exited" and key in self._exits:
                _resolve(self._exits.pop(key), message["status"])

    def _lost(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        error = GardenError("process keeper exited: exit statuses of running processes are lost")
        futures: list[asyncio.Future[Any]] = [*self._started.values(), *self._exits.values()]
        for future in futures:
            if not future.done():
                future.set_exception(error)
        self._started.clear()
        self._exits.clear()

    async def aclose(self) -> None:
        self._lost()
        if self._proc is not None:
            try:
                await asyncio.wait_for(self._proc.wait(), self._timeout)
            except asyncio.TimeoutError:
                self._proc.kill()
                await self._proc.wait()
            self._proc = None


def _resolve(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


class RuncProcess:
    """One started process; `wait()` may be awaited any number of times, by any number of callers."""

    def __init__(self, process_id: str, handle: str, host_pid: int, exited: asyncio.Future[int],
                 pumps: list[OutputPump], cgroup_path: str, oom_kills_before: int) -> None:
        self.id = process_id
        self.handle = handle
        self.pid = host_pid
        self._exited = exited
        self._pumps = pumps
        self._cgroup = cgroup_path
        self._oom_before = oom_kills_before
        self._waiter = asyncio.get_running_loop().create_task(self._wait(), name=f"garden-process-{process_id}")

    async def _wait(self) -> ExitStatus:
        wait_status = await self._exited
        for pump in self._pumps:
            pump.drain()
        status = exit_status(wait_status, cgroups.oom_kills(self._cgroup) > self._oom_before)
        log.debug("process-exited", handle=self.handle, process_id=self.id, code=status.code, oom=status.oom_killed)
        return status

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
        """Signal the process itself (its host pid); a no-op once it has exited."""
        if not self._exited.done():
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    async def settle(self) -> None:
        """Wait for the waiter to finish however it ends (used on shutdown: never raises)."""
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
