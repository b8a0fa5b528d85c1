"""runc's command line for one depot, with the keeper (keeper.py) as parent of inits and processes.

Every call passes `--root <depot>/runc`, so only this backend's containers are visible. `runc run`
and `runc exec` are started by the keeper (`--detach`), which then reaps the init or process it
inherits: a dead init is reaped at once, so deleting a container needs no `--force` polling
(runc treats an unreaped zombie init as running), and exec'd processes report their own exit.

`KeeperClient` talks to the keeper over a socketpair. The keeper detaches itself at start, so it
is not this process's child: closing the client (or this process dying) never stops it; it
exits by itself once it has nothing left to reap.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, TypeVar

from .commands import run_cmd
from .errors import CommandFailed, GardenError
from .layout import Bundle
from .process import runc_error, start_ticks
from .store import ExitRecord

T = TypeVar("T")
KEEPER = Path(__file__).with_name("keeper.py")


class KeeperClient:
    """Client of one keeper helper process (started by `start`, let go by `aclose`)."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._ready: asyncio.Future[int] | None = None
        self._started: dict[str, asyncio.Future[int | None]] = {}
        self._exits: dict[str, asyncio.Future[ExitRecord]] = {}
        self._starting = asyncio.Lock()
        self.pid = 0
        self.start_ticks: int | None = None

    async def start(self) -> None:
        """Start a keeper, or a new one if the last one was lost (idempotent)."""
        async with self._starting:
            if self._sock is None:
                await self._start()

    async def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            starter = await asyncio.create_subprocess_exec(
                sys.executable, "-I", str(KEEPER), str(theirs.fileno()), pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL)  # stderr: ours, for tracebacks
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._ready = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_reader(ours.fileno(), self._readable)
        try:
            if await asyncio.wait_for(starter.wait(), self._timeout) != 0:  # it forks the keeper and exits
                raise GardenError(f"process keeper failed to start (exit {starter.returncode})")
            self.pid = await asyncio.wait_for(asyncio.shield(self._ready), self._timeout)
        except BaseException:
            self._lost()
            raise
        self.start_ticks = start_ticks(self.pid)

    async def spawn(self, key: str, argv: list[str], pid_file: Path, fds: tuple[int, int, int],
                    status_file: Path | None = None,
                    oom_file: Path | None = None) -> tuple[int | None, asyncio.Future[ExitRecord]]:
        """Run `argv` (`runc run|exec --detach --pid-file`) with fds as stdio.

        Returns (pid from the pid file, or None if runc exited without writing it; a future of
        that process's exit, resolved when it exits). The keeper also writes the exit to
        `status_file`, reading the oom_kill counter of `oom_file` at that moment.
        """
        if self._sock is None:
            raise GardenError("process keeper is not running")
        loop = asyncio.get_running_loop()
        started, exited = loop.create_future(), loop.create_future()
        self._started[key], self._exits[key] = started, exited
        message = json.dumps({"op": "exec", "id": key, "argv": argv, "pid_file": str(pid_file),
                              "status_file": _opt(status_file), "oom_file": _opt(oom_file)}).encode()
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
        while self._sock is not None:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            self._dispatch(json.loads(data))

    def _dispatch(self, message: dict[str, Any]) -> None:
        key, event = message.get("id", ""), message.get("event")
        if event == "ready" and self._ready is not None:
            _resolve(self._ready, int(message["pid"]))
        elif event == "fatal" and self._ready is not None and not self._ready.done():
            self._ready.set_exception(GardenError(f"process keeper failed to start: {message.get('error')}"))
        elif event == "started" and key in self._started:
            _resolve(self._started[key], message["pid"])
        elif event == "failed" and key in self._started:
            _resolve(self._started[key], None)
        elif event == "exited" and key in self._exits:
            _resolve(self._exits.pop(key), ExitRecord(wait_status=message["status"], oom_kills=message.get("oom_kills")))

    def _lost(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        error = GardenError("lost the process keeper: exits are known only from status files now")
        futures: list[asyncio.Future[Any]] = [*self._started.values(), *self._exits.values()]
        if self._ready is not None:
            futures.append(self._ready)
        for future in futures:
            if not future.done():
                future.set_exception(error)
                future.exception()  # whoever waits sees it; nobody waiting is fine too
        self._started.clear()
        self._exits.clear()

    async def aclose(self) -> None:
        """Let the keeper go: it keeps reaping (and recording) what it started, then exits."""
        self._lost()


def _opt(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _resolve(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


class Runtime:
    def __init__(self, runc_path: str, root: Path, timeout: float) -> None:
        self._runc = runc_path
        self._root = root
        self._timeout = timeout
        self.keeper = KeeperClient(timeout)
        self._inits: dict[str, asyncio.Future[ExitRecord]] = {}  # exits of inits the keeper reaps

    async def start(self) -> None:
        await self.keeper.start()

    async def aclose(self) -> None:
        await self.keeper.aclose()
        self._inits.clear()

    def argv(self, *args: str) -> list[str]:
        return [self._runc, "--root", str(self._root), *args]

    def exists(self, handle: str) -> bool:
        return (self._root / handle).exists()

    async def run(self, handle: str, bundle: Bundle) -> int:
        """`runc run --detach` of the bundle; returns the init's host pid. Its stdio is /dev/null."""
        log_file = bundle.path / "runc.log"
        argv = self.argv("--log", str(log_file), "--log-format", "json", "run", "--detach",
                         "--bundle", str(bundle.path), "--pid-file", str(bundle.init_pid), handle)
        null_in = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        null_out = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        try:
            await self.keeper.start()
            spawn = asyncio.ensure_future(
                self.keeper.spawn(f"{handle}/init", argv, bundle.init_pid, (null_in, null_out, null_out)))
            try:
                pid, exited = await asyncio.shield(spawn)
            except asyncio.CancelledError:
                # Let runc finish: it would otherwise create the container after the undo steps looked.
                await asyncio.wait([spawn])
                if not spawn.cancelled() and spawn.exception() is None and spawn.result()[0] is not None:
                    self._track_init(handle, spawn.result()[1])
                raise
        finally:
            os.close(null_in)
            os.close(null_out)
        if pid is None:
            raise CommandFailed(f"runc run {handle}: {runc_error(log_file) or 'failed'}")
        self._track_init(handle, exited)
        return pid

    async def exec(self, handle: str, key: str, process_file: Path, pid_file: Path, log_file: Path,
                   stdio: tuple[int, int, int], status_file: Path,
                   oom_file: Path) -> tuple[int | None, asyncio.Future[ExitRecord]]:
        """`runc exec --detach --process`; (host pid, or None if it did not start; future of its exit)."""
        argv = self.argv("--log", str(log_file), "--log-format", "json", "exec", "--detach",
                         "--process", str(process_file), "--pid-file", str(pid_file), handle)
        await self.keeper.start()
        return await self.keeper.spawn(f"{handle}/{key}", argv, pid_file, stdio, status_file, oom_file)

    async def kill_all(self, handle: str, signal_name: str) -> None:
        """Signal every process of the container (runc freezes the cgroup meanwhile); no-op if it is gone."""
        await run_cmd(self.argv("kill", "--all", handle, signal_name), check=False, timeout=self._timeout)

    async def delete(self, handle: str, init_pid_file: Path) -> None:
        """Kill the init (every process dies with it) and delete the runc container. Idempotent.

        With our keeper as the init's parent the init is reaped at once and a plain `runc delete`
        follows; otherwise (a container from before a restart) `delete --force`, which polls.
        """
        init_exit = self._inits.pop(handle, None)
        if not self.exists(handle):
            return
        force = True
        if init_exit is not None:
            if not init_exit.done():
                try:
                    os.kill(int(init_pid_file.read_text()), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            try:
                await asyncio.wait_for(asyncio.shield(init_exit), 5)
                force = False
            except (asyncio.TimeoutError, GardenError):
                pass
        result = await run_cmd(self.argv("delete", *(["--force"] if force else []), handle), check=False,
                               timeout=self._timeout)
        if result.returncode != 0 and not force:
            result = await run_cmd(self.argv("delete", "--force", handle), check=False, timeout=self._timeout)
        if result.returncode != 0 and self.exists(handle):
            raise CommandFailed(f"runc delete {handle}: {result.stderr.decode(errors='replace').strip()}")

    def _track_init(self, handle: str, exited: asyncio.Future[ExitRecord]) -> None:
        exited.add_done_callback(_seen)
        self._inits[handle] = exited


def _seen(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # a lost keeper is reported where it matters, not as "never retrieved"
