"""The convergence planner: a pure function of a snapshot and `now` that returns typed actions.

It follows reference §5.2 (LRPs), §2.6 (SUSPECT) and §5.3 (tasks) step by step; every rule
below names its step. One pass over the rows, O(rows + desired instances + tasks).

Decisions per (process_guid, index), with O/E/S its ORDINARY/EVACUATING/SUSPECT rows and a
cell "missing" when it is not in the cell set (every cell is missing when the set is empty,
as in Diego's query):

1. E on a missing cell → PruneEvacuating (step 2). Independent of everything else.
2. No DesiredLRP (orphaned): O → RetireOrphaned and S → RemoveSuspect("orphaned"), each only
   when the row's domain is fresh (steps 7, 8). Nothing else: Diego's other queries join the
   DesiredLRP.
3. Index ≥ instances with the DesiredLRP's domain fresh: O → RetireExtra (step 6). An index
   whose O is retired gets no other decision this pass (restarting or re-auctioning a row that
   is being retired would only race with the retirement).
4. SUSPECT handling, in this order of precedence:
   a. S RUNNING and O RUNNING on a present cell → RemoveSuspect("extra") (step 8, §2.6.3): the
      replacement serves; it wins even when S's cell is back.
   b. S's cell is back (the cell set is not empty and holds it) → PromoteSuspect, deleting O
      whatever its state (step 9, §2.6.2; Diego skips this when the cell set is empty).
   c. O RUNNING/CLAIMED on a missing cell with S present → UnclaimReplacement (§2.6.1: the
      replacement's cell is missing too).
   d. O RUNNING/CLAIMED on a missing cell, no S → MarkSuspect (step 5).
5. O UNCLAIMED with now − since > stale_unclaimed → its index joins one AuctionUnclaimed per
   process guid (step 4); O CRASHED whose backoff has passed (§2.3) → RestartCrashed (step 10).
6. Indices in [0, instances) without O → one CreateMissing per process guid (step 6, never
   gated by freshness), except where a promoted suspect fills the slot this pass.

Not here: pruning expired domains (etcd leases delete them, so the fresh set is simply what is
stored), step 11 (instance route/metric-tag updates on reps: no rep endpoint for it yet), and
step 13's gauges (the shell counts them). The empty-cell-set and failed-cell-listing edge cases
are handled as Diego does: the first makes every RUNNING/CLAIMED row missing, the second
(`snapshot.cells is None`) plans nothing at all, tasks included.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from control.models.actual_lrp import ActualLRPState
from control.models.crash_policy import should_restart
from control.models.task import TaskState

from .actions import (CELL_DISAPPEARED, EXPIRED_PENDING, Action, AuctionUnclaimed, CreateMissing,
                      DeleteTask, DemoteResolving, FailTask, KickCompleted, KickTasks, MarkSuspect,
                      PromoteSuspect, PruneEvacuating, RemoveSuspect, RestartCrashed, RetireExtra,
                      RetireOrphaned, UnclaimReplacement)
from .config import ConvergerConfig
from .snapshot import Slot, Snapshot

S = ActualLRPState
T = TaskState
UNCLAIMED, CLAIMED, RUNNING, CRASHED = S.UNCLAIMED.value, S.CLAIMED.value, S.RUNNING.value, S.CRASHED.value
ACTIVE = frozenset((RUNNING, CLAIMED))


def _ns(d: timedelta) -> int:
    return d // timedelta(microseconds=1) * 1000


def plan(snapshot: Snapshot, now_ns: int, cfg: ConvergerConfig) -> list[Action]:
    """Every action of one pass, LRPs first, then tasks. Nothing when the cells are unknown."""
    if snapshot.cells is None:
        return []
    return plan_lrps(snapshot, now_ns, cfg) + plan_tasks(snapshot, now_ns, cfg)


def plan_lrps(snap: Snapshot, now: int, cfg: ConvergerConfig) -> list[Action]:
    cells = snap.cells or frozenset()
    fresh = snap.fresh_domains
    stale_ns = _ns(cfg.stale_unclaimed)
    actions: list[Action] = []
    add = actions.append
    promoted: set[tuple[str, int]] = set()

    def missing(cell_id: str) -> bool:
        return not cells or cell_id not in cells

    for guid, slots in snap.actual.items():
        if guid in snap.unreadable_desired:
            continue  # we cannot tell what is desired: touch nothing of it
        desired = snap.desired.get(guid)
        if desired is None:
            for index in sorted(slots):
                _orphaned(slots[index], fresh, missing, add)
            continue
        extra_retirable = desired.domain in fresh
        stale: list[int] = []
        for index in sorted(slots):
            o, e, s = slots[index]
            if e is not None and missing(e.cell_id):
                add(PruneEvacuating(e))
            if index >= desired.instances and extra_retirable and o is not None:
                add(RetireExtra(o))
                continue
            o_lost = o is not None and o.state in ACTIVE and missing(o.cell_id)
            if s is not None:
                if s.state == RUNNING and o is not None and o.state == RUNNING and not o_lost:
                    add(RemoveSuspect(s, "extra"))
                elif cells and s.cell_id in cells:
                    add(PromoteSuspect(s, o))
                    promoted.add((guid, index))  # the suspect fills the ORDINARY slot
                    continue  # o (if any) is deleted by the promotion
                elif o_lost:
                    assert o is not None
                    add(UnclaimReplacement(o, s))
                    continue
            elif o_lost:
                assert o is not None
                add(MarkSuspect(o))
                continue
            if o is None:
                continue
            if o.state == UNCLAIMED:
                if now - o.since > stale_ns:
                    stale.append(index)
            elif o.state == CRASHED and should_restart(now, o.since, o.crash_count):
                add(RestartCrashed(o))
        if stale:
            add(AuctionUnclaimed(guid, tuple(stale)))

    for guid, desired in snap.desired.items():
        slots = snap.actual.get(guid, {})
        absent = tuple(i for i in range(desired.instances)
                       if ((slot := slots.get(i)) is None or slot.ordinary is None) and (guid, i) not in promoted)
        if absent:
            add(CreateMissing(guid, absent))
    return actions


def _orphaned(slot: Slot, fresh: frozenset[str], missing: Callable[[str], bool],
              add: Callable[[Action], None]) -> None:
    o, e, s = slot
    if e is not None and missing(e.cell_id):
        add(PruneEvacuating(e))
    if o is not None and o.domain in fresh:
        add(RetireOrphaned(o))
    if s is not None and s.domain in fresh:
        add(RemoveSuspect(s, "orphaned"))


def plan_tasks(snap: Snapshot, now: int, cfg: ConvergerConfig) -> list[Action]:
    cells = snap.cells or frozenset()
    kick_ns, pending_ns, completed_ns = _ns(cfg.kick_task), _ns(cfg.expire_pending_task), _ns(cfg.expire_completed_task)
    actions: list[Action] = []
    add = actions.append
    kick: list[str] = []
    for row in snap.tasks:
        task, guid = row.task, row.task.task_guid
        callback = bool(task.task_definition.completion_callback_url)
        if task.state is T.PENDING:
            age = now - task.created_at
            if age > pending_ns:
                add(FailTask(guid, row.rev, EXPIRED_PENDING))          # step 1
            elif age < pending_ns:
                kick.append(guid)                                      # step 2
        elif task.state is T.RUNNING:
            if not cells or task.cell_id not in cells:
                add(FailTask(guid, row.rev, CELL_DISAPPEARED))         # step 3
        elif task.state is T.RESOLVING:
            if now - task.updated_at > kick_ns:
                if now - task.first_completed_at > completed_ns:
                    add(DeleteTask(guid, row.rev, "expired"))          # steps 4 + 5 at once
                else:
                    add(DemoteResolving(guid, row.rev))                # step 4
                    if callback:
                        add(KickCompleted(guid))                       # step 6
        elif task.state is T.COMPLETED:
            if now - task.first_completed_at > completed_ns:
                add(DeleteTask(guid, row.rev, "expired"))              # step 5
            elif now - task.updated_at > kick_ns and callback:
                add(KickCompleted(guid))                               # step 6
    for guid, rev in snap.malformed_tasks:
        add(DeleteTask(guid, rev, "malformed"))                        # step 7
    if kick:
        add(KickTasks(tuple(kick)))
    return actions
