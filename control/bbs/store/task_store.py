"""Tasks in etcd: one key per task, every change a compare-and-swap on its mod_revision."""
from __future__ import annotations

import json
from collections.abc import Callable

from control.kit.etcd import Etcd, Txn
from control.models.errors import AlreadyExists, NotFound, ResourceConflict
from control.models.task import Task

from .keys import Keys
from .lrp_store import CAS_ATTEMPTS, _field_filter


class TaskStore:
    def __init__(self, etcd: Etcd, keys: Keys) -> None:
        self.etcd = etcd
        self.keys = keys

    async def create(self, task: Task) -> None:
        txn = Txn()
        key = self.keys.task(task.task_guid)
        txn.expect_rev(self.etcd.tx, key, None)
        txn.put(self.etcd.tx, key, task.to_json())
        if not await self.etcd.commit(txn):
            raise AlreadyExists(f"task {task.task_guid} already exists")

    async def get(self, guid: str) -> Task:
        kv = await self.etcd.get(self.keys.task(guid))
        if kv is None:
            raise NotFound(f"task {guid} not found")
        return Task.model_validate_json(kv.value)

    async def list_json(self, domain: str | None = None, cell_id: str | None = None) -> list[bytes]:
        kvs, _ = await self.etcd.range(self.keys.tasks)
        needles = [n for n in (_field_filter("domain", domain), _field_filter("cell_id", cell_id)) if n]
        out = []
        for kv in kvs:
            if all(n in kv.value for n in needles):
                # the substring test is a prefilter; confirm on the parsed document
                doc = json.loads(kv.value)
                if (domain is None or doc["domain"] == domain) and (cell_id is None or doc.get("cell_id") == cell_id):
                    out.append(kv.value)
        return out

    async def list(self) -> list[Task]:
        return [Task.model_validate_json(raw) for raw in await self.list_json()]

    async def update(self, guid: str, decide: Callable[[Task], Task | None]) -> tuple[Task, Task | None]:
        """CAS one task: `decide` returns the new task, or None to delete it. It may raise a
        typed error to refuse. Returns (before, after)."""
        key = self.keys.task(guid)
        for _ in range(CAS_ATTEMPTS):
            kv = await self.etcd.get(key)
            if kv is None:
                raise NotFound(f"task {guid} not found")
            before = Task.model_validate_json(kv.value)
            after = decide(before)
            if after == before:
                return before, after
            txn = Txn()
            txn.expect_rev(self.etcd.tx, key, kv.mod_revision)
            if after is None:
                txn.delete(self.etcd.tx, key)
            else:
                txn.put(self.etcd.tx, key, after.to_json())
            if await self.etcd.commit(txn):
                return before, after
        raise ResourceConflict(f"task {guid} is changing too fast; retry")

    # ---- convergence (control/converger) ----------------------------------------------------
    async def list_with_revisions(self) -> list[tuple[str, bytes, int]]:
        """Every stored task as (task_guid from its key, JSON, mod_revision)."""
        kvs, _ = await self.etcd.range(self.keys.tasks)
        return [(kv.key[len(self.keys.tasks):].decode(), kv.value, kv.mod_revision) for kv in kvs]

    async def replace_if_unchanged(self, guid: str, mod_revision: int, after: Task | None) -> bool:
        """One transaction: write `after` (None: delete the task) only if the task key still has
        `mod_revision`; False (nothing written) when it changed or vanished meanwhile."""
        key = self.keys.task(guid)
        txn = Txn()
        txn.expect_rev(self.etcd.tx, key, mod_revision)
        if after is None:
            txn.delete(self.etcd.tx, key)
        else:
            txn.put(self.etcd.tx, key, after.to_json())
        return await self.etcd.commit(txn)
