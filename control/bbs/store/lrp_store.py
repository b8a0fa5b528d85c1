"""DesiredLRPs and ActualLRPs in etcd.

A DesiredLRP is two keys (schedule, run) written together; each ActualLRP row is one key per
(process_guid, index, presence). Every write is a single transaction that compares the
mod_revision of all it read, so it is all or nothing and never overwrites a concurrent change.
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable

from control.kit.etcd import KV, Etcd, Txn
from control.models.actual_lrp import ActualLRP, Presence
from control.models.desired_lrp import DesiredLRP, RunInfo, SchedulingInfo
from control.models.errors import AlreadyExists, NotFound, ResourceConflict

from .changes import IndexChange, Rows
from .keys import Keys

CAS_ATTEMPTS = 16
PRESENCES = tuple(Presence)


def _field_filter(name: str, value: str | None) -> bytes | None:
    """The exact bytes `"name":"value"` our compact JSON holds, for cheap pre-filtering."""
    if value is None:
        return None
    return f'"{name}":{json.dumps(value)}'.encode()


class LRPStore:
    def __init__(self, etcd: Etcd, keys: Keys) -> None:
        self.etcd = etcd
        self.keys = keys

    # ---- desired ----------------------------------------------------------------------------
    async def create_desired(self, desired: DesiredLRP, actuals: list[ActualLRP]) -> None:
        """Write the DesiredLRP and its UNCLAIMED instances in one transaction. Indices that
        already have an ORDINARY row (left over from an earlier LRP of the same guid) are kept."""
        sched, run = desired.split()
        k, tx = self.keys, self.etcd.tx
        existing = {(i, p): kv for (_, i, p), kv in await self._actual_rows(desired.process_guid)}
        txn = Txn()
        txn.expect_rev(tx, k.schedule(desired.process_guid), None)
        txn.put(tx, k.schedule(desired.process_guid), sched.to_json())
        txn.put(tx, k.run(desired.process_guid), run.to_json())
        for lrp in actuals:
            key = k.actual_lrp(lrp.process_guid, lrp.index, Presence.ORDINARY)
            kv = existing.get((lrp.index, Presence.ORDINARY))
            if kv is not None:
                txn.expect_rev(tx, key, kv.mod_revision)
                continue
            txn.expect_rev(tx, key, None)
            txn.put(tx, key, lrp.to_json())
        if not await self.etcd.commit(txn):
            if await self.etcd.get(k.schedule(desired.process_guid)) is not None:
                raise AlreadyExists(f"desired LRP {desired.process_guid} already exists")
            raise ResourceConflict(f"desired LRP {desired.process_guid} changed concurrently; retry")

    async def get_scheduling_info(self, guid: str) -> tuple[SchedulingInfo, int]:
        kv = await self.etcd.get(self.keys.schedule(guid))
        if kv is None:
            raise NotFound(f"desired LRP {guid} not found")
        return SchedulingInfo.model_validate_json(kv.value), kv.mod_revision

    async def get_desired(self, guid: str) -> DesiredLRP:
        kvs, _ = await self.etcd.range(self.keys.schedule(guid)[: -len(b"schedule")])
        parts = {self.keys.parse_desired(kv.key)[1]: kv.value for kv in kvs}
        if "schedule" not in parts or "run" not in parts:
            raise NotFound(f"desired LRP {guid} not found")
        return DesiredLRP.join(SchedulingInfo.model_validate_json(parts["schedule"]),
                               RunInfo.model_validate_json(parts["run"]))

    async def list_desired(self, domain: str | None = None) -> list[DesiredLRP]:
        kvs, _ = await self.etcd.range(self.keys.desired)
        halves: dict[str, dict[str, bytes]] = {}
        for kv in kvs:
            guid, part = self.keys.parse_desired(kv.key)
            halves.setdefault(guid, {})[part] = kv.value
        out = []
        for parts in halves.values():
            if "schedule" in parts and "run" in parts:
                sched = SchedulingInfo.model_validate_json(parts["schedule"])
                if domain is None or sched.domain == domain:
                    out.append(DesiredLRP.join(sched, RunInfo.model_validate_json(parts["run"])))
        return out

    async def list_scheduling_info_json(self, domain: str | None = None) -> list[bytes]:
        """Stored SchedulingInfo JSON documents (already the wire form)."""
        kvs, _ = await self.etcd.range(self.keys.desired)
        needle = _field_filter("domain", domain)
        return [kv.value for kv in kvs if kv.key.endswith(b"/schedule")
                and (needle is None or needle in kv.value)]

    async def update_schedule(self, guid: str, before: SchedulingInfo, rev: int, after: SchedulingInfo,
                              new_actuals: Iterable[ActualLRP]) -> bool:
        """CAS the schedule (and create UNCLAIMED rows for new indices); False on conflict."""
        k, tx = self.keys, self.etcd.tx
        txn = Txn()
        txn.expect_rev(tx, k.schedule(guid), rev)
        txn.put(tx, k.schedule(guid), after.to_json())
        for lrp in new_actuals:
            key = k.actual_lrp(guid, lrp.index, Presence.ORDINARY)
            txn.expect_rev(tx, key, None)
            txn.put(tx, key, lrp.to_json())
        return await self.etcd.commit(txn)

    async def update_run_credentials(self, guid: str, username: str, password: str) -> None:
        for _ in range(CAS_ATTEMPTS):
            kv = await self.etcd.get(self.keys.run(guid))
            if kv is None:
                raise NotFound(f"desired LRP {guid} not found")
            run = json.loads(kv.value)
            run["image_username"], run["image_password"] = username, password
            txn = Txn()
            txn.expect_rev(self.etcd.tx, kv.key, kv.mod_revision)
            txn.put(self.etcd.tx, kv.key, RunInfo.model_validate(run).to_json())
            if await self.etcd.commit(txn):
                return
        raise ResourceConflict(f"desired LRP {guid} is changing too fast; retry")

    async def delete_desired(self, guid: str) -> DesiredLRP:
        for _ in range(CAS_ATTEMPTS):
            desired = await self.get_desired(guid)
            sched_kv = await self.etcd.get(self.keys.schedule(guid))
            run_kv = await self.etcd.get(self.keys.run(guid))
            if sched_kv is None or run_kv is None:
                raise NotFound(f"desired LRP {guid} not found")
            txn = Txn()
            txn.expect_rev(self.etcd.tx, sched_kv.key, sched_kv.mod_revision)
            txn.expect_rev(self.etcd.tx, run_kv.key, run_kv.mod_revision)
            txn.delete(self.etcd.tx, sched_kv.key)
            txn.delete(self.etcd.tx, run_kv.key)
            if await self.etcd.commit(txn):
                return desired
        raise ResourceConflict(f"desired LRP {guid} is changing too fast; retry")

    # ---- actual -----------------------------------------------------------------------------
    async def _actual_rows(self, guid: str) -> list[tuple[tuple[str, int, Presence], KV]]:
        kvs, _ = await self.etcd.range(self.keys.actual_guid(guid))
        return [(self.keys.parse_actual(kv.key), kv) for kv in kvs]

    async def list_actual_json(self, domain: str | None = None, cell_id: str | None = None,
                               process_guid: str | None = None, index: int | None = None) -> list[bytes]:
        """Stored ActualLRP JSON documents (the wire form), filtered without a full parse."""
        if process_guid is not None and index is not None:
            prefix = self.keys.actual_index(process_guid, index)
        elif process_guid is not None:
            prefix = self.keys.actual_guid(process_guid)
        else:
            prefix = self.keys.actual
        needles = [n for n in (_field_filter("domain", domain), _field_filter("cell_id", cell_id)) if n]
        if index is None or process_guid is not None:  # the key prefix did all the index filtering
            values = await self.etcd.range_values(prefix)
            return [v for v in values if all(n in v for n in needles)] if needles else values
        kvs, _ = await self.etcd.range(prefix)
        out = []
        for kv in kvs:
            if self.keys.parse_actual(kv.key)[1] != index:
                continue
            if all(n in kv.value for n in needles):
                out.append(kv.value)
        return out

    async def list_actual(self, **filters: object) -> list[ActualLRP]:
        return [ActualLRP.model_validate_json(raw) for raw in await self.list_actual_json(**filters)]  # type: ignore[arg-type]

    async def read_index(self, guid: str, index: int) -> tuple[Rows, dict[Presence, int]]:
        kvs, _ = await self.etcd.range(self.keys.actual_index(guid, index))
        rows: Rows = {}
        revs: dict[Presence, int] = {}
        for kv in kvs:
            _, _, presence = self.keys.parse_actual(kv.key)
            rows[presence] = ActualLRP.model_validate_json(kv.value)
            revs[presence] = kv.mod_revision
        return rows, revs

    async def apply_index(self, guid: str, index: int,
                          decide: Callable[[Rows], IndexChange | Awaitable[IndexChange]]) -> tuple[Rows, IndexChange]:
        """Read every row of one index, let `decide` compute the change, and commit it only if
        none of the three presence keys changed meanwhile; retry on conflict. Returns the rows
        as they were before and the applied change."""
        for _ in range(CAS_ATTEMPTS):
            rows, revs = await self.read_index(guid, index)
            change = decide(rows)
            if isinstance(change, Awaitable):
                change = await change
            if change.empty:
                return rows, change
            txn = Txn()
            tx = self.etcd.tx
            for presence in PRESENCES:
                txn.expect_rev(tx, self.keys.actual_lrp(guid, index, presence), revs.get(presence))
            for presence in change.deletes:
                txn.delete(tx, self.keys.actual_lrp(guid, index, presence))
            for presence, lrp in change.puts.items():
                txn.put(tx, self.keys.actual_lrp(guid, index, presence), lrp.to_json())
            if await self.etcd.commit(txn):
                return rows, change
        raise ResourceConflict(f"actual LRP {guid}/{index} is changing too fast; retry")

    async def indices(self, guid: str) -> dict[int, Rows]:
        out: dict[int, Rows] = {}
        for (_, index, presence), kv in await self._actual_rows(guid):
            out.setdefault(index, {})[presence] = ActualLRP.model_validate_json(kv.value)
        return out

    # ---- convergence (control/converger) ----------------------------------------------------
    async def list_schedules_with_revisions(self) -> list[tuple[str, bytes, int]]:
        """Every stored SchedulingInfo as (process_guid, JSON, mod_revision of its key): the
        converger guards the creation of missing instances with that revision."""
        kvs, _ = await self.etcd.range(self.keys.desired)
        out = []
        for kv in kvs:
            if kv.key.endswith(b"/schedule"):
                out.append((self.keys.parse_desired(kv.key)[0], kv.value, kv.mod_revision))
        return out

    async def create_missing(self, guid: str, schedule_rev: int, actuals: Iterable[ActualLRP]) -> bool:
        """Create UNCLAIMED rows for missing indices in one transaction, only if the DesiredLRP's
        schedule is unchanged since `schedule_rev` (not scaled, updated or deleted meanwhile)
        and none of those ORDINARY rows exists; False (nothing written) otherwise."""
        k, tx = self.keys, self.etcd.tx
        txn = Txn()
        txn.expect_rev(tx, k.schedule(guid), schedule_rev)
        for lrp in actuals:
            key = k.actual_lrp(guid, lrp.index, Presence.ORDINARY)
            txn.expect_rev(tx, key, None)
            txn.put(tx, key, lrp.to_json())
        return await self.etcd.commit(txn)
