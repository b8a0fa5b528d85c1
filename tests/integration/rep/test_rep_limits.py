"""Limits and isolation seen through the rep: the disk limit stops writes, and a container
cannot reach another container (while the host reaches both)."""
from __future__ import annotations

from control.models.task import TaskState

from .conftest import wait_for
from .helpers import http_get, httpd_lrp, lrp_work, task_work
from .test_rep_lrps import desire, running
from .test_rep_tasks_and_input import desire_task, get_task


def test_disk_limit_stops_writes_past_disk_mb(world) -> None:  # type: ignore[no-untyped-def]
    rep = world.add_rep().start()
    script = "dd if=/dev/zero of=/fill bs=1M count=64 2>/tmp/err; rc=$?; tail -c 200 /tmp/err > /tmp/result; exit $rc"
    desire_task(world, "t-disk", {"rootfs": "preloaded:busybox", "disk_mb": 16, "result_file": "/tmp/result",
                                  "action": {"run": {"path": "/bin/sh", "args": ["-c", script], "user": "root"}}})
    work = task_work("t-disk")
    work["resource"]["disk_mb"] = 16
    rep.post_work(tasks=[work])
    task = wait_for(lambda: (t := get_task(world, "t-disk")).state is TaskState.COMPLETED and t, timeout=30,
                    what="task completed")
    assert task.failed is True and "Exit status 1" in task.failure_reason

    desire_task(world, "t-disk-ok", {"rootfs": "preloaded:busybox", "disk_mb": 16, "result_file": "/tmp/result",
                                     "action": {"run": {"path": "/bin/sh", "user": "root", "args": [
                                         "-c", "dd if=/dev/zero of=/fill bs=1M count=4 2>/dev/null && du -m /fill | cut -f1 > /tmp/result"]}}})
    ok = task_work("t-disk-ok")
    ok["resource"]["disk_mb"] = 16
    rep.post_work(tasks=[ok])
    task = wait_for(lambda: (t := get_task(world, "t-disk-ok")).state is TaskState.COMPLETED and t, timeout=30,
                    what="task completed")
    assert task.failed is False and task.result.strip() == "4"


def test_a_container_cannot_reach_another_container(world) -> None:  # type: ignore[no-untyped-def]
    rep = world.add_rep().start()
    desire(world, httpd_lrp("target"))
    rep.post_work(lrps=[lrp_work("target")])
    row = wait_for(lambda: running(world, "target"), timeout=30, what="target RUNNING")
    assert "hello-0" in http_get(row.address, row.ports[0].host_port)  # the host reaches it
    probe = (f"wget -T 2 -q -O- http://{row.instance_address}:8080/ > /tmp/result 2>&1; echo rc=$? >> /tmp/result;"
             f" wget -T 2 -q -O- http://{row.address}:{row.ports[0].host_port}/ >> /tmp/result 2>&1;"
             " echo rc=$? >> /tmp/result")
    desire_task(world, "t-probe", {"rootfs": "preloaded:busybox", "result_file": "/tmp/result",
                                   "action": {"run": {"path": "/bin/sh", "args": ["-c", probe], "user": "root"}}})
    rep.post_work(tasks=[task_work("t-probe")])
    task = wait_for(lambda: (t := get_task(world, "t-probe")).state is TaskState.COMPLETED and t, timeout=30,
                    what="probe completed")
    assert task.failed is False
    assert "hello-0" not in task.result
    assert task.result.count("rc=0") == 0, task.result
