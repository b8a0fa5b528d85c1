"""executor: a cell's containers from reservation to deletion (Diego's executor), over agents/garden.

    executor = Executor(ExecutorConfig(state_dir=...), backend, images, SystemClock())
    await executor.run(ready)               # runner: recover, then reap and collect logs
    await executor.allocate([AllocationRequest(guid="web-0", memory_mb=128, tags={"lifecycle": "lrp"})])
    await executor.run_container("web-0", RunRequest(rootfs="preloaded:busybox", action=...))
    async for event in executor.subscribe(): ...

See README.md for the design, api.py for the contract with the rep.
"""
from .api import ContainerNotFound, ExecutorAPI, ExecutorError, InvalidStateTransition
from .config import ExecutorConfig
from .executor import Executor
from .images import ImageResolver, ResolvedImage
from .metrics import ExecutorMetrics

__all__ = ["ContainerNotFound", "Executor", "ExecutorAPI", "ExecutorConfig", "ExecutorError", "ExecutorMetrics",
           "ImageResolver", "InvalidStateTransition", "ResolvedImage"]
