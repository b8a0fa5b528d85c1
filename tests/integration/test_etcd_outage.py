"""An etcd outage makes the BBS answer 503 (never crash); when etcd is back, requests succeed
again and the event stream resumes without the BBS restarting."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import yaml

from tests.factories import desired_lrp, task_request
from tests.integration.conftest import Daemon
from tests.servers import EtcdServer, free_port


def test_bbs_rides_out_an_etcd_restart(tmp_path: Path, certs) -> None:  # type: ignore[no-untyped-def]
    etcd = EtcdServer(tmp_path / "etcd").start()
    port = free_port()
    cfg = tmp_path / "bbs.yml"
    # a lock TTL longer than the outage: this test is about the store, not about failover
    cfg.write_text(yaml.safe_dump({"listen_address": f"127.0.0.1:{port}", "etcd_endpoints": [etcd.endpoint],
                                   "plain_http": True, "coordination": {"backend": "etcd", "lock_ttl": 60}}))
    daemon = Daemon(cfg, tmp_path / "bbs.log", port, False, certs).start()
    try:
        with daemon.http() as client:
            assert client.post("/v1/desired_lrps", json=desired_lrp(process_guid="before")).status_code == 201
            etcd.stop()
            down = client.get("/v1/actual_lrps")
            assert down.status_code == 503 and down.json()["type"] == "ServiceUnavailable"
            assert client.post("/v1/desired_lrps", json=desired_lrp()).status_code == 503
            assert daemon.proc is not None and daemon.proc.poll() is None  # still serving
            etcd.start()  # same ports, same data
            deadline = time.monotonic() + 15  # the client reconnects by itself; until then: 503, never a crash
            listed = client.get("/v1/desired_lrps")
            while listed.status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.1)
                listed = client.get("/v1/desired_lrps")
            assert listed.status_code == 200, listed.text
            assert [d["process_guid"] for d in listed.json()] == ["before"]

            events: list[str] = []
            subscribed = threading.Event()

            def follow() -> None:
                with httpx.stream("GET", f"{daemon.url}/v1/events/tasks", timeout=httpx.Timeout(10, read=10)) as resp:
                    for line in resp.iter_lines():
                        subscribed.set()
                        if line.startswith("event:"):
                            events.append(line.split(":", 1)[1].strip())
                            return
            reader = threading.Thread(target=follow, daemon=True)
            reader.start()
            assert subscribed.wait(10)
            body = task_request()
            assert client.post("/v1/tasks", json=body).status_code == 201
            reader.join(10)
            assert events == ["task_created"]
    finally:
        daemon.stop()
        etcd.stop()
    assert "process-failed" not in daemon.log.read_text()
