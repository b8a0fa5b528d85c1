"""An in-memory container backend and image resolver for executor unit tests.

Processes are scripted by their path (arguments after it):
    exit N        exits with N at once            sleep S     exits 0 after S seconds
    forever       runs until SIGTERM (143)        stubborn    ignores SIGTERM, dies on SIGKILL (137)
    oom           killed by the memory cgroup     write TEXT  writes TEXT to stdout, exits 0
    missing       cannot start (ProcessStartFailed)
"""
from __future__ import annotations

import asyncio
import itertools
import signal
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from agents.garden.errors import ContainerExists, ContainerNotFound, GardenError, ProcessNotFound, ProcessStartFailed
from agents.garden.models import (ContainerInfo, ContainerMetrics, ContainerSpec, ContainerState, ExitStatus,
                                  PortMapping, ProcessIO, ProcessSpec)


class FileMissing(GardenError):
    type = "FileMissing"


class FileTooLarge(GardenError):
    type = "FileTooLarge"


class FakeProcess:
    _pids = itertools.count(1000)

    def __init__(self, spec: ProcessSpec, io: ProcessIO | None) -> None:
        self.id = spec.process_id or f"p{next(self._pids)}"
        self.pid = next(self._pids)
        self.spec = spec
        self.signals: list[int] = []
        self._exit: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._io = io
        kind, *args = (spec.path, *spec.args)
        self.kind = kind
        if kind == "exit":
            self._finish(int(args[0]))
        elif kind == "sleep":
            self._timer = asyncio.get_running_loop().call_later(float(args[0]), self._finish, 0)
        elif kind == "oom":
            self._finish(137, signal.SIGKILL, oom=True)
        elif kind == "write":
            self.write(args[0].encode() + b"\n")
            self._finish(0)

    def write(self, data: bytes) -> None:
        if self._io is not None and self._io.stdout is not None:
            self._io.stdout(data)
        elif self.spec.stdout_path:
            with open(self.spec.stdout_path, "ab") as f:
                f.write(data)

    def _finish(self, code: int, sig: int | None = None, oom: bool = False) -> None:
        if not self._exit.done():
            self._exit.set_result(ExitStatus(code=code, signal=sig, oom_killed=oom,
                                             reason="out of memory" if oom else ""))

    @property
    def exited(self) -> bool:
        return self._exit.done()

    async def wait(self) -> ExitStatus:
        return await asyncio.shield(self._exit)

    def signal(self, signum: int) -> None:
        self.signals.append(signum)
        if signum == signal.SIGKILL or (signum == signal.SIGTERM and self.kind != "stubborn"):
            if self._timer:
                self._timer.cancel()
            self._finish(128 + signum, signum)


@dataclass
class FakeContainer:
    spec: ContainerSpec
    ip: str
    ports: tuple[PortMapping, ...]
    processes: dict[str, FakeProcess] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    streamed_in: list[tuple[str, list[str], str]] = field(default_factory=list)
    active: bool = True


class FakeBackend:
    def __init__(self) -> None:
        self.containers: dict[str, FakeContainer] = {}
        self.fail_create: Exception | None = None
        self.create_delay = 0.0
        self.destroyed: list[str] = []
        self._ips = itertools.count(2)
        self._ports = itertools.count(61000)

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        if self.create_delay:
            await asyncio.sleep(self.create_delay)
        if self.fail_create is not None:
            raise self.fail_create
        if spec.handle in self.containers:
            raise ContainerExists(spec.handle)
        ports = tuple(PortMapping(host_port=next(self._ports), container_port=p) for p in spec.ports)
        self.containers[spec.handle] = FakeContainer(spec, f"10.0.0.{next(self._ips)}", ports)
        return self._info(spec.handle)

    async def run(self, handle: str, spec: ProcessSpec, io: ProcessIO | None = None) -> FakeProcess:
        container = self._get(handle)
        if spec.path == "missing":
            raise ProcessStartFailed(f"{spec.path}: no such file or directory")
        process = FakeProcess(spec, io)
        container.processes[process.id] = process
        return process

    async def attach(self, handle: str, process_id: str, io: ProcessIO | None = None) -> FakeProcess:
        try:
            return self._get(handle).processes[process_id]
        except KeyError:
            raise ProcessNotFound(process_id) from None

    async def signal(self, handle: str, process_id: str, signum: int) -> None:
        (await self.attach(handle, process_id)).signal(signum)

    async def stop(self, handle: str, kill_after_s: float = 10) -> None:
        self._get(handle).active = False

    async def destroy(self, handle: str) -> None:
        container = self._get(handle)
        for process in container.processes.values():
            process.signal(signal.SIGKILL)
        del self.containers[handle]
        self.destroyed.append(handle)

    async def info(self, handle: str) -> ContainerInfo:
        return self._info(handle)

    async def metrics(self, handle: str) -> ContainerMetrics:
        self._get(handle)
        return ContainerMetrics(memory_bytes=1, memory_limit_bytes=0, cpu_ns=0, disk_bytes=0, disk_limit_bytes=0, pids=1)

    async def list(self) -> list[str]:
        return sorted(self.containers)

    async def stream_in(self, handle: str, dest_dir: str, tar_path: str, user: str = "root") -> None:
        with tarfile.open(tar_path) as tf:
            names = sorted(tf.getnames())
        self._get(handle).streamed_in.append((dest_dir, names, user))

    async def stream_out(self, handle: str, path: str, limit: int) -> bytes:
        files = self._get(handle).files
        if path not in files:
            raise FileMissing(f"{path} not found")
        if len(files[path]) > limit:
            raise FileTooLarge(f"{path} is larger than {limit} bytes")
        return files[path]

    def _get(self, handle: str) -> FakeContainer:
        try:
            return self.containers[handle]
        except KeyError:
            raise ContainerNotFound(handle) from None

    def _info(self, handle: str) -> ContainerInfo:
        c = self._get(handle)
        return ContainerInfo(
            handle=handle, state=ContainerState.ACTIVE if c.active else ContainerState.STOPPED, container_ip=c.ip,
            bridge_ip="10.0.0.1", ports=c.ports, privileged=c.spec.privileged, memory_mb=c.spec.memory_mb,
            disk_mb=c.spec.disk_mb, max_pids=c.spec.max_pids, cpu_shares=1024, created_at=time.time(), init_pid=1,
            bundle_path="/nonexistent", properties=c.spec.properties,
            process_ids=tuple(pid for pid, p in c.processes.items() if not p.exited))

    def process(self, handle: str, kind: str) -> FakeProcess:
        """The last process of `kind` started in `handle`."""
        return [p for p in self._get(handle).processes.values() if p.kind == kind][-1]


@dataclass(frozen=True)
class FakeImage:
    path: str = "/stacks/busybox"
    env: tuple[str, ...] = ("IMAGE=1",)
    working_dir: str = "/home/app"
    user: str = "root"


class FakeImages:
    def __init__(self) -> None:
        self.fail: Exception | None = None

    async def resolve(self, rootfs: str, username: str = "", password: str = "") -> FakeImage:
        if self.fail is not None:
            raise self.fail
        return FakeImage()

    def offers(self, rootfs: str) -> bool:
        return rootfs.startswith("preloaded:")


def tar_of(tmp: Path, files: dict[str, bytes]) -> Path:
    import io

    path = tmp / "artifact.tar"
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path
