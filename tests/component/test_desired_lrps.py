"""DesiredLRP endpoints of a real BBS over real etcd: desire, read, list, scheduling infos,
update (scale up, scale down, routes), remove (reference §1.1, §2.2)."""
from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from control.kit.etcd import Etcd
from control.models.errors import AlreadyExists, NotFound
from tests.component.conftest import RunningBBS
from tests.factories import desired_lrp


@pytest.fixture
async def http(bbs: RunningBBS) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=bbs.url, timeout=10) as client:
        yield client


async def _states(bbs: RunningBBS, guid: str) -> dict[int, str]:
    return {a.index: a.state for a in await bbs.client.actual_lrps(process_guid=guid)}


async def test_desire_answers_201_with_the_stored_lrp_and_get_returns_it(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    body = desired_lrp(instances=2, annotation="hello", env=[{"name": "A", "value": "1"}])
    resp = await http.post("/v1/desired_lrps", json=body)
    assert resp.status_code == 201
    created = resp.json()
    assert created["process_guid"] == body["process_guid"]
    assert created["modification_tag"]["index"] == 0 and created["modification_tag"]["epoch"]

    got = await http.get(f"/v1/desired_lrps/{body['process_guid']}")
    assert got.status_code == 200
    doc = got.json()
    # every field of the request survives the schedule/run split in etcd
    for field in ("domain", "rootfs", "instances", "ports", "routes", "annotation", "env", "memory_mb"):
        assert doc[field] == body[field], field
    run = doc["action"]["run"]  # defaults are filled in; what was sent is kept
    assert {k: run[k] for k in ("path", "args", "user")} == body["action"]["run"]
    assert doc["modification_tag"] == created["modification_tag"]


async def test_desiring_an_existing_guid_is_409_and_changes_nothing(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    body = desired_lrp(instances=1)
    await bbs.client.desire_lrp(body)
    resp = await http.post("/v1/desired_lrps", json={**body, "instances": 5, "annotation": "second"})
    assert resp.status_code == 409
    assert resp.json()["type"] == "ResourceExists"
    with pytest.raises(AlreadyExists):
        await bbs.client.desire_lrp(body)
    stored = await bbs.client.desired_lrp(body["process_guid"])
    assert stored.instances == 1 and stored.annotation == ""
    assert await _states(bbs, body["process_guid"]) == {0: "UNCLAIMED"}
    assert len(bbs.auctioneer.lrp_batches) == 1


async def test_list_filters_by_domain(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    a = desired_lrp(domain="domain-a")
    b = desired_lrp(domain="domain-b")
    c = desired_lrp(domain="domain-a")
    for body in (a, b, c):
        await bbs.client.desire_lrp(body)
    everything = (await http.get("/v1/desired_lrps")).json()
    assert {d["process_guid"] for d in everything} == {a["process_guid"], b["process_guid"], c["process_guid"]}
    only_a = (await http.get("/v1/desired_lrps", params={"domain": "domain-a"})).json()
    assert {d["process_guid"] for d in only_a} == {a["process_guid"], c["process_guid"]}
    assert (await http.get("/v1/desired_lrps", params={"domain": "nope"})).json() == []


async def test_scheduling_infos_carry_scheduling_fields_only_and_filter_by_domain(
        bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    a = desired_lrp(domain="sched-a", instances=3, placement_tags=["blue"])
    b = desired_lrp(domain="sched-b")
    await bbs.client.desire_lrp(a)
    await bbs.client.desire_lrp(b)
    infos = (await http.get("/v1/scheduling_infos")).json()
    by_guid = {i["process_guid"]: i for i in infos}
    assert set(by_guid) == {a["process_guid"], b["process_guid"]}
    info = by_guid[a["process_guid"]]
    assert info["instances"] == 3 and info["placement_tags"] == ["blue"] and info["memory_mb"] == 64
    assert "action" not in info and "env" not in info  # the run half stays out
    filtered = (await http.get("/v1/scheduling_infos", params={"domain": "sched-b"})).json()
    assert [i["process_guid"] for i in filtered] == [b["process_guid"]]


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_unknown_guid_is_404_resource_not_found(bbs: RunningBBS, http: httpx.AsyncClient, method: str) -> None:
    kwargs = {"json": {"instances": 2}} if method == "PATCH" else {}
    resp = await http.request(method, "/v1/desired_lrps/no-such-guid", **kwargs)
    assert resp.status_code == 404
    assert resp.json()["type"] == "ResourceNotFound"
    assert "no-such-guid" in resp.json()["message"]


async def test_zero_instances_creates_no_rows_and_no_auction(bbs: RunningBBS) -> None:
    body = desired_lrp(instances=0)
    await bbs.client.desire_lrp(body)
    assert await bbs.client.actual_lrps(process_guid=body["process_guid"]) == []
    assert bbs.auctioneer.lrp_batches == []


async def test_scale_up_creates_only_new_unclaimed_rows_and_one_auction_for_them(bbs: RunningBBS) -> None:
    body = desired_lrp(instances=2)
    guid = body["process_guid"]
    await bbs.client.desire_lrp(body)
    await bbs.client.claim(guid, 0, "ig-0", "cell-1")
    before = {a.index: a for a in await bbs.client.actual_lrps(process_guid=guid)}

    updated = await bbs.client.update_desired_lrp(guid, {"instances": 5})
    assert updated.instances == 5
    assert updated.modification_tag is not None and updated.modification_tag.index == 1

    after = {a.index: a for a in await bbs.client.actual_lrps(process_guid=guid)}
    assert sorted(after) == [0, 1, 2, 3, 4]
    assert {after[i].state for i in (2, 3, 4)} == {"UNCLAIMED"}
    assert after[0] == before[0] and after[1] == before[1]  # untouched
    assert len({after[i].modification_tag.epoch for i in range(5)}) == 5  # each row its own epoch
    assert len(bbs.auctioneer.lrp_batches) == 2
    (request,) = bbs.auctioneer.lrp_batches[1]
    assert request.process_guid == guid and request.indices == [2, 3, 4]
    assert request.resource.memory_mb == 64 and request.rootfs == body["rootfs"]


async def test_scale_down_deletes_unclaimed_stops_on_live_cells_and_deletes_on_missing_cells(
        bbs: RunningBBS, etcd: Etcd) -> None:
    body = desired_lrp(instances=5)
    guid = body["process_guid"]
    await bbs.client.desire_lrp(body)
    await bbs.add_cell("cell-live", etcd)
    await bbs.client.claim(guid, 2, "ig-2", "cell-live")                      # CLAIMED, live cell
    await bbs.client.start(guid, 3, "ig-3", "cell-live", "10.0.0.3")          # RUNNING, live cell
    await bbs.client.start(guid, 4, "ig-4", "cell-gone", "10.0.0.4")          # RUNNING, no presence

    await bbs.client.update_desired_lrp(guid, {"instances": 1})

    states = await _states(bbs, guid)
    # index 1 (UNCLAIMED) and index 4 (cell not registered) are deleted; the live cell is asked
    # to stop 2 and 3, whose rows stay until the rep removes them.
    assert states == {0: "UNCLAIMED", 2: "CLAIMED", 3: "RUNNING"}
    assert sorted(bbs.reps.stops) == [("cell-live", guid, "ig-2"), ("cell-live", guid, "ig-3")]
    assert len(bbs.auctioneer.lrp_batches) == 1  # scaling down auctions nothing


async def test_update_changes_routes_and_annotation_and_bumps_the_tag(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    body = desired_lrp()
    guid = body["process_guid"]
    await bbs.client.desire_lrp(body)
    routes = {"cf-router": [{"hostnames": ["new.example.com"], "port": 8080}], "custom": {"x": 1}}
    resp = await http.patch(f"/v1/desired_lrps/{guid}", json={"routes": routes, "annotation": "v2"})
    assert resp.status_code == 200
    assert resp.json()["routes"] == routes and resp.json()["annotation"] == "v2"
    stored = await bbs.client.desired_lrp(guid)
    assert stored.routes == routes and stored.annotation == "v2" and stored.instances == 1
    assert stored.modification_tag is not None and stored.modification_tag.index == 1
    assert len(bbs.auctioneer.lrp_batches) == 1  # no new instances, no auction


async def test_update_of_image_credentials_is_stored(bbs: RunningBBS) -> None:
    body = desired_lrp(rootfs="docker:///org/img#v1", image_username="u1", image_password="p1")
    await bbs.client.desire_lrp(body)
    await bbs.client.update_desired_lrp(body["process_guid"], {"image_username": "u2", "image_password": "p2"})
    stored = await bbs.client.desired_lrp(body["process_guid"])
    assert (stored.image_username, stored.image_password) == ("u2", "p2")


async def test_update_cannot_change_fields_that_need_a_restart(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    body = desired_lrp()
    await bbs.client.desire_lrp(body)
    resp = await http.patch(f"/v1/desired_lrps/{body['process_guid']}", json={"rootfs": "preloaded:other"})
    assert resp.status_code == 422
    assert resp.json()["type"] == "InvalidRequest"
    assert (await bbs.client.desired_lrp(body["process_guid"])).rootfs == body["rootfs"]


async def test_remove_deletes_the_lrp_and_its_instances_and_stops_running_ones(bbs: RunningBBS, etcd: Etcd,
                                                                                http: httpx.AsyncClient) -> None:
    body = desired_lrp(instances=3)
    keep = desired_lrp(instances=1)
    guid = body["process_guid"]
    await bbs.client.desire_lrp(body)
    await bbs.client.desire_lrp(keep)
    await bbs.add_cell("cell-r", etcd)
    await bbs.client.start(guid, 1, "ig-1", "cell-r", "10.0.0.1")

    resp = await http.delete(f"/v1/desired_lrps/{guid}")
    assert resp.status_code == 204
    with pytest.raises(NotFound):
        await bbs.client.desired_lrp(guid)
    assert [d.process_guid for d in await bbs.client.desired_lrps()] == [keep["process_guid"]]
    # UNCLAIMED rows are gone; the running one waits for its rep, which was told to stop it
    assert await _states(bbs, guid) == {1: "RUNNING"}
    assert bbs.reps.stops == [("cell-r", guid, "ig-1")]
    assert await _states(bbs, keep["process_guid"]) == {0: "UNCLAIMED"}
    # removing twice is 404
    assert (await http.delete(f"/v1/desired_lrps/{guid}")).status_code == 404


async def test_desire_after_remove_reuses_the_guid(bbs: RunningBBS) -> None:
    body = desired_lrp(instances=2)
    await bbs.client.desire_lrp(body)
    await bbs.client.remove_desired_lrp(body["process_guid"])
    assert await bbs.client.actual_lrps(process_guid=body["process_guid"]) == []
    again = await bbs.client.desire_lrp({**body, "instances": 1})
    assert again.instances == 1
    assert await _states(bbs, body["process_guid"]) == {0: "UNCLAIMED"}
