"""A rep stand-in in its own process, for the restart test: starts a backend and an executor,
runs one httpd LRP with a TCP check, prints `CONTAINER <json>` once RUNNING, then serves
until killed.

    python -m tests.integration.executor.cell_process '<GardenConfig JSON>' STATE_DIR STACK_DIR GUID
"""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from agents.executor.config import ExecutorConfig
from agents.executor.executor import Executor
from agents.executor.models import ContainerState
from agents.garden import GardenConfig, RuncBackend
from control.kit.clock import SystemClock

from .conftest import FAST
from .helpers import StackResolver, lrp_request, reserve, wait_state
from .test_lrp import HTTPD


async def main(garden_json: str, state_dir: str, stack: str, guid: str) -> None:
    backend = RuncBackend(GardenConfig.model_validate_json(garden_json))
    await backend.setup()
    executor = Executor(ExecutorConfig(state_dir=state_dir, **FAST), backend, StackResolver({"busybox": Path(stack)}),
                        SystemClock())
    ready = asyncio.Event()
    runner = asyncio.create_task(executor.run(ready))
    await ready.wait()
    await reserve(executor, guid)
    await executor.run_container(guid, lrp_request(HTTPD, ports=[8080], start_timeout_ms=10000,
                                         check_definition={"checks": [{"tcp_check": {"port": 8080}}]}))
    container = await wait_state(executor, guid, ContainerState.RUNNING)
    print("CONTAINER", container.model_dump_json(), flush=True)  # structlog writes to stdout too
    await runner


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
