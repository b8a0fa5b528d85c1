"""RuncBackend: the ContainerBackend of a cell, driving runc directly.

create:  base rootfs (or its uid-shifted copy) ─ overlay ─ upper on a loop ext4 image (disk_mb)
         → config.json → `runc run -d` (pause-and-reap init) → `ip netns attach` + veth on the
         bridge → host ports + DNAT rules → state.json
run:     `runc exec --detach --process` through the keeper (runtime.py, process.py)
stop:    SIGTERM every process, SIGKILL whatever is left after a grace time (the init ignores TERM)
destroy: the create steps undone, each idempotent, so a failed destroy can be retried.

Each create step pushes its inverse on an UndoStack before acting (inverses are idempotent), so
a create that fails or is cancelled midway leaves nothing behind. Names: see layout.py.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import structlog

from . import cgroups, ocispec, store
from .commands import UndoStack
from .config import GardenConfig
from .errors import (ContainerExists, ContainerNotFound, ContainerStopped, GardenError,
                     InvalidSpec, ProcessNotFound, ProcessStartFailed)
from .firewall import DnatRule, Firewall
from .layout import Bundle, Depot, Names
from .models import (ContainerInfo, ContainerMetrics, ContainerSpec, ContainerState, PortMapping, ProcessIO,
                     ProcessSpec, merge_env)
from .network import AddressPool, BridgeNetwork, PortPool
from .process import OutputPump, RuncProcess, Stdio, resolve_user, runc_error
from .rootfs import IdMapping, RootfsManager, remove_bundle, write_hosts
from .runtime import Runtime

log = structlog.get_logger("garden")


class RuncBackend:
    """Containers of one cell. Call `setup()` (or wrap it in BackendRunner) before anything else."""

    def __init__(self, config: GardenConfig) -> None:
        self.config = config
        self.names = Names(config.tag, config.cgroup_parent)
        self.depot = Depot(Path(config.depot_dir))
        self._timeout = config.command_timeout.total_seconds()
        self._mapping = IdMapping(config.unprivileged_host_id, config.unprivileged_id_count)
        self._rootfs = RootfsManager(self.depot.stacks, self._mapping, self._timeout)
        self._bridge = BridgeNetwork(self.names, config.network, self._timeout)
        self._firewall = Firewall(self.names, config.network, self._timeout)
        self._addresses = AddressPool(config.network)
        self._ports = PortPool(config.port_range_start, config.port_range_end)
        self._records: dict[str, store.ContainerRecord] = {}
        self._processes: dict[str, dict[str, RuncProcess]] = {}
        self._pumps: dict[str, set[OutputPump]] = {}
        self._starting: set[tuple[str, str]] = set()
        self._runtime = Runtime(config.runc_path, self.depot.runc_root, self._timeout)
        self._locks: dict[str, asyncio.Lock] = {}
        self._alloc_lock = asyncio.Lock()
        self._firewall_lock = asyncio.Lock()
        self._ready = False

    # -- lifecycle of the backend itself ---------------------------------------------------

    async def setup(self) -> None:
        """Prepare the host (idempotent): depot, bridge, iptables chains; reload container records."""
        for d in (self.depot.root, self.depot.runc_root, self.depot.stacks, self.depot.containers):
            d.mkdir(parents=True, exist_ok=True)
        self.depot.config_file.write_text(self.config.model_dump_json(indent=1))
        records = store.load_all(self.depot)
        for record in records.values():
            self._addresses.claim(ipaddress.IPv4Address(record.container_ip))
            for mapping in record.ports:
                self._ports.claim(mapping.host_port)
        await self._bridge.setup()
        await self._runtime.start()
        async with self._firewall_lock:
            await self._firewall.setup([rule for r in records.values() for rule in _rules(r)])
        self._records = records
        self._ready = True
        log.info("garden-ready", depot=str(self.depot.root), containers=len(records))

    async def aclose(self) -> None:
        """Stop the keeper and output pumps; containers and their processes keep running."""
        for pumps in list(self._pumps.values()):
            for pump in list(pumps):
                pump.close()
        await self._runtime.aclose()
        for procs in list(self._processes.values()):
            for proc in list(procs.values()):
                await proc.settle()
        self._processes.clear()

    # -- ContainerBackend ------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        self._require_ready()
        async with self._lock(spec.handle):
            bundle = self.depot.bundle(spec.handle)
            if spec.handle in self._records or bundle.path.exists():
                raise ContainerExists(f"container {spec.handle} already exists")
            undo = UndoStack()
            started = time.monotonic()
            try:
                record = await self._create(spec, bundle, undo)
            except BaseException as exc:
                failed = await asyncio.shield(undo.unwind(handle=spec.handle))
                log.warning("container-create-failed", handle=spec.handle, error=str(exc) or type(exc).__name__,
                            undo_failures=failed)
                raise
            self._records[spec.handle] = record
            log.info("container-created", handle=spec.handle, ip=record.container_ip,
                     ms=round((time.monotonic() - started) * 1000, 1))
            return self._info(record, running=True)

    async def _create(self, spec: ContainerSpec, bundle: Bundle, undo: UndoStack) -> store.ContainerRecord:
        lower = await self._rootfs.lower_dir(Path(spec.rootfs), spec.privileged)
        bundle.path.mkdir(parents=True)
        undo.push("remove-bundle", lambda: remove_bundle(bundle))
        owner = 0 if spec.privileged else self._mapping.host_id
        baseline = await self._rootfs.mount(bundle, lower, spec.disk_mb, owner, undo)

        async with self._alloc_lock:
            addr = self._addresses.acquire()
        undo.push("release-address", lambda: self._addresses.release(addr))
        write_hosts(bundle.rootfs, str(addr), spec.handle[:63], owner)
        config = ocispec.container_config(
            rootfs=str(bundle.rootfs), hostname=spec.handle[:63], env=merge_env((ocispec.DEFAULT_PATH,), spec.env),
            cgroups_path=self.names.cgroup(spec.handle), init_binary=self.config.init_binary,
            memory_mb=spec.memory_mb, cpu_weight=spec.cpu_weight, max_pids=spec.max_pids,
            mapping=None if spec.privileged else self._mapping)
        bundle.config.write_text(_json(config))

        undo.push("remove-cgroup", lambda: cgroups.remove(self.names.cgroup(spec.handle)))
        undo.push("runc-delete", lambda: self._runtime.delete(spec.handle, bundle.init_pid))
        init_pid = await self._runtime.run(spec.handle, bundle)

        undo.push("detach-network", lambda: self._bridge.detach(spec.handle))
        await self._bridge.attach(spec.handle, init_pid, addr)

        async with self._alloc_lock:
            host_ports = self._ports.acquire(len(spec.ports))
        undo.push("release-ports", lambda: self._ports.release(host_ports))
        record = store.ContainerRecord(
            spec=spec, container_ip=str(addr), created_at=time.time(), init_pid=init_pid, lower_dir=str(lower),
            disk_baseline=baseline,
            ports=tuple(PortMapping(host_port=h, container_port=c) for h, c in zip(host_ports, spec.ports)))
        undo.push("remove-dnat", lambda: self._remove_dnat(spec.handle))
        async with self._firewall_lock:
            await self._firewall.add(_rules(record))
        store.save(bundle, record)
        undo.clear()
        return record

    async def run(self, handle: str, spec: ProcessSpec, io: ProcessIO | None = None) -> RuncProcess:
        record = self._record(handle)
        if record.stopped or not self._init_alive(record):
            raise ContainerStopped(f"container {handle} is stopped")
        bundle = self.depot.bundle(handle)
        procs = self._processes.setdefault(handle, {})
        process_id = spec.process_id or uuid.uuid4().hex[:16]
        if process_id in procs or (handle, process_id) in self._starting:
            raise InvalidSpec(f"process {process_id} is already running in {handle}")
        try:
            uid, gid = resolve_user(spec.user, bundle.rootfs)
        except LookupError as exc:
            raise InvalidSpec(str(exc)) from exc
        self._starting.add((handle, process_id))
        try:
            process = await self._start_process(record, spec, process_id, uid, gid, io or ProcessIO())
        finally:
            self._starting.discard((handle, process_id))
        procs[process_id] = process
        return process

    async def _start_process(self, record: store.ContainerRecord, spec: ProcessSpec, process_id: str,
                             uid: int, gid: int, io: ProcessIO) -> RuncProcess:
        handle = record.spec.handle
        bundle = self.depot.bundle(handle)
        bundle.processes.mkdir(exist_ok=True)
        files = [bundle.processes / f"{process_id}.{ext}" for ext in ("json", "pid", "log")]
        process_file, pid_file, log_file = files
        env = merge_env((ocispec.DEFAULT_PATH,), record.spec.env, spec.env)
        process_file.write_text(_json(ocispec.process_config([spec.path, *spec.args], env, spec.dir, uid, gid)))
        stdio = Stdio.open(io, spec.stdout_path, spec.stderr_path, f"{handle}/{process_id}", self._pump_closed(handle))
        self._pumps.setdefault(handle, set()).update(stdio.pumps)
        try:
            oom_before = cgroups.oom_kills(self.names.cgroup(handle))
            host_pid, exited = await self._runtime.exec(handle, process_id, process_file, pid_file, log_file, stdio.fds)
        except BaseException:
            stdio.close_pumps()
            raise
        finally:
            stdio.close_child_ends()
        if host_pid is None:
            stdio.close_pumps(drain=True)  # runc's complaint also went to the process's stderr
            reason = runc_error(log_file) or "runc exec failed"
            _unlink(files)
            raise ProcessStartFailed(f"{spec.path} in {handle}: {reason}")
        process = RuncProcess(process_id, handle, host_pid, exited, stdio.pumps, self.names.cgroup(handle), oom_before)
        process.on_exit(lambda: self._forget(handle, process_id, files))
        return process

    async def signal(self, handle: str, process_id: str, signum: int) -> None:
        self._record(handle)
        process = self._processes.get(handle, {}).get(process_id)
        if process is None:
            raise ProcessNotFound(f"no running process {process_id} in {handle}")
        process.signal(signum)

    async def stop(self, handle: str, kill_after_s: float = 10) -> None:
        async with self._lock(handle):
            record = self._record(handle)
            if record.stopped:
                return
            cgroup = self.names.cgroup(handle)
            await self._runtime.kill_all(handle, "TERM")
            deadline = time.monotonic() + kill_after_s
            while self._user_processes(cgroup) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await self._runtime.kill_all(handle, "KILL")
            for _ in range(200):
                if not cgroups.procs(cgroup):
                    break
                await asyncio.sleep(0.01)
            await self._wait_processes(handle, timeout=5)
            record = record.model_copy(update={"stopped": True})
            store.save(self.depot.bundle(handle), record)
            self._records[handle] = record
            log.info("container-stopped", handle=handle)

    async def destroy(self, handle: str) -> None:
        async with self._lock(handle):
            bundle = self.depot.bundle(handle)
            record = self._records.get(handle)
            if record is None and not bundle.path.exists():
                raise ContainerNotFound(f"container {handle} not found")
            started = time.monotonic()
            failures: list[str] = []
            steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                ("runc-delete", lambda: self._runtime.delete(handle, bundle.init_pid)),
                ("wait-processes", lambda: self._wait_processes(handle, timeout=5)),
                ("remove-dnat", lambda: self._remove_dnat(handle)),
                ("detach-network", lambda: self._bridge.detach(handle)),
                ("unmount-rootfs", lambda: self._rootfs.unmount(bundle)),
                ("remove-cgroup", lambda: cgroups.remove(self.names.cgroup(handle))),
                ("remove-bundle", lambda: remove_bundle(bundle)),
            ]
            for name, step in steps:
                try:
                    await step()
                except Exception as exc:
                    failures.append(f"{name}: {exc}")
                    log.error("destroy-step-failed", handle=handle, step=name, error=str(exc))
            if failures:
                raise GardenError(f"destroy of {handle} incomplete (retry destroy or cleanup_all): {'; '.join(failures)}")
            self._records.pop(handle, None)
            self._processes.pop(handle, None)
            self._pumps.pop(handle, None)
            self._locks.pop(handle, None)
            if record is not None:
                self._addresses.release(ipaddress.IPv4Address(record.container_ip))
                self._ports.release([m.host_port for m in record.ports])
            log.info("container-destroyed", handle=handle, ms=round((time.monotonic() - started) * 1000, 1))

    async def info(self, handle: str) -> ContainerInfo:
        record = self._record(handle)
        return self._info(record, running=not record.stopped and self._init_alive(record))

    async def metrics(self, handle: str) -> ContainerMetrics:
        record = self._record(handle)
        cgroup = self.names.cgroup(handle)
        memory, limit = cgroups.memory_usage(cgroup)
        disk = await asyncio.to_thread(self._rootfs.disk_usage, self.depot.bundle(handle), record.disk_baseline)
        return ContainerMetrics(memory_bytes=memory, memory_limit_bytes=limit, cpu_ns=cgroups.cpu_usage_ns(cgroup),
                                disk_bytes=disk, disk_limit_bytes=record.spec.disk_mb * 1024 * 1024,
                                pids=cgroups.pids_current(cgroup))

    async def list(self) -> list[str]:
        return sorted(self._records)

    # -- helpers ---------------------------------------------------------------------------

    async def _remove_dnat(self, handle: str) -> None:
        async with self._firewall_lock:
            await self._firewall.remove(handle)

    async def _wait_processes(self, handle: str, timeout: float) -> None:
        """Let exit statuses of a dead container's processes arrive; then drop its output pumps."""
        procs = list(self._processes.get(handle, {}).values())
        if procs:
            await asyncio.wait([asyncio.ensure_future(p.settle()) for p in procs], timeout=timeout)
        for pump in list(self._pumps.get(handle, ())):
            pump.close()

    def _user_processes(self, cgroup: str) -> set[int]:
        """Live processes of the container that are not its init or the init's pause child.

        Both run the bind-mounted init binary (and ignore SIGTERM); anything else is the user's.
        """
        init = os.stat(self.config.init_binary)
        found = set()
        for pid in cgroups.procs(cgroup):
            try:
                exe = os.stat(f"/proc/{pid}/exe")
            except OSError:  # gone, or a zombie
                continue
            if (exe.st_dev, exe.st_ino) != (init.st_dev, init.st_ino):
                found.add(pid)
        return found

    def _pump_closed(self, handle: str) -> Callable[[OutputPump], None]:
        return lambda pump: self._pumps.get(handle, set()).discard(pump)

    def _forget(self, handle: str, process_id: str, files: Sequence[Path]) -> None:
        self._processes.get(handle, {}).pop(process_id, None)
        _unlink(files)

    def _record(self, handle: str) -> store.ContainerRecord:
        self._require_ready()
        record = self._records.get(handle)
        if record is None:
            raise ContainerNotFound(f"container {handle} not found")
        return record

    def _init_alive(self, record: store.ContainerRecord) -> bool:
        """Init still running (not a zombie) and still in this container's cgroup (no pid reuse)."""
        try:
            stat = Path(f"/proc/{record.init_pid}/stat").read_text()
            cgroup = Path(f"/proc/{record.init_pid}/cgroup").read_text()
        except OSError:
            return False
        state = stat.rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X") and f":{self.names.cgroup(record.spec.handle)}\n" in cgroup

    def _info(self, record: store.ContainerRecord, running: bool) -> ContainerInfo:
        spec = record.spec
        oom = cgroups.oom_kills(self.names.cgroup(spec.handle)) > 0
        return ContainerInfo(
            handle=spec.handle, state=ContainerState.ACTIVE if running else ContainerState.STOPPED,
            container_ip=record.container_ip, bridge_ip=str(self.config.bridge_ip), ports=record.ports,
            privileged=spec.privileged, memory_mb=spec.memory_mb, disk_mb=spec.disk_mb, max_pids=spec.max_pids,
            cpu_shares=ocispec.cpu_shares(spec.cpu_weight), created_at=record.created_at,
            init_pid=record.init_pid if running else 0, bundle_path=str(self.depot.bundle(spec.handle).path),
            events=("out of memory",) if oom else (), properties=spec.properties,
            process_ids=tuple(sorted(self._processes.get(spec.handle, {}))))

    def _lock(self, handle: str) -> asyncio.Lock:
        return self._locks.setdefault(handle, asyncio.Lock())

    def _require_ready(self) -> None:
        if not self._ready:
            raise GardenError("RuncBackend.setup() has not run")


def _rules(record: store.ContainerRecord) -> list[DnatRule]:
    return [DnatRule(record.spec.handle, m.host_port, record.container_ip, m.container_port) for m in record.ports]


def _unlink(files: Sequence[Path]) -> None:
    for f in files:
        try:
            f.unlink()
        except FileNotFoundError:
            pass


def _json(obj: object) -> str:
    return json.dumps(obj, indent=1)


class BackendRunner:
    """The backend as a supervisor member (`run(ready)`): set up, signal ready, serve until cancelled.

    A separate object because the backend's own `run` starts processes. Containers outlive it.
    """

    def __init__(self, backend: RuncBackend) -> None:
        self.backend = backend

    async def run(self, ready: asyncio.Event) -> None:
        await self.backend.setup()
        ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            await self.backend.aclose()
