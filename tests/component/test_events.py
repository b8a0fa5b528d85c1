"""Server-sent events of a real BBS over real etcd (reference §2.4, §3.3): desired, instance,
crash and task events; the per-cell instance stream; events for changes written to etcd by
another writer; and dropping a subscriber whose buffer overflows."""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from control.kit.etcd import Etcd, Txn
from control.models.actual_lrp import ActualLRP, ActualLRPState, Presence
from control.models.desired_lrp import ModificationTag
from control.models.task import Task, TaskDefinition
from tests.component.conftest import RunningBBS, running_bbs
from tests.factories import desired_lrp, task_request
from tests.servers import EtcdServer

Event = tuple[str, dict[str, Any]]
_CLOSED = object()


class EventReader:
    """One SSE subscription read with httpx: ready once the server confirmed the subscription,
    events parsed into a queue by a reader task that ends with the stream."""

    def __init__(self, base_url: str, path: str, params: dict[str, str] | None = None) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(10.0, read=None))
        self._path, self._params = path, params
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self._stack = contextlib.AsyncExitStack()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "EventReader":
        await self._stack.enter_async_context(self._client)
        self.response = await self._stack.enter_async_context(
            self._client.stream("GET", self._path, params=self._params))
        assert self.response.status_code == 200
        assert self.response.headers["content-type"].startswith("text/event-stream")
        self._lines = self.response.aiter_lines()
        async with asyncio.timeout(5):
            assert await anext(self._lines) == ": subscribed"  # the hub holds our subscription now
        self._task = asyncio.create_task(self._pump())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._stack.aclose()

    async def _pump(self) -> None:
        name, data, ids = "", [], []
        try:
            async for line in self._lines:
                if line.startswith("id:"):
                    ids.append(int(line[3:]))
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and name:
                    self.queue.put_nowait((name, json.loads("\n".join(data))))
                    name, data = "", []
        except httpx.HTTPError:
            pass
        finally:
            self.ids = ids
            self.queue.put_nowait(_CLOSED)

    async def next(self, timeout: float = 5.0) -> Event:
        item = await asyncio.wait_for(self.queue.get(), timeout)
        assert item is not _CLOSED, "the stream ended"
        return item  # type: ignore[return-value]

    async def until(self, done: Callable[[Event], bool], timeout: float = 5.0) -> list[Event]:
        """Every event up to and including the first one `done` accepts."""
        seen: list[Event] = []
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout)
                seen.append(event)
                if done(event):
                    return seen

    async def closed(self, timeout: float = 5.0) -> list[Event]:
        """Events left before the server ended the stream."""
        seen: list[Event] = []
        async with asyncio.timeout(timeout):
            while (item := await self.queue.get()) is not _CLOSED:
                seen.append(item)  # type: ignore[arg-type]
        return seen


def _names(events: list[Event]) -> list[str]:
    return [name for name, _ in events]


def _guid_of(event: Event) -> str | None:
    name, p = event
    for part in ("desired_lrp", "actual_lrp", "after", "actual_lrp_key", "task"):
        if isinstance(p.get(part), dict):
            return p[part].get("process_guid") or p[part].get("task_guid")
    return None


@pytest.fixture
async def lrp_events(bbs: RunningBBS) -> AsyncIterator[EventReader]:
    async with EventReader(bbs.url, "/v1/events") as reader:
        yield reader


@pytest.fixture
async def task_events(bbs: RunningBBS) -> AsyncIterator[EventReader]:
    async with EventReader(bbs.url, "/v1/events/tasks") as reader:
        yield reader


# ---- desired LRP events -------------------------------------------------------------------------

async def test_desired_lrp_created_changed_removed(bbs: RunningBBS, lrp_events: EventReader) -> None:
    body = desired_lrp(instances=1, annotation="v1")
    guid = body["process_guid"]
    await bbs.client.desire_lrp(body)
    events = await lrp_events.until(lambda e: e[0] == "actual_lrp_instance_created")
    assert _names(events) == ["desired_lrp_created", "actual_lrp_instance_created"]
    created = events[0][1]["desired_lrp"]
    assert created["process_guid"] == guid and created["annotation"] == "v1"
    assert created["action"]["run"]["path"] == "/bin/httpd"  # the full LRP, both stored halves
    assert events[1][1]["actual_lrp"]["state"] == "UNCLAIMED"

    await bbs.client.update_desired_lrp(guid, {"annotation": "v2"})
    name, changed = await lrp_events.next()
    assert name == "desired_lrp_changed"
    assert (changed["before"]["annotation"], changed["after"]["annotation"]) == ("v1", "v2")
    assert changed["after"]["modification_tag"]["index"] == changed["before"]["modification_tag"]["index"] + 1
    assert changed["after"]["action"] == changed["before"]["action"]

    await bbs.client.remove_desired_lrp(guid)
    events = [await lrp_events.next(), await lrp_events.next()]
    assert _names(events) == ["desired_lrp_removed", "actual_lrp_instance_removed"]
    assert events[0][1]["desired_lrp"]["annotation"] == "v2"
    assert events[1][1]["actual_lrp"]["process_guid"] == guid


async def test_scale_up_emits_one_created_event_per_new_instance(bbs: RunningBBS, lrp_events: EventReader) -> None:
    body = desired_lrp(instances=1)
    await bbs.client.desire_lrp(body)
    await lrp_events.until(lambda e: e[0] == "actual_lrp_instance_created")
    await bbs.client.update_desired_lrp(body["process_guid"], {"instances": 3})
    events = [await lrp_events.next() for _ in range(3)]
    assert _names(events)[0] == "desired_lrp_changed"
    assert sorted(e[1]["actual_lrp"]["index"] for e in events[1:]) == [1, 2]
    assert {e[0] for e in events[1:]} == {"actual_lrp_instance_created"}


# ---- instance events ----------------------------------------------------------------------------

async def test_instance_lifecycle_events(bbs: RunningBBS, lrp_events: EventReader) -> None:
    body = desired_lrp(instances=1)
    guid = body["process_guid"]
    await bbs.client.desire_lrp(body)
    await lrp_events.until(lambda e: e[0] == "actual_lrp_instance_created")

    await bbs.client.claim(guid, 0, "ig-1", "cell-1")
    name, claimed = await lrp_events.next()
    assert name == "actual_lrp_instance_changed"
    assert (claimed["before"]["state"], claimed["after"]["state"]) == ("UNCLAIMED", "CLAIMED")
    assert claimed["actual_lrp_key"] == {"process_guid": guid, "index": 0, "domain": "test-domain"}
    assert claimed["actual_lrp_instance_key"] == {"instance_guid": "ig-1", "cell_id": "cell-1"}

    await bbs.client.start(guid, 0, "ig-1", "cell-1", "10.0.0.1", ports=[{"container_port": 8080, "host_port": 61000}])
    name, started = await lrp_events.next()
    assert name == "actual_lrp_instance_changed"
    assert (started["before"]["state"], started["after"]["state"]) == ("CLAIMED", "RUNNING")
    assert started["after"]["address"] == "10.0.0.1" and started["after"]["ports"][0]["host_port"] == 61000

    await bbs.client.remove_actual_lrp(guid, 0, "ig-1", "cell-1")
    name, removed = await lrp_events.next()
    assert name == "actual_lrp_instance_removed"
    assert removed["actual_lrp"]["instance_guid"] == "ig-1" and removed["actual_lrp"]["state"] == "RUNNING"


async def test_an_immediate_restart_emits_crashed_before_removed_and_created(bbs: RunningBBS,
                                                                               lrp_events: EventReader) -> None:
    body = desired_lrp(instances=1)
    guid = body["process_guid"]
    await bbs.client.desire_lrp(body)
    await bbs.client.start(guid, 0, "ig-1", "cell-1", "10.0.0.1")
    await lrp_events.until(lambda e: e[0] == "actual_lrp_instance_changed")

    await bbs.client.crash(guid, 0, "ig-1", "cell-1", "exit status 2")
    events = [await lrp_events.next() for _ in range(3)]
    assert events[0][0] == "actual_lrp_crashed"
    crashed = events[0][1]
    assert crashed["actual_lrp_key"]["process_guid"] == guid
    assert crashed["actual_lrp_instance_key"] == {"instance_guid": "ig-1", "cell_id": "cell-1"}
    assert (crashed["crash_count"], crashed["crash_reason"]) == (1, "exit status 2")
    assert crashed["since"] > 0
    by_name = dict(events[1:])
    assert set(by_name) == {"actual_lrp_instance_removed", "actual_lrp_instance_created"}
    assert by_name["actual_lrp_instance_removed"]["actual_lrp"]["instance_guid"] == "ig-1"
    new = by_name["actual_lrp_instance_created"]["actual_lrp"]
    assert (new["state"], new["crash_count"], new["instance_guid"]) == ("UNCLAIMED", 1, "")


async def test_a_crash_to_crashed_emits_crashed_and_changed(bbs: RunningBBS, lrp_events: EventReader) -> None:
    body = desired_lrp(instances=1)
    guid = body["process_guid"]
    await bbs.client.desire_lrp(body)
    for n in range(2):
        await bbs.client.start(guid, 0, f"ig-{n}", "cell-1", "10.0.0.1")
        await bbs.client.crash(guid, 0, f"ig-{n}", "cell-1", "boom")
    await bbs.client.start(guid, 0, "ig-last", "cell-1", "10.0.0.1")
    await lrp_events.until(lambda e: e[0] == "actual_lrp_instance_changed"
                           and e[1]["actual_lrp_instance_key"]["instance_guid"] == "ig-last")
    await bbs.client.crash(guid, 0, "ig-last", "cell-1", "boom")
    events = [await lrp_events.next() for _ in range(2)]
    assert _names(events) == ["actual_lrp_crashed", "actual_lrp_instance_changed"]
    assert events[0][1]["crash_count"] == 3
    assert (events[1][1]["before"]["state"], events[1][1]["after"]["state"]) == ("RUNNING", "CRASHED")


async def test_lrp_stream_carries_no_task_events_and_task_stream_no_lrp_events(
        bbs: RunningBBS, lrp_events: EventReader, task_events: EventReader) -> None:
    task = task_request()
    await bbs.client.desire_task(task["task_guid"], task["domain"], task["task_definition"])
    body = desired_lrp(instances=0)
    await bbs.client.desire_lrp(body)
    name, payload = await lrp_events.next()
    assert name == "desired_lrp_created" and payload["desired_lrp"]["process_guid"] == body["process_guid"]
    name, payload = await task_events.next()
    assert name == "task_created" and payload["task"]["task_guid"] == task["task_guid"]
    second = task_request()
    await bbs.client.desire_task(second["task_guid"], second["domain"], second["task_definition"])
    name, payload = await task_events.next()  # the LRP did not slip in between
    assert payload["task"]["task_guid"] == second["task_guid"]


# ---- per-cell instance stream -------------------------------------------------------------------

async def test_instance_stream_by_cell_only_carries_that_cells_instance_events(bbs: RunningBBS) -> None:
    a, b = desired_lrp(instances=1), desired_lrp(instances=1)
    ga, gb = a["process_guid"], b["process_guid"]
    async with EventReader(bbs.url, "/v1/events/instances", {"cell_id": "cell-a"}) as cell_a, \
            EventReader(bbs.url, "/v1/events/instances") as everything:
        await bbs.client.desire_lrp(a)
        await bbs.client.desire_lrp(b)
        await bbs.client.claim(ga, 0, "ig-a", "cell-a")
        await bbs.client.claim(gb, 0, "ig-b", "cell-b")
        await bbs.client.start(gb, 0, "ig-b", "cell-b", "10.0.0.2")
        await bbs.client.start(ga, 0, "ig-a", "cell-a", "10.0.0.1")  # the last event for cell-a

        def last(e: Event) -> bool:
            return e[0] == "actual_lrp_instance_changed" and e[1]["after"]["state"] == "RUNNING" \
                and e[1]["after"]["cell_id"] == "cell-a"

        mine = await cell_a.until(last)
        # desired events travel on the instance stream too; unclaimed rows belong to no cell
        assert _names(mine) == ["desired_lrp_created", "desired_lrp_created",
                                "actual_lrp_instance_changed", "actual_lrp_instance_changed"]
        assert {_guid_of(e) for e in mine[2:]} == {ga}
        everyone = await everything.until(last)
        assert {_guid_of(e) for e in everyone if e[0].startswith("actual_lrp")} == {ga, gb}
        assert len(everyone) == 8

        # an instance moving off the cell is still news to that cell
        await bbs.client.crash(ga, 0, "ig-a", "cell-a", "boom")
        events = await cell_a.until(lambda e: e[0] == "actual_lrp_instance_removed")
        assert _names(events)[0] == "actual_lrp_crashed"


async def test_unfiltered_instance_stream_matches_the_lrp_stream(bbs: RunningBBS, lrp_events: EventReader) -> None:
    async with EventReader(bbs.url, "/v1/events/instances", {"cell_id": ""}) as instances:
        body = desired_lrp(instances=2)
        await bbs.client.desire_lrp(body)
        expected = await lrp_events.until(lambda e: False if e[0] != "actual_lrp_instance_created"
                                          else e[1]["actual_lrp"]["index"] == 1)
        got = [await instances.next() for _ in expected]
        assert got == expected


# ---- events from other writers ------------------------------------------------------------------

async def test_a_row_written_directly_to_etcd_is_an_event(bbs: RunningBBS, etcd: Etcd, lrp_events: EventReader) -> None:
    lrp = ActualLRP(process_guid="written-elsewhere", index=4, domain="other", state=ActualLRPState.RUNNING,
                    instance_guid="ig-x", cell_id="cell-x", address="10.1.1.1", since=123,
                    modification_tag=ModificationTag(epoch="e", index=0))
    key = bbs.bbs.keys.actual_lrp("written-elsewhere", 4, Presence.ORDINARY)
    await etcd.put(key, lrp.to_json())
    name, payload = await lrp_events.next()
    assert name == "actual_lrp_instance_created"
    assert payload["actual_lrp"]["process_guid"] == "written-elsewhere" and payload["actual_lrp"]["index"] == 4
    assert payload["actual_lrp"]["cell_id"] == "cell-x"

    await etcd.delete(key)
    name, payload = await lrp_events.next()
    assert name == "actual_lrp_instance_removed" and payload["actual_lrp"]["instance_guid"] == "ig-x"


async def test_a_task_written_directly_to_etcd_is_an_event(bbs: RunningBBS, etcd: Etcd,
                                                           task_events: EventReader) -> None:
    task = Task(task_guid="t-elsewhere", domain="d",
                task_definition=TaskDefinition.model_validate(task_request()["task_definition"]))
    await etcd.put(bbs.bbs.keys.task("t-elsewhere"), task.to_json())
    name, payload = await task_events.next()
    assert name == "task_created" and payload["task"]["task_guid"] == "t-elsewhere"


async def test_a_bad_document_in_etcd_does_not_stop_the_stream(bbs: RunningBBS, etcd: Etcd,
                                                               lrp_events: EventReader) -> None:
    await etcd.put(bbs.bbs.keys.actual_lrp("garbage", 0, Presence.ORDINARY), b"{not json")
    body = desired_lrp(instances=0)
    await bbs.client.desire_lrp(body)
    name, payload = await lrp_events.next()
    assert name == "desired_lrp_created" and payload["desired_lrp"]["process_guid"] == body["process_guid"]


async def test_a_bad_document_costs_only_its_own_event_in_a_batch(bbs: RunningBBS, etcd: Etcd,
                                                                   lrp_events: EventReader) -> None:
    good = ActualLRP(process_guid="same-txn", index=0, domain="d", state=ActualLRPState.UNCLAIMED,
                     modification_tag=ModificationTag(epoch="e", index=0))
    txn = Txn()
    txn.put(etcd.tx, bbs.bbs.keys.actual_lrp("garbage", 1, Presence.ORDINARY), b"{not json")
    txn.put(etcd.tx, bbs.bbs.keys.actual_lrp("same-txn", 0, Presence.ORDINARY), good.to_json())
    assert await etcd.commit(txn)  # one etcd revision, one watch batch
    name, payload = await lrp_events.next()
    assert name == "actual_lrp_instance_created" and payload["actual_lrp"]["process_guid"] == "same-txn"


# ---- task events --------------------------------------------------------------------------------

async def test_task_created_changed_removed(bbs: RunningBBS, task_events: EventReader) -> None:
    body = task_request()
    guid = body["task_guid"]
    await bbs.client.desire_task(guid, body["domain"], body["task_definition"])
    name, payload = await task_events.next()
    assert name == "task_created" and payload["task"]["state"] == "PENDING"

    await bbs.client.start_task(guid, "cell-1")
    await bbs.client.complete_task(guid, "cell-1", result="ok")
    await bbs.client.task_call(guid, "resolving")
    transitions = []
    for _ in range(3):
        name, payload = await task_events.next()
        assert name == "task_changed"
        transitions.append((payload["before"]["state"], payload["after"]["state"]))
    assert transitions == [("PENDING", "RUNNING"), ("RUNNING", "COMPLETED"), ("COMPLETED", "RESOLVING")]

    await bbs.client.delete_task(guid)
    name, payload = await task_events.next()
    assert name == "task_removed" and payload["task"]["task_guid"] == guid
    assert payload["task"]["state"] == "RESOLVING" and payload["task"]["result"] == "ok"


# ---- slow subscribers ---------------------------------------------------------------------------

async def test_a_subscriber_whose_buffer_overflows_is_dropped_and_can_resubscribe(
        etcd_server: EtcdServer, key_prefix: str) -> None:
    async with running_bbs(etcd_server, key_prefix, event_buffer=2) as bbs:
        async with EventReader(bbs.url, "/v1/events") as slow:
            assert len(bbs.bbs.hub.subscribers) == 1
            # one transaction, eleven events, delivered to the hub at once: more than 2 pending
            await bbs.client.desire_lrp(desired_lrp(instances=10))
            left = await slow.closed()
            assert len(left) <= 2  # what fitted in the buffer, then the server ended the stream
            assert bbs.bbs.hub.subscribers == set()

        # the dropped client resubscribes (and would resync by listing)
        async with EventReader(bbs.url, "/v1/events") as again:
            body = desired_lrp(instances=0)
            await bbs.client.desire_lrp(body)
            name, payload = await again.next()
            assert name == "desired_lrp_created" and payload["desired_lrp"]["process_guid"] == body["process_guid"]


async def test_a_subscriber_that_keeps_up_is_not_dropped_by_a_burst(bbs: RunningBBS, lrp_events: EventReader) -> None:
    body = desired_lrp(instances=50)
    await bbs.client.desire_lrp(body)
    events = [await lrp_events.next() for _ in range(51)]
    assert _names(events)[0] == "desired_lrp_created"
    assert sorted(e[1]["actual_lrp"]["index"] for e in events[1:]) == list(range(50))
    assert len(bbs.bbs.hub.subscribers) == 1


async def test_unsubscribing_releases_the_subscription(bbs: RunningBBS) -> None:
    async with EventReader(bbs.url, "/v1/events/tasks"):
        assert len(bbs.bbs.hub.subscribers) == 1
    # the server notices the closed connection when it next writes to it
    for _ in range(100):
        t = task_request()
        await bbs.client.desire_task(t["task_guid"], t["domain"], t["task_definition"])
        if not bbs.bbs.hub.subscribers:
            break
        await asyncio.sleep(0.02)
    assert bbs.bbs.hub.subscribers == set()
