"""The auction runner against cells that misbehave over real HTTP on loopback: one answers
garbage, one never answers, one is evacuating, one reports another id. The round places
everything on the good cell and finishes within the /state timeout (reference §4.1)."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from control.auctioneer.batch import Batch
from control.auctioneer.cells import HTTPCellClient
from control.auctioneer.runner import AuctionRunner, Settings
from control.models.auction import LRPStartRequest, TaskStartRequest
from control.models.cell import CellCapacity, CellPresence


def cell_state(cell_id: str, evacuating: bool = False) -> dict[str, Any]:
    res = {"memory_mb": 1000, "disk_mb": 1000, "containers": 10}
    return {"cell_id": cell_id, "rep_url": "", "zone": "z1",
            "rootfs_providers": [{"name": "preloaded", "properties": ["busybox"]}],
            "total_resources": res, "available_resources": res, "starting_container_count": 0,
            "running_container_count": 0, "lrps": [], "tasks": [], "evacuating": evacuating}


class FakeCell:
    """A loopback HTTP server speaking just enough HTTP/1.1 to be a cell in some state of health."""

    def __init__(self, cell_id: str, mode: str) -> None:
        self.cell_id, self.mode = cell_id, mode
        self.works: list[dict[str, Any]] = []
        self.handlers: set[asyncio.Task[None]] = set()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> "FakeCell":
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            length = next((int(line.split(":")[1]) for line in head.split("\r\n") if line.lower().startswith("content-length")), 0)
            body = await reader.readexactly(length) if length else b""
            if self.mode == "hang":
                await asyncio.sleep(3600)
            if head.startswith("GET /state"):
                payload = {"garbage": b"<html>not a cell</html>", "evacuating": json.dumps(cell_state(self.cell_id, True)).encode(),
                           "other-id": json.dumps(cell_state("someone-else")).encode()}.get(
                    self.mode, json.dumps(cell_state(self.cell_id)).encode())
            else:
                self.works.append(json.loads(body))
                payload = json.dumps({"cell_id": self.cell_id, "lrps": [], "tasks": []}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                         b"connection: close\r\n\r\n%s" % (len(payload), payload))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self.handlers.discard(task)

    @property
    def presence(self) -> CellPresence:
        return CellPresence(cell_id=self.cell_id, rep_url=f"http://127.0.0.1:{self.port}",
                            capacity=CellCapacity(memory_mb=1000, disk_mb=1000, containers=10))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.handlers):
            task.cancel()
        if self.handlers:
            await asyncio.wait(list(self.handlers))
        await self.server.wait_closed()


class Reports:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str, str]] = []

    async def actual_lrp_call(self, guid: str, index: int, verb: str, body: dict[str, Any]) -> None:
        self.calls.append((guid, index, verb, body["error_message"]))

    async def task_call(self, guid: str, verb: str, body: dict[str, Any] | None = None) -> None:
        self.calls.append((guid, -1, verb, (body or {})["error_message"]))


async def test_bad_cells_are_skipped_without_stalling_the_batch() -> None:
    cells = [await FakeCell(cid, mode).start() for cid, mode in
             (("good", "ok"), ("junk", "garbage"), ("slow", "hang"), ("leaving", "evacuating"), ("liar", "other-id"))]
    client = HTTPCellClient(None, state_timeout=0.5, work_timeout=2)
    batch, reports = Batch(1000), Reports()

    async def list_cells() -> list[CellPresence]:
        return [c.presence for c in cells]
    runner = AuctionRunner(batch, list_cells, client, reports, Settings(state_timeout=0.5))
    try:
        batch.add_lrps([LRPStartRequest(process_guid="web", domain="d", indices=[0, 1, 2], rootfs="preloaded:busybox")])
        batch.add_tasks([TaskStartRequest(task_guid="t", domain="d", rootfs="preloaded:cflinuxfs4")])
        result = await runner.auction_round()
        assert result is not None
        assert result.cells == 1 and result.placed == 3
        assert result.seconds < 0.5 + 1.0  # bounded by the /state timeout, not by the hanging cell
        good = cells[0]
        assert [(w["process_guid"], w["index"]) for work in good.works for w in work["lrps"]] == [
            ("web", 0), ("web", 1), ("web", 2)]
        assert all(not c.works for c in cells[1:])
        assert reports.calls == [("t", -1, "reject", "found no compatible cell for required rootfs")]
        assert len(batch) == 0
    finally:
        await client.aclose()
        for c in cells:
            await c.stop()


async def test_no_cell_at_all_reports_the_communication_error() -> None:
    client = HTTPCellClient(None, state_timeout=0.2, work_timeout=1)
    batch, reports = Batch(10), Reports()

    async def no_cells() -> list[CellPresence]:
        return []
    runner = AuctionRunner(batch, no_cells, client, reports, Settings(state_timeout=0.2))
    try:
        batch.add_lrps([LRPStartRequest(process_guid="web", domain="d", indices=[0], rootfs="preloaded:busybox")])
        await runner.auction_round()
        assert reports.calls == [("web", 0, "fail", "unable to communicate to compatible cells")]
    finally:
        await client.aclose()


def test_batch_dedupes_and_refuses_overflow() -> None:
    batch = Batch(3)
    req = LRPStartRequest(process_guid="a", domain="d", indices=[0, 1], rootfs="preloaded:busybox")
    batch.add_lrps([req, req])
    assert len(batch) == 2
    try:
        batch.add_lrps([LRPStartRequest(process_guid="b", domain="d", indices=[0, 1], rootfs="preloaded:busybox")])
    except Exception as exc:
        assert type(exc).__name__ == "Unavailable"
    else:
        raise AssertionError("an overfull batch must refuse")
    lrps, tasks = batch.drain()
    assert sorted((r.process_guid, r.indices) for r in lrps) == [("a", [0]), ("a", [1])] and tasks == []
