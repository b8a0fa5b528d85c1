"""The BBS as a real process: mutual TLS, clean shutdown, and no partial or lost write when it
is SIGKILLed in the middle of a burst of desires."""
from __future__ import annotations

import asyncio
import random
import signal
import ssl
import subprocess
import sys

import httpx
import pytest

from control.kit.etcd import Etcd
from control.bbs.store.keys import Keys
from tests.factories import desired_lrp


def test_mutual_tls_is_required(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(use_tls=True).start()
    with daemon.http() as client:
        assert client.get("/v1/ping").json() == {"available": True}
        assert client.get("/v1/desired_lrps/nope").status_code == 404
        metrics = client.get("/metrics").text  # Prometheus metrics, by route and status
        assert 'bbs_requests_total{method="GET",route="/v1/ping",status="200"}' in metrics
        assert 'route="/v1/desired_lrps/{process_guid}",status="404"' in metrics
        assert client.get("/ping").json() == {"ok": True}
    no_cert = ssl.create_default_context(cafile=str(daemon.certs.ca))
    with pytest.raises(httpx.HTTPError):  # the handshake fails without a client certificate
        httpx.get(f"{daemon.url}/v1/ping", verify=no_cert, timeout=5)
    with pytest.raises(httpx.ConnectError):  # and the server's certificate is checked too
        httpx.get(f"{daemon.url}/v1/ping", verify=True, timeout=5)


def test_sigterm_is_a_clean_exit(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(use_tls=False).start()
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(15) == 0
    assert "stopped-by-signal" in daemon.log.read_text()


def test_bad_config_is_refused_with_a_message(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(use_tls=True, ca_cert="")  # TLS without a CA
    proc = subprocess.run([sys.executable, "-m", "control.bbs", "--config", str(daemon.config)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "ca_cert, server_cert and server_key are required" in proc.stderr


async def test_sigkill_mid_burst_leaves_no_partial_lrp_and_loses_no_acknowledged_write(
        make_daemon, etcd_server, key_prefix) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(use_tls=False).start()
    rng = random.Random(7)
    bodies = [desired_lrp(instances=rng.randint(1, 60)) for _ in range(400)]
    acknowledged: set[str] = set()
    attempted: set[str] = set()
    killed = asyncio.Event()

    async def worker(client: httpx.AsyncClient, queue: asyncio.Queue) -> None:  # type: ignore[type-arg]
        while not queue.empty() and not killed.is_set():
            body = queue.get_nowait()
            attempted.add(body["process_guid"])
            try:
                resp = await client.post("/v1/desired_lrps", json=body)
            except httpx.HTTPError:
                return  # the BBS died under us: this write was never acknowledged
            if resp.status_code == 201:
                acknowledged.add(body["process_guid"])
                if len(acknowledged) == 120:
                    assert daemon.proc is not None
                    daemon.proc.send_signal(signal.SIGKILL)
                    killed.set()

    queue: asyncio.Queue = asyncio.Queue()  # type: ignore[type-arg]
    for body in bodies:
        queue.put_nowait(body)
    async with httpx.AsyncClient(base_url=daemon.url, timeout=10) as client:
        await asyncio.gather(*(worker(client, queue) for _ in range(16)))
    assert killed.is_set() and daemon.proc is not None and daemon.proc.wait(10) == -signal.SIGKILL
    assert len(attempted) > len(acknowledged) >= 120  # some writes were in flight when it died

    # A new BBS over the same etcd serves everything that was acknowledged.
    restarted = make_daemon(use_tls=False).start()
    with restarted.http() as client:
        listed = {d["process_guid"] for d in client.get("/v1/desired_lrps").json()}
    assert acknowledged <= listed

    # Every LRP in etcd is whole: both halves and exactly its instances, or nothing at all.
    keys, etcd = Keys(key_prefix), Etcd([etcd_server.endpoint])
    await etcd.connect()
    try:
        kvs, _ = await etcd.range(keys.root)
    finally:
        await etcd.close()
    halves: dict[str, set[str]] = {}
    instances: dict[str, set[int]] = {}
    for kv in kvs:
        if kv.key.startswith(keys.desired):
            guid, part = keys.parse_desired(kv.key)
            halves.setdefault(guid, set()).add(part)
        elif kv.key.startswith(keys.actual):
            guid, index, _ = keys.parse_actual(kv.key)
            instances.setdefault(guid, set()).add(index)
    wanted = {b["process_guid"]: b["instances"] for b in bodies}
    for guid in attempted:
        if guid in halves:
            assert halves[guid] == {"schedule", "run"}, guid
            assert instances.get(guid) == set(range(wanted[guid])), guid
        else:
            assert guid not in instances and guid not in acknowledged, guid
