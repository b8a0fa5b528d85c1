"""Task endpoints of a real BBS over real etcd: desire, list, start, complete, reject, cancel,
fail, resolving, delete, and completion callbacks delivered to a real local HTTP receiver
(reference §1.3, §2.7)."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from control.kit.etcd import Etcd
from control.models.errors import AlreadyExists, InvalidTransition, NotFound, RunningOnDifferentCell
from tests.component.conftest import RunningBBS, running_bbs
from tests.factories import task_request
from tests.servers import EtcdServer


@pytest.fixture
async def http(bbs: RunningBBS) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=bbs.url, timeout=10) as client:
        yield client


async def _desire(bbs: RunningBBS, **overrides: Any) -> str:
    body = task_request(**overrides)
    await bbs.client.desire_task(body["task_guid"], body["domain"], body["task_definition"])
    return str(body["task_guid"])


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# ---- desire, read, list -------------------------------------------------------------------------

async def test_desire_answers_201_pending_and_requests_an_auction(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    body = task_request(domain="tasks-d", task_definition={"memory_mb": 128, "disk_mb": 256, "placement_tags": ["t"]})
    resp = await http.post("/v1/tasks", json=body)
    assert resp.status_code == 201
    task = resp.json()
    assert task["task_guid"] == body["task_guid"] and task["state"] == "PENDING"
    assert task["created_at"] > 0 and task["created_at"] == task["updated_at"]
    assert task["rejection_count"] == 0 and task["failed"] is False

    assert len(bbs.auctioneer.task_batches) == 1
    (request,) = bbs.auctioneer.task_batches[0]
    assert request.task_guid == body["task_guid"] and request.domain == "tasks-d"
    assert request.rootfs == "preloaded:busybox" and request.placement_tags == ["t"]
    assert (request.resource.memory_mb, request.resource.disk_mb) == (128, 256)

    got = (await http.get(f"/v1/tasks/{body['task_guid']}")).json()
    assert got["task_definition"]["result_file"] == "/tmp/result" and got["domain"] == "tasks-d"


async def test_desiring_an_existing_task_is_409_and_changes_nothing(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    body = task_request()
    await http.post("/v1/tasks", json=body)
    again = {**body, "domain": "other-domain"}
    resp = await http.post("/v1/tasks", json=again)
    assert resp.status_code == 409 and resp.json()["type"] == "ResourceExists"
    with pytest.raises(AlreadyExists):
        await bbs.client.desire_task(body["task_guid"], "x", body["task_definition"])
    assert (await bbs.client.task(body["task_guid"])).domain == "test-domain"
    assert len(bbs.auctioneer.task_batches) == 1


async def test_list_filters_by_domain_and_cell(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    a = await _desire(bbs, domain="ta")
    b = await _desire(bbs, domain="tb")
    c = await _desire(bbs, domain="ta")
    await bbs.client.start_task(a, "cell-1")
    await bbs.client.start_task(b, "cell-1")

    def guids(resp: httpx.Response) -> set[str]:
        assert resp.status_code == 200
        return {t["task_guid"] for t in resp.json()}

    assert guids(await http.get("/v1/tasks")) == {a, b, c}
    assert guids(await http.get("/v1/tasks", params={"domain": "ta"})) == {a, c}
    assert guids(await http.get("/v1/tasks", params={"cell_id": "cell-1"})) == {a, b}
    assert guids(await http.get("/v1/tasks", params={"domain": "ta", "cell_id": "cell-1"})) == {a}
    assert guids(await http.get("/v1/tasks", params={"domain": "none"})) == set()


@pytest.mark.parametrize("method,path,body", [
    ("GET", "/v1/tasks/nope", None),
    ("DELETE", "/v1/tasks/nope", None),
    ("POST", "/v1/tasks/nope/start", {"cell_id": "c"}),
    ("POST", "/v1/tasks/nope/complete", {"cell_id": "c"}),
    ("POST", "/v1/tasks/nope/fail", {"error_message": "x"}),
    ("POST", "/v1/tasks/nope/reject", {"error_message": "x"}),
    ("POST", "/v1/tasks/nope/cancel", None),
    ("POST", "/v1/tasks/nope/resolving", None),
])
async def test_unknown_task_is_404(bbs: RunningBBS, http: httpx.AsyncClient, method: str, path: str,
                                   body: dict[str, str] | None) -> None:
    resp = await http.request(method, path, json=body)
    assert resp.status_code == 404
    assert resp.json()["type"] == "ResourceNotFound" and "nope" in resp.json()["message"]


# ---- start, complete ----------------------------------------------------------------------------

async def test_start_is_true_once_then_false_on_the_same_cell(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs)
    resp = await http.post(f"/v1/tasks/{guid}/start", json={"cell_id": "cell-1"})
    assert resp.status_code == 200 and resp.json() == {"should_start": True}
    task = await bbs.client.task(guid)
    assert (task.state, task.cell_id) == ("RUNNING", "cell-1")
    updated_at = task.updated_at

    resp = await http.post(f"/v1/tasks/{guid}/start", json={"cell_id": "cell-1"})
    assert resp.status_code == 200 and resp.json() == {"should_start": False}
    assert (await bbs.client.task(guid)).updated_at == updated_at  # a no-op

    resp = await http.post(f"/v1/tasks/{guid}/start", json={"cell_id": "cell-2"})
    assert resp.status_code == 409 and resp.json()["type"] == "InvalidStateTransition"
    assert (await bbs.client.task(guid)).cell_id == "cell-1"


async def test_complete_from_another_cell_is_409_running_on_different_cell(bbs: RunningBBS) -> None:
    guid = await _desire(bbs)
    await bbs.client.start_task(guid, "cell-1")
    with pytest.raises(RunningOnDifferentCell):
        await bbs.client.complete_task(guid, "cell-2", result="nope")
    assert (await bbs.client.task(guid)).state == "RUNNING"


async def test_complete_records_the_result_and_clears_the_cell(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs)
    await bbs.client.start_task(guid, "cell-1")
    resp = await http.post(f"/v1/tasks/{guid}/complete", json={"cell_id": "cell-1", "result": "42"})
    assert resp.status_code == 200
    done = resp.json()
    assert (done["state"], done["failed"], done["result"], done["cell_id"]) == ("COMPLETED", False, "42", "")
    assert done["first_completed_at"] > 0
    await asyncio.sleep(0.1)  # no callback URL: nothing resolves it behind the client's back
    assert (await bbs.client.task(guid)).state == "COMPLETED"

    # completing twice is an invalid transition
    resp = await http.post(f"/v1/tasks/{guid}/complete", json={"cell_id": "cell-1"})
    assert resp.status_code == 409 and resp.json()["type"] == "InvalidStateTransition"


async def test_a_failed_completion_keeps_the_reason_and_drops_the_result(bbs: RunningBBS) -> None:
    guid = await _desire(bbs)
    await bbs.client.start_task(guid, "cell-1")
    done = await bbs.client.complete_task(guid, "cell-1", failed=True, failure_reason="Exit status 1", result="junk")
    assert (done.failed, done.failure_reason, done.result) == (True, "Exit status 1", "")


async def test_complete_of_a_pending_task_is_409(bbs: RunningBBS) -> None:
    guid = await _desire(bbs)
    with pytest.raises(InvalidTransition):
        await bbs.client.complete_task(guid, "cell-1")
    assert (await bbs.client.task(guid)).state == "PENDING"


# ---- reject ---------------------------------------------------------------------------------------

async def test_reject_returns_to_pending_until_max_task_retries_then_fails(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs)
    await bbs.client.start_task(guid, "cell-1")
    for count in (1, 2, 3):
        resp = await http.post(f"/v1/tasks/{guid}/reject", json={"error_message": f"no room {count}"})
        assert resp.status_code == 200
        task = resp.json()
        assert (task["state"], task["rejection_count"], task["rejection_reason"], task["cell_id"]) == \
            ("PENDING", count, f"no room {count}", "")
        assert len(bbs.auctioneer.task_batches) == 1  # only the desire's: convergence re-auctions (§4.6)
    # the count before this rejection is 3 = max_task_retries: the task fails instead
    resp = await http.post(f"/v1/tasks/{guid}/reject", json={"error_message": "still no room"})
    task = resp.json()
    assert (task["state"], task["failed"], task["failure_reason"]) == ("COMPLETED", True, "still no room")
    assert task["rejection_count"] == 3
    assert len(bbs.auctioneer.task_batches) == 1
    resp = await http.post(f"/v1/tasks/{guid}/reject", json={"error_message": "again"})
    assert resp.status_code == 409 and resp.json()["type"] == "InvalidStateTransition"


async def test_max_task_retries_comes_from_the_config(etcd_server: EtcdServer, key_prefix: str) -> None:
    async with running_bbs(etcd_server, key_prefix, max_task_retries=1) as bbs:
        guid = await _desire(bbs)
        first = await bbs.client.task_call(guid, "reject", {"error_message": "a"})
        assert (first["state"], first["rejection_count"]) == ("PENDING", 1)
        second = await bbs.client.task_call(guid, "reject", {"error_message": "b"})
        assert (second["state"], second["failed"]) == ("COMPLETED", True)


# ---- cancel, fail ---------------------------------------------------------------------------------

async def test_cancel_of_a_pending_task_completes_it_as_failed(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs)
    resp = await http.post(f"/v1/tasks/{guid}/cancel")
    assert resp.status_code == 200
    task = resp.json()
    assert (task["state"], task["failed"], task["failure_reason"]) == ("COMPLETED", True, "task was cancelled")
    assert bbs.reps.cancels == []
    resp = await http.post(f"/v1/tasks/{guid}/cancel")  # only PENDING or RUNNING tasks
    assert resp.status_code == 409 and resp.json()["type"] == "InvalidStateTransition"


async def test_cancel_of_a_running_task_tells_its_rep(bbs: RunningBBS, etcd: Etcd) -> None:
    guid = await _desire(bbs)
    await bbs.add_cell("cell-1", etcd)
    await bbs.client.start_task(guid, "cell-1")
    task = await bbs.client.cancel_task(guid)
    assert (task.state, task.failed, task.failure_reason, task.cell_id) == ("COMPLETED", True, "task was cancelled", "")
    assert bbs.reps.cancels == [("cell-1", guid)]


async def test_cancel_of_a_task_on_an_unregistered_cell_still_cancels(bbs: RunningBBS) -> None:
    guid = await _desire(bbs)
    await bbs.client.start_task(guid, "cell-gone")
    task = await bbs.client.cancel_task(guid)
    assert (task.state, task.failure_reason) == ("COMPLETED", "task was cancelled")
    assert bbs.reps.cancels == []


async def test_fail_completes_a_task_as_failed_with_the_reason(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs)
    resp = await http.post(f"/v1/tasks/{guid}/fail", json={"error_message": "x" * 3000})
    assert resp.status_code == 200
    task = resp.json()
    assert task["state"] == "COMPLETED" and task["failed"] is True
    assert task["failure_reason"] == "x" * 1024  # truncated as Diego does


# ---- resolving, delete ----------------------------------------------------------------------------

async def test_resolving_and_delete_follow_the_state_machine(bbs: RunningBBS, http: httpx.AsyncClient) -> None:
    guid = await _desire(bbs)

    async def call(method: str, verb: str = "") -> httpx.Response:
        path = f"/v1/tasks/{guid}" + (f"/{verb}" if verb else "")
        return await http.request(method, path)

    # PENDING: neither resolving nor delete
    for resp in (await call("POST", "resolving"), await call("DELETE")):
        assert resp.status_code == 409 and resp.json()["type"] == "InvalidStateTransition"
    await bbs.client.start_task(guid, "cell-1")
    await bbs.client.complete_task(guid, "cell-1", result="r")
    # COMPLETED: delete is refused until someone is resolving it
    assert (await call("DELETE")).status_code == 409
    resp = await call("POST", "resolving")
    assert resp.status_code == 200 and resp.json()["state"] == "RESOLVING"
    # only one resolver
    resp = await call("POST", "resolving")
    assert resp.status_code == 409 and resp.json()["type"] == "InvalidStateTransition"
    assert (await call("DELETE")).status_code == 204
    with pytest.raises(NotFound):
        await bbs.client.task(guid)
    assert (await call("DELETE")).status_code == 404


# ---- completion callbacks -------------------------------------------------------------------------

class CallbackReceiver:
    """A real HTTP server on a loopback port that records each POST and answers with the next
    status of a script (the last one repeats)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/callback"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            request_line, *header_lines = head.split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((request_line, json.loads(body)))
            status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
            writer.write(f"HTTP/1.1 {status} Status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
        finally:
            writer.close()

    async def __aenter__(self) -> "CallbackReceiver":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def _complete_with_callback(bbs: RunningBBS, url: str, **definition: Any) -> tuple[str, int]:
    """Desire, start and complete a task with a callback URL; returns (guid, created_at)."""
    body = task_request(task_definition={"completion_callback_url": url, **definition})
    created = await bbs.client.desire_task(body["task_guid"], body["domain"], body["task_definition"])
    await bbs.client.start_task(created.task_guid, "cell-1")
    await bbs.client.complete_task(created.task_guid, "cell-1", result="the result")
    return created.task_guid, created.created_at


async def _gone(bbs: RunningBBS, guid: str) -> bool:
    try:
        await bbs.client.task(guid)
    except NotFound:
        return True
    return False


async def test_callback_answered_200_deletes_the_task_and_carries_the_result(bbs: RunningBBS) -> None:
    async with CallbackReceiver([200]) as receiver:
        guid, created_at = await _complete_with_callback(bbs, receiver.url, annotation="staging-123")
        await _eventually(lambda: _gone(bbs, guid))
        assert len(receiver.requests) == 1
        request_line, body = receiver.requests[0]
        assert request_line.startswith("POST /callback ")
        assert body == {"task_guid": guid, "failed": False, "failure_reason": "", "result": "the result",
                        "annotation": "staging-123", "created_at": created_at}


async def test_callback_for_a_cancelled_task_reports_the_failure(bbs: RunningBBS) -> None:
    async with CallbackReceiver([200]) as receiver:
        guid = await _desire(bbs, task_definition={"completion_callback_url": receiver.url})
        await bbs.client.cancel_task(guid)
        await _eventually(lambda: _gone(bbs, guid))
        (_, body), = receiver.requests
        assert (body["failed"], body["failure_reason"], body["result"]) == (True, "task was cancelled", "")


async def test_callback_answered_503_three_times_leaves_the_task_resolving(bbs: RunningBBS) -> None:
    async with CallbackReceiver([503]) as receiver:
        guid, _ = await _complete_with_callback(bbs, receiver.url)
        await _eventually(lambda: _true(len(receiver.requests) >= 3))
        await asyncio.sleep(0.3)  # give a (wrong) fourth attempt or a delete the time to happen
        assert len(receiver.requests) == 3
        task = await bbs.client.task(guid)
        assert task.state == "RESOLVING"
        assert all(body["task_guid"] == guid for _, body in receiver.requests)


async def test_callback_retries_after_503_and_504_then_deletes(bbs: RunningBBS) -> None:
    async with CallbackReceiver([503, 504, 200]) as receiver:
        guid, _ = await _complete_with_callback(bbs, receiver.url)
        await _eventually(lambda: _gone(bbs, guid))
        assert len(receiver.requests) == 3


async def test_callback_answered_500_still_deletes_the_task(bbs: RunningBBS) -> None:
    """Only 503/504 mean "try again" (reference §2.7); any other answer ends the task."""
    async with CallbackReceiver([500]) as receiver:
        guid, _ = await _complete_with_callback(bbs, receiver.url)
        await _eventually(lambda: _gone(bbs, guid))
        assert len(receiver.requests) == 1


async def test_unreachable_callback_leaves_the_task_resolving(bbs: RunningBBS) -> None:
    async with CallbackReceiver([200]) as receiver:
        url = receiver.url
    # the receiver is closed: connection refused is not retried
    guid, _ = await _complete_with_callback(bbs, url)

    async def resolving() -> bool:
        return (await bbs.client.task(guid)).state == "RESOLVING"
    await _eventually(resolving)
    await asyncio.sleep(0.2)
    assert (await bbs.client.task(guid)).state == "RESOLVING"


async def _true(value: bool) -> bool:
    return value
