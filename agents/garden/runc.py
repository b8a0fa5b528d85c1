"""RuncBackend: the ContainerBackend of a cell, driving runc directly.

create:  base rootfs (or its uid-shifted copy) ─ overlay ─ upper on a loop ext4 image (disk_mb)
         → config.json → `runc run -d` (pause-and-reap init) → `ip netns attach` + veth on the
         bridge → host ports + DNAT rules → state.json
         (the time of each stage is kept in the record: info().create_timings_ms)
run:     `runc exec --detach --process` through the keeper (runtime.py, processes.py); a later
         backend object on the same depot lists, signals and re-attaches to them
stream:  files in (tar) and out through a busybox helper run in the container (streams.py)
stop:    SIGTERM every process, SIGKILL whatever is left after a grace time (the init ignores TERM)
destroy: the create steps undone, each idempotent, so a failed destroy can be retried; the
         address's conntrack entries are deleted before it is handed out again.

Each create step pushes its inverse on an UndoStack before acting (inverses are idempotent), so
a create that fails or is cancelled midway leaves nothing behind. Names: see layout.py.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from . import cgroups, conntrack, ocispec, store, streams
from .commands import UndoStack
from .config import GardenConfig
from .errors import ContainerExists, ContainerNotFound, ContainerStopped, GardenError
from .firewall import DnatRule, EgressGrant, Firewall
from .keyring import ensure_key_quota
from .layout import Bundle, Depot, Names
from .models import (ContainerInfo, ContainerMetrics, ContainerSpec, ContainerState, ExitStatus, PortMapping,
                     ProcessIO, ProcessSpec, merge_env)
from .network import AddressPool, BridgeNetwork, PortPool
from .processes import ProcessTable
from .process import RuncProcess
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
        self._runtime = Runtime(config.runc_path, self.depot.runc_root, self._timeout)
        self._processes = ProcessTable(self._runtime, self.depot, self.names)
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
        ensure_key_quota()
        await self._bridge.setup()
        await self._runtime.start()
        async with self._firewall_lock:
            await self._firewall.setup([rule for r in records.values() for rule in _rules(r)],
                                       [_grant(r) for r in records.values()])
        self._records = records
        self._ready = True
        log.info("garden-ready", depot=str(self.depot.root), containers=len(records))

    async def aclose(self) -> None:
        """Stop watching processes and let the keeper go; containers and processes keep running.

        The keeper goes on reaping and recording exit statuses until nothing of it is left, so a
        later backend object on this depot can attach to the processes and get their status.
        """
        await self._processes.aclose()
        await self._runtime.aclose()

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
        clock = _StageClock()
        lower = await self._rootfs.lower_dir(Path(spec.rootfs), spec.privileged)
        bundle.path.mkdir(parents=True)
        undo.push("remove-bundle", lambda: remove_bundle(bundle))
        owner = 0 if spec.privileged else self._mapping.host_id
        baseline = await self._rootfs.mount(bundle, lower, spec.disk_mb, owner, undo)
        clock.lap("rootfs")

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
        clock.lap("runc")

        undo.push("detach-network", lambda: self._bridge.detach(spec.handle))
        await self._bridge.attach(spec.handle, init_pid, addr)

        async with self._alloc_lock:
            host_ports = self._ports.acquire(len(spec.ports))
        undo.push("release-ports", lambda: self._ports.release(host_ports))
        record = store.ContainerRecord(
            spec=spec, container_ip=str(addr), created_at=time.time(), init_pid=init_pid, lower_dir=str(lower),
            disk_baseline=baseline,
            ports=tuple(PortMapping(host_port=h, container_port=c) for h, c in zip(host_ports, spec.ports)))
        undo.push("remove-rules", lambda: self._remove_rules(spec.handle))
        async with self._firewall_lock:
            await self._firewall.add(_rules(record), [_grant(record)])
        clock.lap("network")
        record = record.model_copy(update={"create_timings_ms": clock.done()})
        store.save(bundle, record)
        undo.clear()
        return record

    async def run(self, handle: str, spec: ProcessSpec, io: ProcessIO | None = None) -> RuncProcess:
        record = self._record(handle)
        if record.stopped or not self._init_alive(record):
            raise ContainerStopped(f"container {handle} is stopped")
        return await self._processes.start(record, spec, io or ProcessIO())

    async def attach(self, handle: str, process_id: str, io: ProcessIO | None = None) -> RuncProcess:
        self._record(handle)
        return await self._processes.attach(handle, process_id, io)

    def process_ids(self, handle: str) -> dict[str, bool]:
        self._record(handle)
        return self._processes.ids(handle)

    async def signal(self, handle: str, process_id: str, signum: int) -> None:
        self._record(handle)
        await self._processes.signal(handle, process_id, signum)

    async def stream_in(self, handle: str, dest_dir: str, tar_path: str | Path, user: str = "root") -> None:
        spec = streams.stream_in_spec(dest_dir, tar_path, user)
        status, _out, err = await self._run_helper(handle, spec, limit=0)
        streams.check_stream_in(status, err, dest_dir)

    async def stream_out(self, handle: str, path: str, limit: int) -> bytes:
        spec = streams.stream_out_spec(path, limit)
        status, out, err = await self._run_helper(handle, spec, limit=limit + 1)
        return streams.stream_out_result(status, out, err, path, limit)

    async def _run_helper(self, handle: str, spec: ProcessSpec, limit: int) -> tuple[ExitStatus, bytes, bytes]:
        """Run a helper process to its end: (status, first `limit` bytes of stdout, stderr head)."""
        out, err = bytearray(), bytearray()
        io = ProcessIO(stdout=lambda chunk: out.extend(chunk[:max(limit - len(out), 0)]),
                       stderr=lambda chunk: err.extend(chunk[:max(4096 - len(err), 0)]))
        process = await self.run(handle, spec, io)
        try:
            status = await process.wait()
        except BaseException:
            process.signal(signal.SIGKILL)
            raise
        finally:
            assert spec.process_id is not None
            shutil.rmtree(self.depot.bundle(handle).process(spec.process_id).path, ignore_errors=True)
        return status, bytes(out), bytes(err)

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
            await self._processes.settle(handle, timeout=5)
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
                ("wait-processes", lambda: self._processes.settle(handle, timeout=5)),
                ("remove-rules", lambda: self._remove_rules(handle)),
                ("detach-network", lambda: self._bridge.detach(handle)),
                ("forget-connections", lambda: self._forget_connections(record)),
                ("unmount-rootfs", lambda: self._rootfs.unmount(bundle)),
                ("remove-cgroup", lambda: cgroups.remove(self.names.cgroup(handle))),
                ("remove-processes", lambda: asyncio.to_thread(store.remove_processes, bundle)),
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
            self._processes.forget(handle)
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

    async def _forget_connections(self, record: store.ContainerRecord | None) -> None:
        """Conntrack entries of the address, before it goes back to the pool (conntrack.py says why)."""
        if record is None:
            return
        try:
            await asyncio.to_thread(conntrack.forget, ipaddress.IPv4Network(record.container_ip))
        except OSError as exc:  # no ctnetlink: not worth a destroy that can never finish
            log.error("conntrack-forget-failed", handle=record.spec.handle, error=str(exc))

    async def _remove_rules(self, handle: str) -> None:
        async with self._firewall_lock:
            await self._firewall.remove(handle)

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
            create_timings_ms=record.create_timings_ms,
            process_ids=tuple(sorted(pid for pid, running in self._processes.ids(spec.handle).items() if running)))

    def _lock(self, handle: str) -> asyncio.Lock:
        return self._locks.setdefault(handle, asyncio.Lock())

    def _require_ready(self) -> None:
        if not self._ready:
            raise GardenError("RuncBackend.setup() has not run")


def _rules(record: store.ContainerRecord) -> list[DnatRule]:
    return [DnatRule(record.spec.handle, m.host_port, record.container_ip, m.container_port) for m in record.ports]


def _grant(record: store.ContainerRecord) -> EgressGrant:
    return EgressGrant(record.spec.handle, record.container_ip, record.spec.egress_rules)


class _StageClock:
    """Milliseconds per create stage, for ContainerInfo.create_timings_ms (bench/cell_bench.py)."""

    def __init__(self) -> None:
        self._start = self._last = time.monotonic()
        self._laps: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.monotonic()
        self._laps[stage] = round((now - self._last) * 1000, 2)
        self._last = now

    def done(self) -> dict[str, float]:
        return {**self._laps, "total": round((time.monotonic() - self._start) * 1000, 2)}


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
