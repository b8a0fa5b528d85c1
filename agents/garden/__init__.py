"""garden: the container backend of a cell (Garden's role in Diego), built on runc.

    from agents.garden import GardenConfig, RuncBackend, ContainerSpec, ProcessSpec
    backend = RuncBackend(GardenConfig(depot_dir="/var/lib/pydiego/garden"))
    await backend.setup()
    info = await backend.create(ContainerSpec(handle="web-0", rootfs="/stacks/busybox", ports=(8080,)))
    proc = await backend.run("web-0", ProcessSpec(path="/bin/httpd", args=("-f", "-p", "8080")))
    ...; await backend.stop("web-0"); await backend.destroy("web-0")

See README.md for the design and backend.py for the Protocols the executor depends on.
"""
from .backend import ContainerBackend, Process
from .cleanup import cleanup_all
from .config import GardenConfig
from .errors import (CommandFailed, ContainerExists, ContainerNotFound, ContainerStopped, FileMissing,
                     FileTooLarge, GardenError, InsufficientResources, InvalidSpec, ProcessNotFound,
                     ProcessStartFailed, StreamFailed)
from .models import (ContainerInfo, ContainerMetrics, ContainerSpec, ContainerState, EgressRule, ExitStatus,
                     PortMapping, ProcessIO, ProcessSpec)
from .runc import BackendRunner, RuncBackend
from .stacks import build_busybox_stack

__all__ = [
    "BackendRunner", "CommandFailed", "ContainerBackend", "ContainerExists", "ContainerInfo", "ContainerMetrics",
    "ContainerNotFound", "ContainerSpec", "ContainerState", "ContainerStopped", "EgressRule", "ExitStatus",
    "FileMissing", "FileTooLarge", "GardenConfig", "GardenError", "StreamFailed", "InsufficientResources", "InvalidSpec", "PortMapping", "Process", "ProcessIO",
    "ProcessNotFound", "ProcessSpec", "ProcessStartFailed", "RuncBackend", "build_busybox_stack", "cleanup_all",
]
