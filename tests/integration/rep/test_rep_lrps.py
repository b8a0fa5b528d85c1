"""The rep with real runc and a real BBS: LRP instances claimed, started, health-checked,
reported RUNNING with net info and reachable; crashes reported; a restart keeps containers."""
from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from control.models.actual_lrp import ActualLRPState

from .conftest import RepDaemon, wait_for
from .helpers import HTTPD_PORT, assert_cell_clean, http_get, httpd_lrp, lrp_work


async def _rows(world, guid: str):  # type: ignore[no-untyped-def]
    async with world.client() as client:
        return await client.actual_lrps(process_guid=guid)


def rows(world, guid: str):  # type: ignore[no-untyped-def]
    return asyncio.run(_rows(world, guid))


def desire(world, body: dict) -> None:  # type: ignore[type-arg]
    async def go() -> None:
        async with world.client() as client:
            await client.desire_lrp(body)
    asyncio.run(go())


def running(world, guid: str, index: int = 0):  # type: ignore[no-untyped-def]
    for row in rows(world, guid):
        if row.index == index and row.state is ActualLRPState.RUNNING and row.presence.value == "ORDINARY":
            return row
    return None


def kill_in_cgroup(tag: str, handle: str, name: str) -> None:
    procs = Path(f"/sys/fs/cgroup/pids/pydiego/{tag}/{handle}/cgroup.procs").read_text().split()
    killed = 0
    for pid in procs:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if name.encode() in cmdline:
            os.kill(int(pid), signal.SIGKILL)
            killed += 1
    assert killed, f"no {name} process in {handle}"


def test_lrp_claimed_started_health_checked_and_reachable(world) -> None:  # type: ignore[no-untyped-def]
    rep: RepDaemon = world.add_rep().start()
    desire(world, httpd_lrp("web"))
    failed = rep.post_work(lrps=[lrp_work("web")])
    assert failed["lrps"] == [] and failed["tasks"] == []
    row = wait_for(lambda: running(world, "web"), timeout=30, what="web/0 RUNNING")
    assert row.cell_id == rep.cell_id
    assert row.address == "127.0.0.1"
    assert row.instance_address.startswith("10.2") and row.instance_address != row.address
    assert [p.container_port for p in row.ports] == [HTTPD_PORT]
    host_port = row.ports[0].host_port
    assert "hello-0" in http_get(row.address, host_port)
    state = rep.state()
    assert state["running_container_count"] == 1
    assert [lrp["state"] for lrp in state["lrps"]] == ["RUNNING"]
    assert state["available_resources"]["memory_mb"] == state["total_resources"]["memory_mb"] - 64
    assert state["evacuating"] is False


def test_crashing_process_is_reported_with_its_exit_status(world) -> None:  # type: ignore[no-untyped-def]
    rep = world.add_rep().start()
    body = httpd_lrp("crashy", action={"run": {"path": "/bin/sh", "args": ["-c", "sleep 1; exit 3"], "user": "root"}},
                     check_definition=None, setup=None)
    desire(world, body)
    rep.post_work(lrps=[lrp_work("crashy")])

    def crashed():  # type: ignore[no-untyped-def]
        found = [r for r in rows(world, "crashy") if r.crash_count >= 1]
        return found[0] if found else None
    row = wait_for(crashed, timeout=30, what="crash reported")
    assert "Exit status 3" in row.crash_reason
    wait_for(lambda: not rep.state()["lrps"], timeout=15, what="crashed container deleted")
    assert_cell_clean(rep)


def test_oom_is_reported_as_out_of_memory(world) -> None:  # type: ignore[no-untyped-def]
    rep = world.add_rep().start()
    hog = "x=a; while true; do x=$x$x; done"
    body = httpd_lrp("hog", memory_mb=16, action={"run": {"path": "/bin/sh", "args": ["-c", hog], "user": "root"}},
                     check_definition=None, setup=None)
    desire(world, body)
    rep.post_work(lrps=[lrp_work("hog", memory_mb=16)])
    row = wait_for(lambda: next((r for r in rows(world, "hog") if r.crash_count >= 1), None), timeout=40,
                   what="oom crash")
    assert "out of memory" in row.crash_reason


def test_rep_sigkill_and_restart_keeps_running_containers(world) -> None:  # type: ignore[no-untyped-def]
    rep = world.add_rep().start()
    desire(world, httpd_lrp("keep"))
    rep.post_work(lrps=[lrp_work("keep")])
    before = wait_for(lambda: running(world, "keep"), timeout=30, what="keep/0 RUNNING")
    port = before.ports[0].host_port
    rep.kill()
    assert "hello-0" in http_get("127.0.0.1", port)  # the app does not notice the rep is gone
    rep.start()
    wait_for(lambda: [lrp["state"] for lrp in rep.state()["lrps"]] == ["RUNNING"], timeout=20, what="re-adopted")
    after = running(world, "keep")
    assert after is not None
    assert after.instance_guid == before.instance_guid
    assert after.ports[0].host_port == port
    assert "hello-0" in http_get("127.0.0.1", port)
    # the re-adopted instance is still watched: killing its process is reported as a crash
    tag = rep.config["garden"]["tag"]
    kill_in_cgroup(tag, after.instance_guid, "httpd")
    row = wait_for(lambda: next((r for r in rows(world, "keep") if r.crash_count > after.crash_count), None),
                   timeout=20, what="crash of the re-adopted instance")
    assert "Exit status 137" in row.crash_reason or "signal" in row.crash_reason.lower()


def test_stop_endpoint_stops_the_instance_and_removes_it(world) -> None:  # type: ignore[no-untyped-def]
    rep = world.add_rep().start()
    desire(world, httpd_lrp("stopme"))
    rep.post_work(lrps=[lrp_work("stopme")])
    row = wait_for(lambda: running(world, "stopme"), timeout=30, what="RUNNING")
    with rep.http() as client:
        assert client.post(f"/v1/lrps/stopme/instances/{row.instance_guid}/stop").status_code == 202
        missing = client.post("/v1/lrps/stopme/instances/nope/stop")
        assert missing.status_code == 404 and missing.json()["type"] == "ResourceNotFound"
    wait_for(lambda: not rep.state()["lrps"], timeout=20, what="stopped container deleted")
    assert not any(r.instance_guid == row.instance_guid for r in rows(world, "stopme"))
    assert_cell_clean(rep)
