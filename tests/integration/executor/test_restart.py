"""Restart safety on real runc: a rep killed with SIGKILL, a new one re-adopts its containers."""
from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from agents.executor.models import Container, ContainerState
from agents.garden.models import ProcessSpec

from .conftest import MakeCell
from .helpers import http_get, wait_state

ROOT = Path(__file__).resolve().parents[3]


async def test_a_killed_rep_leaves_its_lrp_running_and_the_next_one_readopts_it(
        make_cell: MakeCell, make_garden_config, busybox_stack: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    garden = make_garden_config()
    state_dir = tmp_path / "executor"
    first = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.executor.cell_process", garden.model_dump_json(), str(state_dir),
        str(busybox_stack), "web-0", cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert first.stdout is not None
        async with asyncio.timeout(15):
            while not (line := await first.stdout.readline()).startswith(b"CONTAINER "):
                assert line, "the first executor exited"
        before = Container.model_validate_json(line.removeprefix(b"CONTAINER "))
    finally:
        if first.returncode is None:
            first.send_signal(signal.SIGKILL)  # a crash: no cleanup of any kind runs
        await first.wait()
    assert before.state == ContainerState.RUNNING
    (mapping,) = before.ports
    assert (await http_get("127.0.0.1", mapping.host_port))[0] == 200  # still serving, with no rep

    cell = await make_cell(garden=garden, state_dir=state_dir)
    after = cell.executor.get("web-0")
    assert after.state == ContainerState.RUNNING
    assert (after.ports, after.internal_ip, after.routable) == (before.ports, before.internal_ip, True)
    assert (await http_get("127.0.0.1", mapping.host_port))[0] == 200
    await asyncio.sleep(0.7)  # a liveness probe or two on the re-adopted container
    assert cell.executor.get("web-0").state == ContainerState.RUNNING

    # The app dies under the new executor: reported as a crash with its status.
    killer = await cell.backend.run("web-0", ProcessSpec(path="/bin/sh", args=("-c", "killall httpd")))
    assert (await killer.wait()).code == 0
    result = (await wait_state(cell.executor, "web-0", ContainerState.COMPLETED)).run_result
    assert result is not None and (result.failed, result.stopped) == (True, False)
    assert result.failure_reason == "Exit status 143", result


async def test_a_cancelled_executor_detaches_and_a_new_one_can_stop_the_container(make_cell: MakeCell,
                                                                                 tmp_path: Path) -> None:
    from .helpers import lrp_request, reserve

    first = await make_cell(state_dir=tmp_path / "state")
    await reserve(first.executor, "daemon")
    await first.executor.run_container("daemon", lrp_request("trap 'exit 0' TERM; while true; do sleep 0.1; done",
                                                   monitor={"run": {"path": "true", "user": "root"}}))
    await wait_state(first.executor, "daemon", ContainerState.RUNNING)
    await first.detach()  # an orderly shutdown (upgrade): containers stay

    second = await make_cell(garden=first.garden, state_dir=tmp_path / "state")
    assert second.executor.get("daemon").state == ContainerState.RUNNING
    await second.executor.stop("daemon")
    result = second.executor.get("daemon").run_result
    assert result is not None and result.stopped
