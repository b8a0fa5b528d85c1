"""ActualLRP endpoints of a real BBS over real etcd: listing filters, the cell verbs (claim,
start, crash, fail, remove), retire, evacuation verbs, concurrent claims and the crash
restart policy (reference §2.1–§2.5)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from control.kit.etcd import Etcd
from control.models.actual_lrp import ActualLRP, Presence
from control.models.errors import CannotBeClaimed, CannotBeCrashed, NotFound
from tests.component.conftest import RunningBBS
from tests.factories import desired_lrp, start_body


@pytest.fixture
async def http(bbs: RunningBBS) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=bbs.url, timeout=10) as client:
        yield client


async def _desire(bbs: RunningBBS, instances: int = 1, **overrides: object) -> str:
    body = desired_lrp(instances=instances, **overrides)
    await bbs.client.desire_lrp(body)
    return str(body["process_guid"])


async def _rows(bbs: RunningBBS, guid: str, index: int) -> dict[str, ActualLRP]:
    return {a.presence.value: a for a in await bbs.client.actual_lrps(process_guid=guid, index=index)}


async def _one(bbs: RunningBBS, guid: str, index: int = 0) -> ActualLRP:
    rows = await _rows(bbs, guid, index)
    assert set(rows) == {"ORDINARY"}, rows
    return rows["ORDINARY"]


# ---- listing ------------------------------------------------------------------------------------

async def test_list_filters_by_domain_cell_process_guid_and_index(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    a = await _desire(bbs, 3, domain="dom-a")
    b = await _desire(bbs, 2, domain="dom-b")
    await bbs.client.claim(a, 1, "ig-a1", "cell-x")
    await bbs.client.start(b, 0, "ig-b0", "cell-x", "10.0.0.9")
    await bbs.client.claim(b, 1, "ig-b1", "cell-y")

    def keys(resp: httpx.Response) -> set[tuple[str, int]]:
        assert resp.status_code == 200
        return {(d["process_guid"], d["index"]) for d in resp.json()}

    assert keys(await http.get("/v1/actual_lrps")) == {(a, 0), (a, 1), (a, 2), (b, 0), (b, 1)}
    assert keys(await http.get("/v1/actual_lrps", params={"domain": "dom-b"})) == {(b, 0), (b, 1)}
    assert keys(await http.get("/v1/actual_lrps", params={"cell_id": "cell-x"})) == {(a, 1), (b, 0)}
    assert keys(await http.get("/v1/actual_lrps", params={"process_guid": a})) == {(a, 0), (a, 1), (a, 2)}
    assert keys(await http.get("/v1/actual_lrps", params={"process_guid": a, "index": 2})) == {(a, 2)}
    assert keys(await http.get("/v1/actual_lrps", params={"index": 1})) == {(a, 1), (b, 1)}
    assert keys(await http.get("/v1/actual_lrps", params={"domain": "dom-a", "cell_id": "cell-x"})) == {(a, 1)}
    assert keys(await http.get("/v1/actual_lrps", params={"cell_id": "cell-none"})) == set()


async def test_new_instances_are_unclaimed_with_their_own_epoch(bbs: RunningBBS) -> None:
    guid = await _desire(bbs, 2, domain="d1")
    rows = await bbs.client.actual_lrps(process_guid=guid)
    for row in rows:
        assert row.state == "UNCLAIMED" and row.domain == "d1" and row.presence == "ORDINARY"
        assert not row.instance_guid and not row.cell_id and row.crash_count == 0
        assert row.modification_tag.index == 0 and row.modification_tag.epoch
    assert rows[0].modification_tag.epoch != rows[1].modification_tag.epoch


# ---- claim / start ------------------------------------------------------------------------------

async def test_claim_then_start_then_heartbeat(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs)
    resp = await http.post(f"/v1/actual_lrps/{guid}/0/claim", json={"instance_guid": "ig-1", "cell_id": "cell-1"})
    assert resp.status_code == 204
    claimed = await _one(bbs, guid)
    assert (claimed.state, claimed.instance_guid, claimed.cell_id) == ("CLAIMED", "ig-1", "cell-1")
    assert claimed.modification_tag.index == 1

    # re-claim by the same incarnation is idempotent: no write
    assert (await http.post(f"/v1/actual_lrps/{guid}/0/claim",
                            json={"instance_guid": "ig-1", "cell_id": "cell-1"})).status_code == 204
    assert (await _one(bbs, guid)).modification_tag == claimed.modification_tag

    resp = await http.post(f"/v1/actual_lrps/{guid}/0/start", json=start_body("ig-1", "cell-1"))
    assert resp.status_code == 204
    running = await _one(bbs, guid)
    assert running.state == "RUNNING" and running.address == "10.0.0.1"
    assert running.instance_address == "10.255.0.2" and running.routable is True
    assert [(p.container_port, p.host_port) for p in running.ports] == [(8080, 61001)]
    assert running.modification_tag.index == 2

    # the same report again changes nothing (heartbeat); new net info is written
    await http.post(f"/v1/actual_lrps/{guid}/0/start", json=start_body("ig-1", "cell-1"))
    assert (await _one(bbs, guid)).modification_tag.index == 2
    await http.post(f"/v1/actual_lrps/{guid}/0/start", json=start_body("ig-1", "cell-1", address="10.0.0.7"))
    moved = await _one(bbs, guid)
    assert moved.address == "10.0.0.7" and moved.modification_tag.index == 3


async def test_claim_by_another_cell_is_409_cannot_be_claimed(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs)
    await bbs.client.claim(guid, 0, "ig-1", "cell-1")
    resp = await http.post(f"/v1/actual_lrps/{guid}/0/claim", json={"instance_guid": "ig-2", "cell_id": "cell-2"})
    assert resp.status_code == 409
    assert resp.json()["type"] == "ActualLRPCannotBeClaimed"
    assert (await _one(bbs, guid)).cell_id == "cell-1"


async def test_start_by_another_cell_of_a_running_instance_is_409(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs)
    await bbs.client.start(guid, 0, "ig-1", "cell-1", "10.0.0.1")
    resp = await http.post(f"/v1/actual_lrps/{guid}/0/start", json=start_body("ig-2", "cell-2"))
    assert resp.status_code == 409
    assert resp.json()["type"] == "ActualLRPCannotBeStarted"
    assert (await _one(bbs, guid)).cell_id == "cell-1"


async def test_start_recreates_a_lost_row_but_not_for_an_unknown_lrp(bbs: RunningBBS, etcd: Etcd,
                                                                      http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs, domain="lost-dom")
    await etcd.delete(bbs.bbs.keys.actual_lrp(guid, 0, Presence.ORDINARY))  # the BBS lost the row
    assert (await http.post(f"/v1/actual_lrps/{guid}/0/start", json=start_body("ig-9", "cell-9"))).status_code == 204
    row = await _one(bbs, guid)
    assert (row.state, row.instance_guid, row.domain) == ("RUNNING", "ig-9", "lost-dom")

    resp = await http.post("/v1/actual_lrps/no-such-lrp/0/start", json=start_body())
    assert resp.status_code == 404 and resp.json()["type"] == "ResourceNotFound"


@pytest.mark.parametrize("verb,body", [
    ("claim", {"instance_guid": "ig", "cell_id": "c"}),
    ("crash", {"instance_guid": "ig", "cell_id": "c", "error_message": "boom"}),
    ("fail", {"error_message": "no room"}),
    ("remove", {"instance_guid": "ig", "cell_id": "c"}),
    ("retire", None),
    ("remove_evacuating", {"instance_guid": "ig", "cell_id": "c"}),
])
async def test_verbs_on_unknown_instances_are_404(bbs: RunningBBS, http: httpx.AsyncClient, verb: str,
                                                   body: dict[str, str] | None) -> None:
    guid = await _desire(bbs, 1)
    for path in (f"/v1/actual_lrps/no-such-lrp/0/{verb}", f"/v1/actual_lrps/{guid}/7/{verb}"):
        resp = await http.post(path, json=body)
        assert resp.status_code == 404, (path, resp.text)
        assert resp.json()["type"] == "ResourceNotFound"


async def test_two_concurrent_claims_exactly_one_wins(bbs: RunningBBS) -> None:
    for round_ in range(20):
        guid = await _desire(bbs)
        results = await asyncio.gather(
            bbs.client.claim(guid, 0, f"ig-a-{round_}", "cell-a"),
            bbs.client.claim(guid, 0, f"ig-b-{round_}", "cell-b"),
            return_exceptions=True)
        winners = [i for i, r in enumerate(results) if r is None]
        losers = [r for r in results if r is not None]
        assert len(winners) == 1, results
        assert len(losers) == 1 and isinstance(losers[0], CannotBeClaimed), losers
        row = await _one(bbs, guid)
        assert row.state == "CLAIMED"
        assert row.cell_id == ("cell-a", "cell-b")[winners[0]]
        assert row.modification_tag.index == 1  # one write, not two


# ---- crash --------------------------------------------------------------------------------------

async def test_crash_policy_two_immediate_restarts_then_crashed(clocked_bbs: RunningBBS) -> None:
    bbs = clocked_bbs
    assert bbs.clock is not None
    guid = await _desire(bbs)
    assert bbs.auctioneer.lrp_indices(guid) == [0]
    for count in (1, 2):
        await bbs.client.start(guid, 0, f"ig-{count}", "cell-1", "10.0.0.1")
        bbs.clock.advance(10)
        await bbs.client.crash(guid, 0, f"ig-{count}", "cell-1", f"exit {count}")
        row = await _one(bbs, guid)
        assert (row.state, row.crash_count, row.crash_reason) == ("UNCLAIMED", count, f"exit {count}")
        assert not row.instance_guid and not row.cell_id and not row.address and not row.ports
        assert row.since == bbs.clock.now_ns()
        assert len(bbs.auctioneer.lrp_batches) == 1 + count  # restarted at once
        assert bbs.auctioneer.lrp_batches[-1][0].indices == [0]

    await bbs.client.start(guid, 0, "ig-3", "cell-1", "10.0.0.1")
    await bbs.client.crash(guid, 0, "ig-3", "cell-1", "exit 3")
    row = await _one(bbs, guid)
    assert (row.state, row.crash_count) == ("CRASHED", 3)
    assert len(bbs.auctioneer.lrp_batches) == 3  # no auction: the converger's backoff decides


async def test_a_crash_after_five_minutes_running_resets_the_count(clocked_bbs: RunningBBS) -> None:
    bbs = clocked_bbs
    assert bbs.clock is not None
    guid = await _desire(bbs)
    for n in range(2):
        await bbs.client.start(guid, 0, f"ig-{n}", "cell-1", "10.0.0.1")
        await bbs.client.crash(guid, 0, f"ig-{n}", "cell-1", "boom")
    assert (await _one(bbs, guid)).crash_count == 2
    await bbs.client.start(guid, 0, "ig-long", "cell-1", "10.0.0.1")
    bbs.clock.advance(5 * 60 + 1)
    await bbs.client.crash(guid, 0, "ig-long", "cell-1", "boom")
    row = await _one(bbs, guid)
    assert (row.state, row.crash_count) == ("UNCLAIMED", 1)


async def test_crash_from_another_incarnation_is_409(bbs: RunningBBS) -> None:
    guid = await _desire(bbs)
    await bbs.client.start(guid, 0, "ig-1", "cell-1", "10.0.0.1")
    with pytest.raises(CannotBeCrashed):
        await bbs.client.crash(guid, 0, "ig-other", "cell-1", "boom")
    assert (await _one(bbs, guid)).state == "RUNNING"
    unclaimed = await _desire(bbs)
    with pytest.raises(CannotBeCrashed):  # an UNCLAIMED instance cannot crash either
        await bbs.client.crash(unclaimed, 0, "ig-1", "cell-1", "boom")
    assert (await _one(bbs, unclaimed)).state == "UNCLAIMED"


async def test_crash_reason_is_truncated_to_1024_characters(bbs: RunningBBS) -> None:
    guid = await _desire(bbs)
    await bbs.client.start(guid, 0, "ig-1", "cell-1", "10.0.0.1")
    await bbs.client.crash(guid, 0, "ig-1", "cell-1", "x" * 5000)
    assert len((await _one(bbs, guid)).crash_reason) == 1024


# ---- fail / remove ------------------------------------------------------------------------------

async def test_fail_records_the_placement_error_only_while_unclaimed(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs)
    resp = await http.post(f"/v1/actual_lrps/{guid}/0/fail", json={"error_message": "insufficient resources"})
    assert resp.status_code == 204
    row = await _one(bbs, guid)
    assert (row.state, row.placement_error) == ("UNCLAIMED", "insufficient resources")

    await bbs.client.claim(guid, 0, "ig-1", "cell-1")
    assert (await _one(bbs, guid)).placement_error == ""  # cleared on claim
    resp = await http.post(f"/v1/actual_lrps/{guid}/0/fail", json={"error_message": "late"})
    assert resp.status_code == 409 and resp.json()["type"] == "ActualLRPCannotBeFailed"


async def test_remove_deletes_only_for_the_owning_incarnation(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs)
    await bbs.client.start(guid, 0, "ig-1", "cell-1", "10.0.0.1")
    resp = await http.post(f"/v1/actual_lrps/{guid}/0/remove", json={"instance_guid": "ig-2", "cell_id": "cell-2"})
    assert resp.status_code == 409 and resp.json()["type"] == "ActualLRPCannotBeRemoved"
    assert (await _one(bbs, guid)).state == "RUNNING"
    resp = await http.post(f"/v1/actual_lrps/{guid}/0/remove", json={"instance_guid": "ig-1", "cell_id": "cell-1"})
    assert resp.status_code == 204
    assert await bbs.client.actual_lrps(process_guid=guid) == []


# ---- retire -------------------------------------------------------------------------------------

async def test_retire_deletes_unclaimed_and_crashed_rows(clocked_bbs: RunningBBS) -> None:
    bbs = clocked_bbs
    guid = await _desire(bbs, 2)
    for n in range(3):  # index 1 ends CRASHED
        await bbs.client.start(guid, 1, f"ig-{n}", "cell-1", "10.0.0.1")
        await bbs.client.crash(guid, 1, f"ig-{n}", "cell-1", "boom")
    assert (await _one(bbs, guid, 1)).state == "CRASHED"
    async with httpx.AsyncClient(base_url=bbs.url) as client:
        assert (await client.post(f"/v1/actual_lrps/{guid}/0/retire")).status_code == 204
        assert (await client.post(f"/v1/actual_lrps/{guid}/1/retire")).status_code == 204
    assert await bbs.client.actual_lrps(process_guid=guid) == []
    assert bbs.reps.stops == []
    assert (await bbs.client.desired_lrp(guid)).instances == 2  # the desired count is unchanged


async def test_retire_asks_the_rep_to_stop_a_running_instance_on_a_live_cell(bbs: RunningBBS, etcd: Etcd) -> None:
    guid = await _desire(bbs)
    await bbs.add_cell("cell-1", etcd)
    await bbs.client.start(guid, 0, "ig-1", "cell-1", "10.0.0.1")
    await bbs.client.retire_actual_lrp(guid, 0)
    assert bbs.reps.stops == [("cell-1", guid, "ig-1")]
    assert (await _one(bbs, guid)).state == "RUNNING"  # the rep removes it when stopped


async def test_retire_deletes_a_claimed_instance_whose_cell_is_gone(bbs: RunningBBS) -> None:
    guid = await _desire(bbs)
    await bbs.client.claim(guid, 0, "ig-1", "cell-gone")
    await bbs.client.retire_actual_lrp(guid, 0)
    assert await bbs.client.actual_lrps(process_guid=guid) == []
    assert bbs.reps.stops == []


async def test_retire_fails_with_409_when_the_rep_never_answers(bbs: RunningBBS, etcd: Etcd,
                                                                 http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs)
    await bbs.add_cell("cell-1", etcd)
    await bbs.client.claim(guid, 0, "ig-1", "cell-1")
    bbs.reps.fail = True
    resp = await http.post(f"/v1/actual_lrps/{guid}/0/retire")
    assert resp.status_code == 409 and resp.json()["type"] == "ResourceConflict"
    assert (await _one(bbs, guid)).state == "CLAIMED"


# ---- evacuation ---------------------------------------------------------------------------------

async def test_evacuate_claimed_unclaims_and_reauctions(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs)
    await bbs.client.claim(guid, 0, "ig-1", "cell-1")
    resp = await http.post(f"/v1/actual_lrps/{guid}/0/evacuate_claimed", json={"instance_guid": "ig-1", "cell_id": "cell-1"})
    assert resp.status_code == 200 and resp.json() == {"keep_container": False}
    assert (await _one(bbs, guid)).state == "UNCLAIMED"
    assert bbs.auctioneer.lrp_indices(guid) == [0, 0]


async def test_evacuate_running_keeps_an_evacuating_copy_and_the_replacement_removes_it(
        bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs)
    await bbs.client.start(guid, 0, "ig-1", "cell-1", "10.0.0.1")
    resp = await http.post(f"/v1/actual_lrps/{guid}/0/evacuate_running", json=start_body("ig-1", "cell-1"))
    assert resp.status_code == 200 and resp.json() == {"keep_container": True}
    rows = await _rows(bbs, guid, 0)
    assert rows["ORDINARY"].state == "UNCLAIMED"
    evac = rows["EVACUATING"]
    assert (evac.state, evac.instance_guid, evac.cell_id, evac.address) == ("RUNNING", "ig-1", "cell-1", "10.0.0.1")
    assert bbs.auctioneer.lrp_indices(guid) == [0, 0]

    # the replacement starting elsewhere deletes the evacuating row
    await bbs.client.start(guid, 0, "ig-2", "cell-2", "10.0.0.2")
    rows = await _rows(bbs, guid, 0)
    assert set(rows) == {"ORDINARY"} and rows["ORDINARY"].cell_id == "cell-2"


async def test_remove_evacuating_needs_the_evacuating_incarnation(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs)
    await bbs.client.start(guid, 0, "ig-1", "cell-1", "10.0.0.1")
    await bbs.client.actual_lrp_call(guid, 0, "evacuate_running", start_body("ig-1", "cell-1"))
    resp = await http.post(f"/v1/actual_lrps/{guid}/0/remove_evacuating", json={"instance_guid": "ig-x", "cell_id": "cell-1"})
    assert resp.status_code == 409 and resp.json()["type"] == "ActualLRPCannotBeRemoved"
    resp = await http.post(f"/v1/actual_lrps/{guid}/0/remove_evacuating", json={"instance_guid": "ig-1", "cell_id": "cell-1"})
    assert resp.status_code == 204
    assert set(await _rows(bbs, guid, 0)) == {"ORDINARY"}


async def test_evacuate_stopped_deletes_the_row(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs)
    await bbs.client.start(guid, 0, "ig-1", "cell-1", "10.0.0.1")
    resp = await http.post(f"/v1/actual_lrps/{guid}/0/evacuate_stopped", json={"instance_guid": "ig-1", "cell_id": "cell-1"})
    assert resp.status_code == 200 and resp.json() == {"keep_container": False}
    assert await bbs.client.actual_lrps(process_guid=guid) == []


async def test_evacuate_crashed_runs_the_crash_logic_without_an_auction(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs)
    await bbs.client.start(guid, 0, "ig-1", "cell-1", "10.0.0.1")
    resp = await http.post(f"/v1/actual_lrps/{guid}/0/evacuate_crashed",
                           json={"instance_guid": "ig-1", "cell_id": "cell-1", "error_message": "oom"})
    assert resp.status_code == 200 and resp.json() == {"keep_container": False}
    row = await _one(bbs, guid)
    assert (row.state, row.crash_count, row.crash_reason) == ("UNCLAIMED", 1, "oom")
    assert bbs.auctioneer.lrp_indices(guid) == [0]  # only the initial auction


async def test_unknown_verb_is_404(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs)
    resp = await http.post(f"/v1/actual_lrps/{guid}/0/explode", json={})
    assert resp.status_code == 404
    assert resp.json()["type"] == "ResourceNotFound"
    with pytest.raises(NotFound):
        await bbs.client.actual_lrp_call(guid, 0, "explode", {})
