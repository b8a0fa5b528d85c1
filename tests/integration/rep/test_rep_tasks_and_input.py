"""Tasks on a real cell, and bad input to the rep: clear errors, nothing half-made."""
from __future__ import annotations

import asyncio
from typing import Any

from control.models.task import TaskState

from .conftest import wait_for
from .helpers import assert_cell_clean, lrp_work, task_work


def desire_task(world, guid: str, definition: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    async def go() -> None:
        async with world.client() as client:
            await client.desire_task(guid, "test", definition)
    asyncio.run(go())


def get_task(world, guid: str):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        async with world.client() as client:
            return await client.task(guid)
    return asyncio.run(go())


def test_task_with_result_file_completes(world) -> None:  # type: ignore[no-untyped-def]
    rep = world.add_rep().start()
    desire_task(world, "t-result", {
        "rootfs": "preloaded:busybox", "result_file": "/tmp/result",
        "action": {"run": {"path": "/bin/sh", "args": ["-c", "echo -n 42-$((6*7)) > /tmp/result"], "user": "root"}}})
    assert rep.post_work(tasks=[task_work("t-result")])["tasks"] == []
    task = wait_for(lambda: (t := get_task(world, "t-result")).state is TaskState.COMPLETED and t, timeout=30,
                    what="task completed")
    assert task.failed is False
    assert task.result == "42-42"
    wait_for(lambda: not rep.state()["tasks"], timeout=10, what="task container deleted")
    assert_cell_clean(rep)


def test_failing_task_completes_failed_with_exit_status(world) -> None:  # type: ignore[no-untyped-def]
    rep = world.add_rep().start()
    desire_task(world, "t-fail", {"rootfs": "preloaded:busybox",
                                  "action": {"run": {"path": "/bin/sh", "args": ["-c", "exit 5"], "user": "root"}}})
    rep.post_work(tasks=[task_work("t-fail")])
    task = wait_for(lambda: (t := get_task(world, "t-fail")).state is TaskState.COMPLETED and t, timeout=30,
                    what="task completed")
    assert task.failed is True and "Exit status 5" in task.failure_reason


def test_work_with_a_rootfs_the_cell_does_not_offer_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    rep = world.add_rep().start()
    failed = rep.post_work(lrps=[lrp_work("x", rootfs="preloaded:cflinuxfs4")],
                           tasks=[task_work("t-x", rootfs="preloaded:nope")])
    assert [w["process_guid"] for w in failed["lrps"]] == ["x"]
    assert "rootfs not offered" in failed["lrps"][0]["reason"]
    assert "rootfs not offered" in failed["tasks"][0]["reason"]
    assert rep.state()["lrps"] == [] and rep.state()["tasks"] == []
    assert_cell_clean(rep)


def test_task_whose_image_cannot_be_pulled_is_rejected_and_leaves_nothing(world) -> None:  # type: ignore[no-untyped-def]
    rep = world.add_rep().start()
    rootfs = "docker://127.0.0.1:9/nothing/here#latest"  # nothing listens on port 9
    desire_task(world, "t-pull", {"rootfs": rootfs,
                                  "action": {"run": {"path": "/bin/true", "user": "root"}}})
    assert rep.post_work(tasks=[task_work("t-pull", rootfs=rootfs)])["tasks"] == []
    task = wait_for(lambda: (t := get_task(world, "t-pull")).rejection_count >= 1 and t, timeout=30,
                    what="task rejected")
    assert task.state is TaskState.PENDING
    assert task.rejection_reason
    wait_for(lambda: not rep.state()["tasks"], timeout=10, what="container deleted")
    assert_cell_clean(rep)


def test_bad_input_gets_typed_errors_and_changes_nothing(world) -> None:  # type: ignore[no-untyped-def]
    rep = world.add_rep().start()
    with rep.http() as client:
        r = client.post("/work", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["type"] == "InvalidJSON"
        r = client.post("/work", json={"lrps": [{"process_guid": "bad guid!", "index": -1}]})
        assert r.status_code == 422 and r.json()["type"] == "InvalidRequest"
        r = client.post("/work", content=b"[" * 10 + b"]" * 10)
        assert r.status_code in (400, 422)
        big = b'{"lrps": [' + b",".join([b'{"process_guid":"p","index":0,"domain":"d","rootfs":"preloaded:busybox"}'] * 20000) + b"]}"
        r = client.post("/work", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["type"] == "RequestTooLarge"
        r = client.post("/work", json={"cell_id": "another-cell", "lrps": [lrp_work("p")]})
        assert r.status_code == 422 and "does not match" in r.json()["message"]
        r = client.post("/v1/tasks/unknown-task/cancel")
        assert r.status_code == 404 and r.json()["type"] == "ResourceNotFound"
        r = client.get("/v1/containers/unknown/logs")
        assert r.status_code == 404
        r = client.post("/v1/lrps/a/instances/b%20c/stop")
        assert r.status_code == 422
    assert rep.state()["lrps"] == [] and rep.state()["tasks"] == []
    assert rep.state()["available_resources"] == rep.state()["total_resources"]
    assert_cell_clean(rep)


def test_evacuate_is_loopback_admin_only_and_answers_ping_path(world) -> None:  # type: ignore[no-untyped-def]
    rep = world.add_rep().start()
    with rep.admin() as admin:
        assert admin.get("/ping").status_code == 200
        r = admin.post("/evacuate")
        assert r.status_code == 202 and r.json() == {"ping_path": "/ping"}
    # an empty cell finishes evacuating at once and the rep exits cleanly
    assert rep.proc is not None and rep.proc.wait(20) == 0
