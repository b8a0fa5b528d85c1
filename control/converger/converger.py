"""The converger's imperative shell: one pass = read a snapshot, plan, apply, report.

Reading: the ActualLRPs and tasks first (value-only paged ranges), then the DesiredLRPs and the
fresh domains, then the cell presences. The order matters because the reads are not one etcd
revision: an instance claimed on a cell that registered after the presences were read would look
like it sits on a missing cell, and rows created with a DesiredLRP after the desired read would
look orphaned. Reading rows before what judges them makes every such race err on the side of a
no-op (a creation refused by its compare, a cell that is present).

Applying: each action is one store transaction guarded by what was planned (see
control/bbs/controllers/convergence.py); actions on the same index (or the same task, or the
same process guid for creations) run in order, different ones concurrently with `workers`
workers. All the auctions of a pass go out as one LRP batch and one task batch at the end.
The converger emits no events: the BBS derives them from the etcd watch.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from control.bbs.controllers.convergence import ConvergenceController
from control.bbs.controllers.lrp_controller import start_request
from control.bbs.controllers.task_controller import task_start_request
from control.bbs.peers import AuctioneerClient
from control.bbs.store.domain_store import DomainStore
from control.bbs.store.lrp_store import LRPStore
from control.bbs.store.task_store import TaskStore
from control.kit.clock import Clock
from control.kit.etcd import FencedOut
from control.models.actual_lrp import ActualLRPState
from control.models.cell import CellPresence
from control.models.desired_lrp import SchedulingInfo
from control.models.task import Task, TaskState

from .actions import (Action, AuctionUnclaimed, CreateMissing, DeleteTask, DemoteResolving, FailTask,
                      KickCompleted, KickTasks, MarkSuspect, PromoteSuspect, PruneEvacuating,
                      RemoveSuspect, RestartCrashed, RetireExtra, RetireOrphaned, UnclaimReplacement)
from .config import ConvergerConfig
from .metrics import ConvergerMetrics
from .planner import plan
from .snapshot import Row, Snapshot, TaskRow, parse_desired, parse_rows, parse_tasks

log = structlog.get_logger("converger")
S = ActualLRPState


class Presences(Protocol):
    async def presences(self) -> dict[str, bytes]: ...


@dataclass
class Outcome:
    """What applying a plan did: per action kind, applied / noop (the rows had changed) / failed."""

    applied: Counter[str] = field(default_factory=Counter)
    noop: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    lrp_auctions: dict[str, set[int]] = field(default_factory=dict)  # process guid → indices
    task_auctions: list[str] = field(default_factory=list)
    missing_cells: set[str] = field(default_factory=set)

    def auction(self, guid: str, indices: list[int] | tuple[int, ...]) -> None:
        if indices:
            self.lrp_auctions.setdefault(guid, set()).update(indices)


@dataclass
class PassReport:
    skipped: bool
    planned: Counter[str]
    outcome: Outcome
    load_ms: float
    plan_ms: float
    apply_ms: float
    census: dict[str, int]

    @property
    def duration_ms(self) -> float:
        return self.load_ms + self.plan_ms + self.apply_ms


class Converger:
    def __init__(self, cfg: ConvergerConfig, lrps: LRPStore, tasks: TaskStore, domains: DomainStore,
                 presences: Presences, controller: ConvergenceController, auctioneer: AuctioneerClient,
                 clock: Clock, on_completed: Callable[[Task], None],
                 metrics: ConvergerMetrics | None = None) -> None:
        self.cfg = cfg
        self.lrps = lrps
        self.task_store = tasks
        self.domains = domains
        self.presences = presences
        self.controller = controller
        self.auctioneer = auctioneer
        self.clock = clock
        self.on_completed = on_completed  # hands a COMPLETED task with a callback URL to the worker
        self.metrics = metrics or ConvergerMetrics()
        self.passes = 0
        self.last_load_split = (0.0, 0.0)  # (read ms, parse ms) of the last load

    # ---- one pass -----------------------------------------------------------------------------
    async def run_pass(self) -> PassReport:
        """Load, plan, apply; logs one summary line and records the metrics. Raises when the
        snapshot cannot be read (the loop logs it and tries again next tick)."""
        t0 = time.perf_counter()
        try:
            snap = await self.load()
            t1 = time.perf_counter()
            now = self.clock.now_ns()
            actions = plan(snap, now, self.cfg)
            t2 = time.perf_counter()
            outcome = await self.apply(snap, actions, now)
            t3 = time.perf_counter()
        except Exception:
            self.metrics.passes.labels("failed").inc()
            raise
        report = PassReport(snap.cells is None, Counter(a.kind for a in actions), outcome,
                            (t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000, census(snap, outcome))
        self._record(report)
        return report

    async def load(self) -> Snapshot:
        t0 = time.perf_counter()
        actual, task_docs = await asyncio.gather(self.lrps.list_actual_json(), self.task_store.list_with_revisions())
        schedules, fresh = await asyncio.gather(self.lrps.list_schedules_with_revisions(), self.domains.fresh_names())
        presences = await self._presences()  # last: see the module docstring
        t1 = time.perf_counter()
        groups, malformed = parse_rows(actual)
        del actual
        desired, unreadable = parse_desired(schedules)
        tasks, bad_tasks = parse_tasks(task_docs)
        self.last_load_split = ((t1 - t0) * 1000, (time.perf_counter() - t1) * 1000)
        if malformed or unreadable:
            log.warning("unreadable-lrp-documents", actual_lrps=malformed, desired_lrps=sorted(unreadable)[:20])
        return Snapshot(desired=desired, actual=groups, fresh_domains=frozenset(fresh), tasks=tasks,
                        malformed_tasks=bad_tasks, unreadable_desired=unreadable, malformed_rows=malformed,
                        cells=None if presences is None else frozenset(presences),
                        cell_presences=presences or {})

    async def _presences(self) -> dict[str, CellPresence] | None:
        """Live cells by id; None when they cannot be listed (the pass is then skipped)."""
        try:
            values = await self.presences.presences()
        except Exception as exc:
            log.error("failed-listing-cells", error=str(exc))
            return None
        cells: dict[str, CellPresence] = {}
        for key, value in values.items():
            try:
                cell = CellPresence.model_validate_json(value)
            except ValueError:
                log.warning("invalid-cell-presence", key=key)
                continue
            cells[cell.cell_id] = cell
        return cells

    # ---- applying -----------------------------------------------------------------------------
    async def apply(self, snap: Snapshot, actions: list[Action], now: int) -> Outcome:
        out = Outcome()
        units: dict[tuple[str, str, int], list[Action]] = {}
        for action in actions:
            if isinstance(action, AuctionUnclaimed):
                out.auction(action.process_guid, action.indices)  # nothing to write
                out.applied[action.kind] += 1
            elif isinstance(action, KickTasks):
                out.task_auctions.extend(action.task_guids)
                out.applied[action.kind] += 1
            else:
                units.setdefault(_unit(action), []).append(action)
        tasks = {row.guid: row for row in snap.tasks}
        work = iter(list(units.values()))
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.cfg.workers, len(units))):
                    group.create_task(self._worker(work, snap, tasks, now, out))
        except* FencedOut as fenced:  # the only failure a worker lets out: stop the pass
            raise fenced.exceptions[0] from None
        await self._send_auctions(snap, tasks, out)
        return out

    async def _worker(self, work: Iterator[list[Action]], snap: Snapshot, tasks: dict[str, TaskRow],
                      now: int, out: Outcome) -> None:
        for unit in work:  # the iterator is shared: each worker takes the next unit
            current: Task | None = None  # a task unit's task after its previous write
            for action in unit:
                try:
                    applied, current = await self._apply_one(action, snap, tasks, now, out, current)
                except FencedOut:
                    raise  # another converger holds the lock: stop writing at once
                except Exception as exc:
                    out.failed[action.kind] += 1
                    log.warning("convergence-action-failed", kind=action.kind, action=_describe(action), error=str(exc))
                    break  # later actions of the unit were planned on this one succeeding
                (out.applied if applied else out.noop)[action.kind] += 1

    async def _apply_one(self, action: Action, snap: Snapshot, tasks: dict[str, TaskRow], now: int,
                         out: Outcome, current: Task | None) -> tuple[bool, Task | None]:
        c = self.controller
        match action:
            case PruneEvacuating(row=r):
                return await c.prune_evacuating(r.process_guid, r.index, r.tag), None
            case MarkSuspect(row=r):
                out.missing_cells.add(r.cell_id)
                return self._auction_if(await c.mark_suspect(r.process_guid, r.index, r.tag, now), r, out), None
            case UnclaimReplacement(row=r, suspect=s):
                out.missing_cells.add(r.cell_id)
                ok = await c.unclaim_replacement(r.process_guid, r.index, r.tag, s.tag, now)
                return self._auction_if(ok, r, out), None
            case PromoteSuspect(suspect=s, replacement=o):
                return await c.promote_suspect(s.process_guid, s.index, s.tag, o.tag if o else None, now), None
            case RemoveSuspect(row=r):
                return await c.remove_suspect(r.process_guid, r.index, r.tag), None
            case RestartCrashed(row=r):
                return self._auction_if(await c.restart_crashed(r.process_guid, r.index, r.tag, now), r, out), None
            case RetireExtra(row=r) | RetireOrphaned(row=r):
                return await self._retire(r, snap), None
            case CreateMissing(process_guid=guid, indices=indices):
                d = snap.desired[guid]
                created = await c.create_missing(guid, d.domain, d.rev, list(indices), now)
                out.auction(guid, created)
                return bool(created), None
            case FailTask(task_guid=guid, rev=rev, reason=reason):
                after = await c.fail_task(tasks[guid].task, rev, reason, now)
                return after is not None, after
            case DemoteResolving(task_guid=guid, rev=rev):
                after = await c.demote_task(tasks[guid].task, rev)
                return after is not None, after
            case DeleteTask(task_guid=guid, rev=rev):
                return await c.delete_task(guid, rev), None
            case KickCompleted(task_guid=guid):
                task = current or tasks[guid].task
                if task.state is not TaskState.COMPLETED:
                    return False, current  # its demotion did not happen: the task moved on
                self.on_completed(task)
                return True, current
        raise TypeError(f"unknown convergence action {action!r}")

    @staticmethod
    def _auction_if(applied: bool, row: Row, out: Outcome) -> bool:
        if applied:
            out.auction(row.process_guid, (row.index,))
        return applied

    async def _retire(self, row: Row, snap: Snapshot) -> bool:
        """RetireActualLRP (reference §2.2): UNCLAIMED/CRASHED rows, and rows whose cell is gone,
        are deleted; CLAIMED/RUNNING ones are stopped by their rep, which then removes the row."""
        cell = snap.cell_presences.get(row.cell_id)
        if row.state in (S.UNCLAIMED, S.CRASHED) or cell is None:
            return await self.controller.delete_ordinary(row.process_guid, row.index, row.tag)
        return await self.controller.stop_instance(cell, row.process_guid, row.instance_guid)

    async def _send_auctions(self, snap: Snapshot, tasks: dict[str, TaskRow], out: Outcome) -> None:
        lrp_requests = []
        for guid, indices in out.lrp_auctions.items():
            try:
                sched = SchedulingInfo.model_validate_json(snap.desired[guid].raw)
            except (KeyError, ValueError) as exc:
                log.warning("cannot-auction-lrp", process_guid=guid, error=str(exc))
                continue
            lrp_requests.append(start_request(sched, sorted(indices)))
        task_requests = [task_start_request(tasks[guid].task) for guid in out.task_auctions]
        await _best_effort("lrp", len(lrp_requests), lambda: self.auctioneer.request_lrp_auctions(lrp_requests))
        await _best_effort("task", len(task_requests), lambda: self.auctioneer.request_task_auctions(task_requests))

    # ---- reporting ----------------------------------------------------------------------------
    def _record(self, report: PassReport) -> None:
        self.passes += 1
        m = self.metrics
        m.passes.labels("skipped" if report.skipped else "ok").inc()
        m.pass_seconds.observe(report.duration_ms / 1000)
        m.last_pass.set(time.time())
        for result, counts in (("applied", report.outcome.applied), ("noop", report.outcome.noop),
                               ("failed", report.outcome.failed)):
            for kind, n in counts.items():
                m.actions.labels(kind, result).inc(n)
        m.record_census(report.census)
        o = report.outcome
        log.info("convergence-pass", skipped=report.skipped, duration_ms=round(report.duration_ms, 1),
                 load_ms=round(report.load_ms, 1), read_ms=round(self.last_load_split[0], 1),
                 parse_ms=round(self.last_load_split[1], 1), plan_ms=round(report.plan_ms, 1),
                 apply_ms=round(report.apply_ms, 1), planned=dict(report.planned), applied=dict(o.applied),
                 noop=dict(o.noop), failed=dict(o.failed), missing_cells=sorted(o.missing_cells),
                 lrp_auctions=sum(len(i) for i in o.lrp_auctions.values()), task_auctions=len(o.task_auctions),
                 actual_lrps=report.census.get("actual_lrps", 0), cells=report.census.get("cells_present", 0))


def _unit(action: Action) -> tuple[str, str, int]:
    """Actions with the same unit run in order: same index, same task, or same guid's creation."""
    match action:
        case PromoteSuspect(suspect=r):
            return ("lrp", r.process_guid, r.index)
        case CreateMissing(process_guid=guid):
            return ("create", guid, 0)
        case FailTask(task_guid=guid) | DemoteResolving(task_guid=guid) | DeleteTask(task_guid=guid) \
                | KickCompleted(task_guid=guid):
            return ("task", guid, 0)
    row = getattr(action, "row")
    return ("lrp", row.process_guid, row.index)


def _describe(action: Action) -> dict[str, object]:
    row = getattr(action, "row", None) or getattr(action, "suspect", None)
    if isinstance(row, Row):
        return {"process_guid": row.process_guid, "index": row.index, "presence": row.presence}
    return {k: getattr(action, k) for k in ("process_guid", "task_guid") if hasattr(action, k)}


async def _best_effort(kind: str, count: int, send: Callable[[], Awaitable[None]]) -> None:
    """Auction requests are best effort (reference §2.7, §5.2): the next pass sends them again."""
    if not count:
        return
    try:
        await send()
    except Exception as exc:
        log.warning("auction-request-failed", kind=kind, count=count, error=str(exc))


CENSUS_STATES = tuple((p, s) for p in ("ORDINARY", "EVACUATING", "SUSPECT") for s in S)


def census(snap: Snapshot, out: Outcome) -> dict[str, int]:
    """Step 13's gauges, from the snapshot the pass planned on."""
    counts: Counter[tuple[str, str]] = Counter()
    for slots in snap.actual.values():
        for slot in slots.values():
            for row in slot:
                if row is not None:
                    counts[(row.presence, row.state)] += 1
    result = {f"lrps_{p.lower()}_{s.value.lower()}": counts.get((p, s.value), 0) for p, s in CENSUS_STATES}
    result["actual_lrps"] = sum(counts.values())
    result["desired_lrps"] = len(snap.desired)
    result["desired_instances"] = sum(d.instances for d in snap.desired.values())
    result["cells_present"] = len(snap.cells or ())
    result["cells_missing"] = len(out.missing_cells)
    result["malformed_actual_lrps"] = snap.malformed_rows
    task_counts = Counter(row.task.state.value.lower() for row in snap.tasks)
    for state in TaskState:
        result[f"tasks_{state.value.lower()}"] = task_counts.get(state.value.lower(), 0)
    return result
