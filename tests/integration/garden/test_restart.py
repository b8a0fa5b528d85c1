"""Restart safety: a backend in another Python process starts a container and processes and is
SIGKILLed; a fresh backend on the same depot lists, re-attaches to and destroys them."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agents.garden import ContainerState, GardenConfig, ProcessNotFound, RuncBackend, cleanup_all

from .conftest import MakeConfig
from .helpers import Output, assert_no_traces, sh

REPO = Path(__file__).resolve().parents[3]

# Runs a backend, makes container "phoenix" (32 MiB) and starts the processes given as JSON
# [[process_id, script, stdout_path|null, piped], ...]; prints the keeper's and processes' pids.
CHILD = """
import asyncio, json, sys
from agents.garden import ContainerSpec, GardenConfig, ProcessIO, ProcessSpec, RuncBackend

async def main(config, stack, processes):
    backend = RuncBackend(GardenConfig.model_validate_json(config))
    await backend.setup()
    await backend.create(ContainerSpec(handle="phoenix", rootfs=stack, memory_mb=32))
    pids = {}
    for process_id, script, stdout_path, piped in json.loads(processes):
        io = ProcessIO(stdout=lambda chunk: None) if piped else None
        spec = ProcessSpec(path="sh", args=("-c", script), process_id=process_id, stdout_path=stdout_path)
        pids[process_id] = (await backend.run("phoenix", spec, io)).pid
    print("STARTED", json.dumps({"keeper": backend._runtime.keeper.pid, "pids": pids}), flush=True)
    await asyncio.Event().wait()

asyncio.run(main(*sys.argv[1:]))
"""

RunChild = Callable[[GardenConfig, Path, list[list[Any]]], "asyncio.Future[dict[str, Any]]"]


@pytest.fixture
async def run_child() -> AsyncIterator[RunChild]:
    """Start CHILD, return what it printed once everything started, then SIGKILL it."""
    children: list[asyncio.subprocess.Process] = []

    async def run(config: GardenConfig, stack: Path, processes: list[list[Any]]) -> dict[str, Any]:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, config.model_dump_json(), str(stack), json.dumps(processes),
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        children.append(child)
        assert child.stdout is not None
        line = b""
        while not line.startswith(b"STARTED ") and not child.stdout.at_eof():
            line = await asyncio.wait_for(child.stdout.readline(), 30)  # skipping its log lines
        child.kill()
        await child.wait()
        await child.stdout.read()
        return json.loads(line.removeprefix(b"STARTED "))

    try:
        yield run  # type: ignore[misc]
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()


@pytest.fixture
async def fresh_backend(make_config: MakeConfig) -> AsyncIterator[Callable[[GardenConfig], "asyncio.Future[RuncBackend]"]]:
    """RuncBackend objects on a given config; their depots are cleaned up afterwards."""
    backends: list[RuncBackend] = []

    async def make(config: GardenConfig) -> RuncBackend:
        backend = RuncBackend(config)
        backends.append(backend)
        await backend.setup()
        return backend

    try:
        yield make  # type: ignore[misc]
    finally:
        for backend in backends:
            await cleanup_all(backend.depot.root)
            await backend.aclose()


async def wait_gone(pid: int, timeout: float = 10) -> bool:
    """True once pid has exited (a zombie counts: its parent is PID 1, not us)."""
    for _ in range(int(timeout / 0.05)):
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return True
        except FileNotFoundError:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_processes_survive_a_killed_backend(make_config: MakeConfig, stack: Path, tmp_path: Path,
                                                  run_child: RunChild, fresh_backend: Any) -> None:
    config = make_config()
    log_file = tmp_path / "lines.log"
    started = await run_child(config, stack, [
        ["early", "sleep 0.3; exit 5", None, False],            # ends while no backend exists
        ["seven", "sleep 5; exit 7", None, False],               # ends after the new backend attached
        ["hog", "sleep 4; dd if=/dev/zero of=/dev/null bs=64M count=1", None, False],  # OOM-killed
        ["lines", "i=0; while [ $i -lt 50 ]; do echo line $i; i=$((i+1)); sleep 0.1; done", str(log_file), False],
        ["piped", "sleep 1; echo hello", None, True],            # its stdout pipe died with the backend
    ])
    size_at_kill = log_file.stat().st_size
    await asyncio.sleep(1.2)
    assert log_file.stat().st_size > size_at_kill, "output to a file stopped with the backend"

    backend: RuncBackend = await fresh_backend(config)
    assert await backend.list() == ["phoenix"]
    info = await backend.info("phoenix")
    assert info.state == ContainerState.ACTIVE
    ids = backend.process_ids("phoenix")
    assert ids == {"early": False, "seven": True, "hog": True, "lines": True, "piped": False}, ids
    assert set(info.process_ids) == {"seven", "hog", "lines"}

    early = await backend.attach("phoenix", "early")
    assert (await asyncio.wait_for(early.wait(), 0.5)).code == 5
    seven = await backend.attach("phoenix", "seven")
    assert seven.pid == started["pids"]["seven"]
    status = await asyncio.wait_for(seven.wait(), 10)
    assert (status.code, status.signal, status.lost) == (7, None, False)
    hog = await asyncio.wait_for((await backend.attach("phoenix", "hog")).wait(), 10)
    assert (hog.code, hog.oom_killed, hog.reason) == (137, True, "out of memory")
    piped = await (await backend.attach("phoenix", "piped")).wait()
    assert piped.signal == signal.SIGPIPE  # the documented limit of callback output
    assert (await asyncio.wait_for((await backend.attach("phoenix", "lines")).wait(), 10)).code == 0
    assert log_file.read_text().splitlines() == [f"line {i}" for i in range(50)]

    with pytest.raises(ProcessNotFound):
        await backend.attach("phoenix", "nonesuch")
    with pytest.raises(ProcessNotFound):
        await backend.signal("phoenix", "seven", signal.SIGTERM)
    assert (await backend.info("phoenix")).init_pid == info.init_pid  # init lived through it all
    status, _ = await sh(backend, "phoenix", "true")
    assert status.code == 0

    await backend.destroy("phoenix")
    assert_no_traces(backend, "phoenix")
    assert await wait_gone(started["keeper"]), "the old keeper outlived its last container"


async def test_signal_and_follow_output_after_restart(make_config: MakeConfig, stack: Path, tmp_path: Path,
                                                      run_child: RunChild, fresh_backend: Any) -> None:
    config = make_config()
    log_file = tmp_path / "ticks.log"
    await run_child(config, stack, [
        ["ticker", "trap 'echo bye; exit 3' TERM; while :; do echo tick; sleep 0.1; done", str(log_file), False]])
    backend: RuncBackend = await fresh_backend(config)
    output = Output()
    ticker = await backend.attach("phoenix", "ticker", output.io())
    assert await backend.attach("phoenix", "ticker") is ticker
    await asyncio.sleep(0.6)
    await backend.signal("phoenix", "ticker", signal.SIGTERM)
    assert (await asyncio.wait_for(ticker.wait(), 5)).code == 3
    assert output.out.startswith("tick\n") and output.out.endswith("bye\n"), output.out
    assert len(output.out) < log_file.stat().st_size  # only what came after the attach
    assert backend.process_ids("phoenix") == {"ticker": False}


async def test_status_is_lost_when_the_keeper_dies_too(make_config: MakeConfig, stack: Path,
                                                       run_child: RunChild, fresh_backend: Any) -> None:
    config = make_config()
    started = await run_child(config, stack, [["orphan", "sleep 1; exit 4", None, False]])
    os.kill(started["keeper"], signal.SIGKILL)
    assert await wait_gone(started["keeper"])
    backend: RuncBackend = await fresh_backend(config)
    orphan = await backend.attach("phoenix", "orphan")
    status = await asyncio.wait_for(orphan.wait(), 10)
    assert (status.code, status.lost, status.reason) == (255, True, "exit status lost")
    assert backend.process_ids("phoenix") == {"orphan": False}
    # The container still works and goes away completely (its init now belongs to PID 1).
    status, _ = await sh(backend, "phoenix", "exit 2")
    assert status.code == 2
    await backend.destroy("phoenix")
    assert_no_traces(backend, "phoenix")
