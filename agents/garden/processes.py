"""The processes of one backend's containers: start, re-attach, list, signal, stop watching.

Each process has a directory `<bundle>/processes/<id>/` (layout.ProcessDir) that outlives the
backend's Python process: meta.json says how to find it again (pid, start time, its keeper,
output files), exit_status is written by the keeper when it reaps it. So a backend object that
starts on a depot where an earlier one ran (after a crash or an upgrade) lists those processes,
signals them and re-attaches to them with their real exit status.

Only running processes are held in memory. Directories of exited ones are kept so that their
status can still be read, `KEEP_EXITED` per container (the newest), and go with the container.
A process id can be reused once its process has exited.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import Callable

from . import cgroups, ocispec, store
from .errors import InvalidSpec, ProcessNotFound, ProcessStartFailed
from .layout import Depot, Names, ProcessDir
from .models import HELPER_PREFIX, ProcessIO, ProcessSpec, merge_env, valid_process_id
from .process import FileFollower, OutputPump, PidHandle, RuncProcess, Stdio, alive, resolve_user, runc_error
from .runtime import Runtime
from .store import ContainerRecord, ProcessRecord

KEEP_EXITED = 100


class ProcessTable:
    def __init__(self, runtime: Runtime, depot: Depot, names: Names) -> None:
        self._runtime = runtime
        self._depot = depot
        self._names = names
        self._procs: dict[str, dict[str, RuncProcess]] = {}
        self._pumps: dict[str, set[OutputPump]] = {}
        self._starting: set[tuple[str, str]] = set()

    async def start(self, record: ContainerRecord, spec: ProcessSpec, io: ProcessIO) -> RuncProcess:
        handle = record.spec.handle
        bundle = self._depot.bundle(handle)
        process_id = spec.process_id or uuid.uuid4().hex[:16]
        key = (handle, process_id)
        if key in self._starting or self._running(handle, process_id):
            raise InvalidSpec(f"process {process_id} is already running in {handle}")
        try:
            uid, gid = resolve_user(spec.user, bundle.rootfs)
        except LookupError as exc:
            raise InvalidSpec(str(exc)) from exc
        self._starting.add(key)
        try:
            process = await self._start(record, spec, bundle.process(process_id), uid, gid, io)
        finally:
            self._starting.discard(key)
        self._track(handle, process)
        store.prune_exited(bundle, KEEP_EXITED, exclude=set(self._procs.get(handle, {})))
        return process

    async def _start(self, record: ContainerRecord, spec: ProcessSpec, pdir: ProcessDir, uid: int, gid: int,
                     io: ProcessIO) -> RuncProcess:
        handle, cgroup = record.spec.handle, self._names.cgroup(record.spec.handle)
        await self._runtime.start()
        shutil.rmtree(pdir.path, ignore_errors=True)  # an exited process of the same id
        pdir.path.mkdir(parents=True)
        env = merge_env((ocispec.DEFAULT_PATH,), record.spec.env, spec.env)
        pdir.spec.write_text(json.dumps(ocispec.process_config([spec.path, *spec.args], env, spec.dir, uid, gid)))
        keeper = self._runtime.keeper
        meta = ProcessRecord(process_id=pdir.id, oom_kills_before=cgroups.oom_kills(cgroup),
                             stdout_path=spec.stdout_path, stderr_path=spec.stderr_path, keeper_pid=keeper.pid,
                             keeper_start_ticks=keeper.start_ticks, created_at=time.time())
        store.save_process(pdir, meta)
        stdio = self._stdio(handle, pdir, spec, io)
        try:
            host_pid, exited = await self._runtime.exec(handle, pdir.id, pdir.spec, pdir.pid, pdir.log, stdio.fds,
                                                        pdir.exit_status, cgroups.oom_control(cgroup))
        except BaseException:
            stdio.close_pumps()  # the directory stays: runc may still start it, then it is listed
            raise
        finally:
            stdio.close_child_ends()
        if host_pid is None:
            stdio.close_pumps(drain=True)  # runc's complaint also went to the process's stderr
            reason = runc_error(pdir.log) or "runc exec failed"
            shutil.rmtree(pdir.path, ignore_errors=True)
            raise ProcessStartFailed(f"{spec.path} in {handle}: {reason}")
        pid = PidHandle.open(host_pid)
        meta = meta.model_copy(update={"pid": host_pid, "start_ticks": pid.ticks if pid else None})
        store.save_process(pdir, meta)
        return RuncProcess(pdir, handle, meta, exited, pid, cgroup, pumps=stdio.pumps)

    def _stdio(self, handle: str, pdir: ProcessDir, spec: ProcessSpec, io: ProcessIO) -> Stdio:
        try:
            stdio = Stdio.open(io, spec.stdout_path, spec.stderr_path, f"{handle}/{pdir.id}",
                               self._pump_closed(handle), spec.stdin_path)
        except OSError as exc:
            shutil.rmtree(pdir.path, ignore_errors=True)
            raise InvalidSpec(f"process {pdir.id} in {handle}: cannot open its stdio: {exc}") from exc
        self._pumps.setdefault(handle, set()).update(stdio.pumps)
        return stdio

    async def attach(self, handle: str, process_id: str, io: ProcessIO | None) -> RuncProcess:
        """The process, whether this object or an earlier backend object started it.

        For a process of an earlier backend object, `io` callbacks get what is appended to its
        stdout_path/stderr_path files from now on; its other output cannot be recovered. For one
        this object started, the output keeps going where `run` sent it and `io` is not used.
        """
        known = self._procs.get(handle, {}).get(process_id)
        if known is not None:
            return known
        pdir = self._depot.bundle(handle).process(process_id)
        record = store.load_process(pdir) if valid_process_id(process_id) else None
        if record is None or record.pid == 0 or (handle, process_id) in self._starting:
            raise ProcessNotFound(f"no process {process_id} in {handle}")
        pid = None if pdir.exit_status.exists() else PidHandle.open(record.pid, record.start_ticks)
        io = io or ProcessIO()
        followers = [FileFollower(path, callback) for path, callback in
                     ((record.stdout_path, io.stdout), (record.stderr_path, io.stderr)) if path and callback]
        process = RuncProcess(pdir, handle, record, None, pid, self._names.cgroup(handle), followers=followers)
        self._track(handle, process)
        return process

    def ids(self, handle: str) -> dict[str, bool]:
        """Every known process id of the container -> whether it is still running (helpers excepted)."""
        found: dict[str, bool] = {}
        for pdir in store.process_dirs(self._depot.bundle(handle)):
            if (handle, pdir.id) in self._starting or pdir.id.startswith(HELPER_PREFIX):
                continue
            process = self._procs.get(handle, {}).get(pdir.id)
            if process is not None:
                found[pdir.id] = not process.exited and not pdir.exit_status.exists()
            elif (record := store.load_process(pdir)) is not None and record.pid:
                found[pdir.id] = _running(pdir, record)
        return found

    async def signal(self, handle: str, process_id: str, signum: int) -> None:
        process = self._procs.get(handle, {}).get(process_id)
        if process is None and self._running(handle, process_id):
            process = await self.attach(handle, process_id, None)
        if process is None or process.exited:
            raise ProcessNotFound(f"no running process {process_id} in {handle}")
        process.signal(signum)

    async def settle(self, handle: str, timeout: float) -> None:
        """Let exit statuses of a dead container's processes arrive; then drop its output pumps."""
        settling = [asyncio.ensure_future(p.settle()) for p in self._procs.get(handle, {}).values()]
        if settling:
            _done, pending = await asyncio.wait(settling, timeout=timeout)
            for task in pending:
                task.cancel()  # settle() shields the waiter: only the waiting stops
            if pending:
                await asyncio.wait(pending)
        for pump in list(self._pumps.get(handle, ())):
            pump.close()

    def forget(self, handle: str) -> None:
        self._procs.pop(handle, None)
        self._pumps.pop(handle, None)

    async def aclose(self) -> None:
        """Stop watching: close output pumps and waiters. The processes keep running."""
        for pumps in list(self._pumps.values()):
            for pump in list(pumps):
                pump.close()
        for procs in list(self._procs.values()):
            for process in list(procs.values()):
                await process.aclose()
        self._procs.clear()
        self._pumps.clear()

    def _running(self, handle: str, process_id: str) -> bool:
        process = self._procs.get(handle, {}).get(process_id)
        if process is not None:
            return not process.exited
        if not valid_process_id(process_id):
            return False
        pdir = self._depot.bundle(handle).process(process_id)
        record = store.load_process(pdir)
        return record is not None and record.pid != 0 and _running(pdir, record)

    def _track(self, handle: str, process: RuncProcess) -> None:
        procs = self._procs.setdefault(handle, {})
        procs[process.id] = process

        def forget() -> None:
            if procs.get(process.id) is process:
                del procs[process.id]
        process.on_exit(forget)

    def _pump_closed(self, handle: str) -> Callable[[OutputPump], None]:
        return lambda pump: self._pumps.get(handle, set()).discard(pump)


def _running(pdir: ProcessDir, record: ProcessRecord) -> bool:
    return not pdir.exit_status.exists() and alive(record.pid, record.start_ticks)
