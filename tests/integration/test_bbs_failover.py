"""Two BBS processes under the `bbs` lock: one serves, the standby does not; when the active
one is SIGKILLed or SIGTERMed, the standby takes over, a client that keeps writing through
`control.client` follows it by itself, and no acknowledged write is lost."""
from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from control.client.bbs_client import BBSClient
from control.client.locator import LockLocator
from control.coordination.base import CoordinationConfig
from control.models.errors import AlreadyExists
from tests.factories import desired_lrp


@pytest.fixture(params=["consul", "etcd"])
def coordination(request, etcd_server, key_prefix) -> dict[str, object]:  # type: ignore[no-untyped-def]
    cfg: dict[str, object] = {"backend": request.param, "lock_ttl": 2, "presence_ttl": 2,
                              "lock_retry_interval": 0.1}
    if request.param == "consul":
        cfg["consul_address"] = request.getfixturevalue("consul_server").address
    return cfg


def _active(daemons) -> list:  # type: ignore[no-untyped-def]
    out = []
    for d in daemons:
        try:
            with httpx.Client(timeout=1) as c:
                if c.get(f"{d.url}/v1/ping").status_code == 200:
                    out.append(d)
        except httpx.HTTPError:
            pass
    return out


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
async def test_standby_takes_over_and_no_acknowledged_write_is_lost(
        make_daemon, coordination, etcd_server, key_prefix, stop) -> None:  # type: ignore[no-untyped-def]
    first = make_daemon(use_tls=False, coordination=coordination).start()
    second = make_daemon(use_tls=False, coordination=coordination)
    assert second.start_process() is not None
    await asyncio.sleep(1.0)
    assert _active([first, second]) == [first]  # the standby does not serve

    cfg = CoordinationConfig.model_validate({**coordination, "etcd_endpoints": [etcd_server.endpoint],
                                             "key_prefix": key_prefix})
    locator = LockLocator(cfg)
    assert await locator() == first.url
    acknowledged: list[str] = []
    failures: list[Exception] = []
    done = asyncio.Event()

    async def writer() -> None:
        async with BBSClient(first.url, retries=40, backoff_s=0.05, locate=locator) as client:
            while not done.is_set():
                body = desired_lrp(instances=2)
                try:
                    await client.desire_lrp(body)
                except AlreadyExists:
                    pass  # the first attempt landed before the connection broke: acknowledged now
                except Exception as exc:  # noqa: BLE001 - recorded and asserted below
                    failures.append(exc)
                    continue
                acknowledged.append(body["process_guid"])

    writing = asyncio.create_task(writer())
    await asyncio.sleep(1.0)
    before = len(acknowledged)
    assert first.proc is not None
    stopped_at = time.monotonic()
    first.proc.send_signal(stop)
    while not _active([second]):
        assert time.monotonic() - stopped_at < 10, "the standby did not take over"
        await asyncio.sleep(0.02)
    takeover = time.monotonic() - stopped_at
    await asyncio.sleep(1.0)
    done.set()
    await writing

    assert not failures, failures
    assert before > 0 and len(acknowledged) > before  # writes went on after the handover
    # Not a performance check (bench/failover_bench.py measures that): a graceful stop must hand the
    # lock over by releasing it, so the standby takes over before the 2 s lock TTL could have expired.
    if stop == signal.SIGTERM:
        assert takeover < 2.0, f"takeover took {takeover:.2f}s: the lock expired instead of being released"
    async with BBSClient(second.url) as client:
        stored = {d.process_guid for d in await client.desired_lrps()}
        assert set(acknowledged) <= stored
        for guid in acknowledged[-5:]:
            assert len(await client.actual_lrps(process_guid=guid)) == 2
    if stop == signal.SIGTERM:
        assert first.proc.wait(10) == 0
