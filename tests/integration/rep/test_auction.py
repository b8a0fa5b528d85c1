"""The auctioneer with real cells: the BBS finds the active auctioneer through its lock, the
auctioneer places instances across cells, posts /work, and reports what it cannot place."""
from __future__ import annotations

from control.models.actual_lrp import ActualLRPState
from control.models.task import TaskState

from .conftest import wait_for
from .helpers import http_get, httpd_lrp
from .test_rep_lrps import desire, rows
from .test_rep_tasks_and_input import desire_task, get_task


def running_rows(world, guid: str):  # type: ignore[no-untyped-def]
    return [r for r in rows(world, guid) if r.state is ActualLRPState.RUNNING and r.presence.value == "ORDINARY"]


def test_lrp_instances_land_on_different_cells_and_answer(world) -> None:  # type: ignore[no-untyped-def]
    reps = [world.add_rep(zone=f"z{i % 2}").start() for i in range(3)]
    world.add_auctioneer().start()
    desire(world, httpd_lrp("spread", instances=3))
    placed = wait_for(lambda: len(r := running_rows(world, "spread")) == 3 and r, timeout=60, what="3 RUNNING")
    assert sorted(r.cell_id for r in placed) == sorted(rep.cell_id for rep in reps)
    for row in placed:
        assert f"hello-{row.index}" in http_get(row.address, row.ports[0].host_port)


def test_task_is_placed_and_runs_once(world) -> None:  # type: ignore[no-untyped-def]
    world.add_rep().start()
    world.add_auctioneer().start()
    desire_task(world, "once", {"rootfs": "preloaded:busybox", "result_file": "/tmp/r",
                                "action": {"run": {"path": "/bin/sh", "args": ["-c", "echo -n ran > /tmp/r"],
                                                   "user": "root"}}})
    task = wait_for(lambda: (t := get_task(world, "once")).state is TaskState.COMPLETED and t, timeout=30,
                    what="task completed")
    assert task.result == "ran" and task.failed is False


def test_unplaceable_lrp_shows_the_placement_error(world) -> None:  # type: ignore[no-untyped-def]
    world.add_rep().start()  # 2048 MB in the test config
    world.add_auctioneer().start()
    desire(world, httpd_lrp("huge", memory_mb=100_000))
    row = wait_for(lambda: next((r for r in rows(world, "huge") if r.placement_error), None), timeout=30,
                   what="placement error")
    assert row.state is ActualLRPState.UNCLAIMED
    assert row.placement_error == "insufficient resources: memory"
    desire(world, httpd_lrp("nostack", rootfs="preloaded:cflinuxfs4"))
    row = wait_for(lambda: next((r for r in rows(world, "nostack") if r.placement_error), None), timeout=30,
                   what="rootfs placement error")
    assert row.placement_error == "found no compatible cell for required rootfs"


def test_malformed_auction_requests_are_refused_whole(world) -> None:  # type: ignore[no-untyped-def]
    auctioneer = world.add_auctioneer().start()
    with auctioneer.http() as client:
        good = {"process_guid": "ok", "domain": "d", "indices": [0], "rootfs": "preloaded:busybox"}
        bad = {"process_guid": "bad guid", "domain": "d", "indices": [], "rootfs": ""}
        r = client.post("/v1/lrps/auctions", json=[good, bad])
        assert r.status_code == 422 and r.json()["type"] == "InvalidRequest"
        r = client.post("/v1/tasks/auctions", content=b"{oops", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["type"] == "InvalidJSON"
        r = client.post("/v1/lrps/auctions", json={"not": "a list"})
        assert r.status_code == 422
        metrics = client.get("/metrics").text
    assert "auctioneer_queued 0" in metrics and "auctioneer_rounds_total 0" in metrics
    assert "auctioneer_requests_total{" not in metrics  # nothing of a refused request was queued
