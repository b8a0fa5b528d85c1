"""runc's command line for one depot, with the keeper (keeper.py) as parent of inits and processes.

Every call passes `--root <depot>/runc`, so only this backend's containers are visible. `runc run`
and `runc exec` are started by the keeper (`--detach`), which then reaps the init or process it
inherits: a dead init is reaped at once, so deleting a container needs no `--force` polling
(runc treats an unreaped zombie init as running), and exec'd processes report their own exit.
"""
from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from .commands import run_cmd
from .errors import CommandFailed, GardenError
from .layout import Bundle
from .process import ProcessKeeper, runc_error


class Runtime:
    def __init__(self, runc_path: str, root: Path, timeout: float) -> None:
        self._runc = runc_path
        self._root = root
        self._timeout = timeout
        self._keeper = ProcessKeeper(timeout)
        self._inits: dict[str, asyncio.Future[int]] = {}  # wait statuses of inits the keeper reaps

    async def start(self) -> None:
        await self._keeper.start()

    async def aclose(self) -> None:
        await self._keeper.aclose()
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
            await self._keeper.start()
            spawn = asyncio.ensure_future(
                self._keeper.spawn(f"{handle}/init", argv, bundle.init_pid, (null_in, null_out, null_out)))
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
                   stdio: tuple[int, int, int]) -> tuple[int | None, asyncio.Future[int]]:
        """`runc exec --detach --process`; (host pid, or None if it did not start; future of its wait status)."""
        argv = self.argv("--log", str(log_file), "--log-format", "json", "exec", "--detach",
                         "--process", str(process_file), "--pid-file", str(pid_file), handle)
        await self._keeper.start()
        return await self._keeper.spawn(f"{handle}/{key}", argv, pid_file, stdio)

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

    def _track_init(self, handle: str, exited: asyncio.Future[int]) -> None:
        exited.add_done_callback(_seen)
        self._inits[handle] = exited


def _seen(future: asyncio.Future[int]) -> None:
    if not future.cancelled():
        future.exception()  # a lost keeper is reported where it matters, not as "never retrieved"
