"""Ping, domains (etcd-lease TTLs, reference §1.5), cells, and the API's typed answers for
unknown routes and methods. The TTL tests wait for a real etcd lease to expire (a few
seconds): lease expiry is etcd's clock, not ours."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from control.kit.etcd import Etcd
from tests.component.conftest import RunningBBS


@pytest.fixture
async def http(bbs: RunningBBS) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=bbs.url, timeout=10) as client:
        yield client


async def _names(bbs: RunningBBS) -> set[str]:
    return {d.domain for d in await bbs.client.domains()}


async def test_ping(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    resp = await http.get("/v1/ping")
    assert resp.status_code == 200 and resp.json() == {"available": True}
    assert await bbs.client.ping() is True


async def test_upsert_answers_the_domain_and_lists_it(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    assert (await http.get("/v1/domains")).json() == []
    resp = await http.put("/v1/domains/cf-apps", json={"ttl": 120})
    assert resp.status_code == 200
    body = resp.json()
    assert body["domain"] == "cf-apps" and body["ttl"] == 120
    assert body["expires_at"] > time.time_ns() + 100 * 10**9
    resp = await http.put("/v1/domains/cf-tasks", json={})  # ttl defaults to 0: forever
    assert resp.status_code == 200 and resp.json() == {"domain": "cf-tasks", "ttl": 0, "expires_at": 0}
    listed = {d["domain"]: d for d in (await http.get("/v1/domains")).json()}
    assert set(listed) == {"cf-apps", "cf-tasks"}
    assert listed["cf-apps"]["ttl"] == 120


async def test_ttl_zero_has_no_lease_and_ttl_one_expires(bbs: RunningBBS, etcd: Etcd) -> None:
    await bbs.client.upsert_domain("forever", 0)
    await bbs.client.upsert_domain("brief", 1)
    forever = await etcd.get(bbs.bbs.keys.domain("forever"))
    brief = await etcd.get(bbs.bbs.keys.domain("brief"))
    assert forever is not None and forever.lease == 0
    assert brief is not None and brief.lease != 0
    assert await _names(bbs) == {"forever", "brief"}

    deadline = time.monotonic() + 6
    while "brief" in await _names(bbs):
        assert time.monotonic() < deadline, "a ttl=1 domain did not expire"
        await asyncio.sleep(0.1)
    assert await _names(bbs) == {"forever"}


async def test_upsert_refreshes_the_ttl_and_replaces_the_lease(bbs: RunningBBS, etcd: Etcd) -> None:
    start = time.monotonic()
    await bbs.client.upsert_domain("refreshed", 1)
    first = await etcd.get(bbs.bbs.keys.domain("refreshed"))
    assert first is not None
    await bbs.client.upsert_domain("refreshed", 30)  # the client's periodic re-upsert
    second = await etcd.get(bbs.bbs.keys.domain("refreshed"))
    assert second is not None and second.lease not in (0, first.lease)
    assert [d.ttl for d in await bbs.client.domains()] == [30]
    # well past the first TTL (etcd rounds 1 s up to its 2 s minimum and checks expiry every
    # 0.5 s): the domain lives on only thanks to the refresh
    await asyncio.sleep(max(0.0, 3.5 - (time.monotonic() - start)))
    assert "refreshed" in await _names(bbs)

    # upserting with ttl 0 detaches it from any lease: it stays for good
    await bbs.client.upsert_domain("refreshed", 0)
    third = await etcd.get(bbs.bbs.keys.domain("refreshed"))
    assert third is not None and third.lease == 0
    assert [d.ttl for d in await bbs.client.domains()] == [0]


@pytest.mark.parametrize("path,body", [
    ("/v1/domains/ok", {"ttl": -1}),
    ("/v1/domains/ok", {"ttl": "ten"}),
    ("/v1/domains/ok", {"ttl": 5, "extra": True}),
    ("/v1/domains/ok", {"ttl": 10**12}),
    ("/v1/domains/a%20b", {"ttl": 5}),
])
async def test_bad_domain_upserts_are_422_and_store_nothing(bbs: RunningBBS, http: httpx.AsyncClient,
                                                           path: str, body: dict[str, object]) -> None:
    resp = await http.put(path, json=body)
    assert resp.status_code == 422
    assert resp.json()["type"] == "InvalidRequest"
    assert await _names(bbs) == set()


async def test_cells_lists_registered_presences(bbs: RunningBBS, etcd: Etcd, http: httpx.AsyncClient) -> None:
    assert (await http.get("/v1/cells")).json() == []
    await bbs.add_cell("cell-a", etcd)
    await bbs.add_cell("cell-b", etcd)
    cells = {c["cell_id"]: c for c in (await http.get("/v1/cells")).json()}
    assert set(cells) == {"cell-a", "cell-b"}
    assert cells["cell-a"]["capacity"] == {"memory_mb": 1024, "disk_mb": 1024, "containers": 10}
    assert cells["cell-b"]["rep_url"].endswith("/cell-b")
    # a presence that disappears (its rep's lease ended) is no longer listed
    await etcd.delete(bbs.bbs.keys.cell("cell-a"))
    assert [c.cell_id for c in await bbs.client.cells()] == ["cell-b"]


async def test_an_invalid_presence_document_is_skipped_not_a_500(bbs: RunningBBS, etcd: Etcd,
                                                                 http: httpx.AsyncClient) -> None:
    await bbs.add_cell("cell-good", etcd)
    await etcd.put(bbs.bbs.keys.cell("cell-bad"), b"{not json")
    resp = await http.get("/v1/cells")
    assert resp.status_code == 200
    assert [c["cell_id"] for c in resp.json()] == ["cell-good"]


async def test_unknown_route_is_a_typed_404_and_wrong_method_a_typed_405(http: httpx.AsyncClient) -> None:
    resp = await http.get("/v1/nothing-here")
    assert resp.status_code == 404 and resp.json()["type"] == "ResourceNotFound"
    resp = await http.post("/v1/ping")
    assert resp.status_code == 405 and resp.json()["type"] == "MethodNotAllowed"
    resp = await http.put("/v1/tasks", json={})
    assert resp.status_code == 405 and set(resp.json()) >= {"type", "message"}
