"""Processes in a container: exit status, output, env, users, signals, stop, and the user namespace."""
from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from pydantic import ValidationError

from agents.garden import (ContainerSpec, ContainerState, ContainerStopped, InvalidSpec, ProcessNotFound, ProcessSpec,
                           ProcessStartFailed, RuncBackend)

from .helpers import Output, sh


async def test_exit_status_output_and_env(backend: RuncBackend, stack: Path, tmp_path: Path) -> None:
    await backend.create(ContainerSpec(handle="proc", rootfs=str(stack), env=("A=container", "B=container")))
    status, out = await sh(backend, "proc", 'echo "out $A $B $C"; echo err >&2; exit 7', env=("B=process", "C=3"))
    assert (status.code, status.signal, status.oom_killed) == (7, None, False)
    assert out.out == "out container process 3\n" and out.err == "err\n"

    # Output to files on the host, working directory, a user from the rootfs /etc/passwd.
    stdout, stderr = tmp_path / "out.log", tmp_path / "err.log"
    process = await backend.run("proc", ProcessSpec(
        path="sh", args=("-c", "pwd; id -u; echo oops >&2"), dir="/tmp", user="nobody",
        stdout_path=str(stdout), stderr_path=str(stderr)))
    assert (await process.wait()).code == 0
    assert stdout.read_text() == "/tmp\n65534\n" and stderr.read_text() == "oops\n"


async def test_exit_is_reported_when_background_children_hold_the_output(backend: RuncBackend, stack: Path) -> None:
    await backend.create(ContainerSpec(handle="bg", rootfs=str(stack)))
    output = Output()
    process = await backend.run("bg", ProcessSpec(
        path="sh", args=("-c", "echo parent; (sleep 1; echo late) & exit 4")), output.io())
    status = await asyncio.wait_for(process.wait(), 0.9)
    assert status.code == 4 and output.out == "parent\n"
    for _ in range(100):  # the child's output still streams after the parent's exit
        if "late" in output.out:
            break
        await asyncio.sleep(0.05)
    assert output.out == "parent\nlate\n"


async def test_start_failures_are_typed(backend: RuncBackend, stack: Path) -> None:
    await backend.create(ContainerSpec(handle="fail", rootfs=str(stack)))
    with pytest.raises(ProcessStartFailed, match="no such file"):
        await backend.run("fail", ProcessSpec(path="/no/such/binary"))
    with pytest.raises(ProcessStartFailed, match="cwd"):
        await backend.run("fail", ProcessSpec(path="/bin/true", dir="/no/such/dir"))
    # A legitimate exit code 255 is an exit, not a start failure.
    status, _ = await sh(backend, "fail", "exit 255")
    assert status.code == 255


async def test_signal_and_stop(backend: RuncBackend, stack: Path) -> None:
    await backend.create(ContainerSpec(handle="sig", rootfs=str(stack)))
    sleeper = await backend.run("sig", ProcessSpec(path="sleep", args=("30",), process_id="sleeper"))
    assert "sleeper" in (await backend.info("sig")).process_ids
    await backend.signal("sig", "sleeper", signal.SIGTERM)
    status = await asyncio.wait_for(sleeper.wait(), 5)
    assert (status.code, status.signal) == (143, signal.SIGTERM)
    with pytest.raises(ProcessNotFound):
        await backend.signal("sig", "sleeper", signal.SIGTERM)

    polite = await backend.run("sig", ProcessSpec(path="sleep", args=("30",)))
    stubborn = await backend.run("sig", ProcessSpec(path="sh", args=("-c", "trap '' TERM; sleep 30 & wait")))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await backend.stop("sig", kill_after_s=1)
    elapsed = loop.time() - started
    assert (await polite.wait()).signal == signal.SIGTERM
    assert (await stubborn.wait()).signal == signal.SIGKILL
    assert 0.9 < elapsed < 5, elapsed
    info = await backend.info("sig")
    assert info.state == ContainerState.STOPPED and info.init_pid == 0
    with pytest.raises(ContainerStopped):
        await backend.run("sig", ProcessSpec(path="true"))


async def test_stop_returns_as_soon_as_processes_exit_on_sigterm(backend: RuncBackend, stack: Path) -> None:
    await backend.create(ContainerSpec(handle="quick", rootfs=str(stack)))
    process = await backend.run("quick", ProcessSpec(path="sleep", args=("30",)))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await backend.stop("quick", kill_after_s=10)
    assert loop.time() - started < 2
    assert (await process.wait()).signal == signal.SIGTERM


async def test_unprivileged_container_runs_as_mapped_uid(backend: RuncBackend, stack: Path) -> None:
    host_id = backend.config.unprivileged_host_id
    info = await backend.create(ContainerSpec(handle="userns", rootfs=str(stack)))
    assert not info.privileged
    output = Output()
    process = await backend.run("userns", ProcessSpec(
        path="sh", args=("-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /tmp/mine; sleep 0.5")),
        output.io())
    host_uid = int(next(line for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
                        if line.startswith("Uid:")).split()[1])
    assert (await process.wait()).code == 0
    assert output.out.split() == ["0", str(host_id), "65536", "0", str(host_id), "65536", "0"]
    assert host_uid == host_id
    upper_file = next(Path(info.bundle_path).rglob("upper/tmp/mine"))
    assert upper_file.stat().st_uid == host_id

    # Container root owns nothing of the host: /proc/sys is read-only, the network is not its own.
    status, out = await sh(backend, "userns", "ip link set eth0 down")
    assert status.code != 0 and "Operation not permitted" in out.err
    status, out = await sh(backend, "userns", "echo 1 > /proc/sys/kernel/panic")
    assert status.code != 0 and "Read-only file system" in out.err

    await backend.create(ContainerSpec(handle="priv", rootfs=str(stack), privileged=True))
    status, out = await sh(backend, "priv", "cat /proc/self/uid_map")
    assert out.out.split() == ["0", "0", "4294967295"]


async def test_attach_process_ids_and_stdin_in_one_backend(backend: RuncBackend, stack: Path, tmp_path: Path) -> None:
    await backend.create(ContainerSpec(handle="ids", rootfs=str(stack)))
    first = await backend.run("ids", ProcessSpec(path="sh", args=("-c", "exit 3"), process_id="job"))
    assert (await first.wait()).code == 3
    assert backend.process_ids("ids") == {"job": False}
    assert (await asyncio.wait_for((await backend.attach("ids", "job")).wait(), 1)).code == 3  # read from disk

    # The id of a finished process can be used again; stdin comes from a host file.
    stdin = tmp_path / "in.txt"
    stdin.write_text("from the host\n")
    output = Output()
    second = await backend.run("ids", ProcessSpec(path="cat", process_id="job", stdin_path=str(stdin)), output.io())
    assert (await second.wait()).code == 0 and output.out == "from the host\n"

    sleeper = await backend.run("ids", ProcessSpec(path="sleep", args=("30",), process_id="sleeper"))
    assert await backend.attach("ids", "sleeper") is sleeper
    with pytest.raises(InvalidSpec):
        await backend.run("ids", ProcessSpec(path="true", process_id="sleeper"))
    assert backend.process_ids("ids") == {"job": False, "sleeper": True}
    assert (await backend.info("ids")).process_ids == ("sleeper",)
    await backend.signal("ids", "sleeper", signal.SIGKILL)
    assert (await sleeper.wait()).signal == signal.SIGKILL
    assert (await backend.info("ids")).process_ids == ()

    for unknown in ("nonesuch", "..", "../ids"):
        with pytest.raises(ProcessNotFound):
            await backend.attach("ids", unknown)
    with pytest.raises(ValidationError):
        ProcessSpec(path="true", process_id="..")
    with pytest.raises(InvalidSpec):
        await backend.run("ids", ProcessSpec(path="cat", stdin_path=str(tmp_path / "missing")))
