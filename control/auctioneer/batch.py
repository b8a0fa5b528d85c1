"""The auction batch (reference §4.1): requests queue up while an auction runs and form the next
batch; LRP starts are deduplicated by (process_guid, index), tasks by task_guid. No batching
window: a waiting runner wakes on the first request."""
from __future__ import annotations

import asyncio

from control.models.auction import LRPStartRequest, TaskStartRequest
from control.models.errors import Unavailable


class Batch:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lrps: dict[tuple[str, int], LRPStartRequest] = {}
        self._tasks: dict[str, TaskStartRequest] = {}
        self._has_work = asyncio.Event()

    def __len__(self) -> int:
        return len(self._lrps) + len(self._tasks)

    def add_lrps(self, requests: list[LRPStartRequest]) -> None:
        new = {(r.process_guid, i) for r in requests for i in r.indices} - self._lrps.keys()
        if len(self) + len(new) > self.limit:
            raise Unavailable(f"auction batch is full ({len(self)} queued, limit {self.limit})")
        for req in requests:
            for index in req.indices:
                self._lrps[(req.process_guid, index)] = req.model_copy(update={"indices": [index]})
        if requests:
            self._has_work.set()

    def add_tasks(self, requests: list[TaskStartRequest]) -> None:
        if len(self) + len({r.task_guid for r in requests} - self._tasks.keys()) > self.limit:
            raise Unavailable(f"auction batch is full ({len(self)} queued, limit {self.limit})")
        for req in requests:
            self._tasks[req.task_guid] = req
        if requests:
            self._has_work.set()

    async def wait(self) -> None:
        await self._has_work.wait()

    def drain(self) -> tuple[list[LRPStartRequest], list[TaskStartRequest]]:
        lrps, tasks = list(self._lrps.values()), list(self._tasks.values())
        self._lrps.clear()
        self._tasks.clear()
        self._has_work.clear()
        return lrps, tasks

    def requeue(self, lrps: list[LRPStartRequest], tasks: list[TaskStartRequest]) -> None:
        """Put work back (no cell could be listed); newer requests for the same key win."""
        for req in lrps:
            self._lrps.setdefault((req.process_guid, req.indices[0]), req)
        for task in tasks:
            self._tasks.setdefault(task.task_guid, task)
        if lrps or tasks:
            self._has_work.set()
