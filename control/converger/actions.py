"""What the planner decides and the shell applies: one small frozen dataclass per kind.

Each LRP action names the rows it was decided on (their modification tags travel with them);
the shell applies it only if those rows are still exactly as planned, so a concurrent change
turns the action into a no-op, never into a partial or wrong write. Each task action carries
the task key's mod_revision for the same reason. `kind` is the stable name used in logs and
metrics.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .snapshot import Row


@dataclass(frozen=True, slots=True)
class Action:
    kind: ClassVar[str] = "action"


# ---- LRPs (reference §5.2, §2.6) ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PruneEvacuating(Action):
    """§5.2 step 2: an EVACUATING row whose cell is no longer present is deleted."""

    kind: ClassVar[str] = "prune-evacuating"
    row: Row


@dataclass(frozen=True, slots=True)
class AuctionUnclaimed(Action):
    """§5.2 step 4: ORDINARY UNCLAIMED rows older than the stale threshold are auctioned again
    (no write: the auction request is all)."""

    kind: ClassVar[str] = "auction-unclaimed"
    process_guid: str
    indices: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MarkSuspect(Action):
    """§5.2 step 5 / §2.6.1: an ORDINARY RUNNING or CLAIMED row on a missing cell becomes
    SUSPECT (it keeps serving), and a new UNCLAIMED replacement is created and auctioned."""

    kind: ClassVar[str] = "mark-suspect"
    row: Row


@dataclass(frozen=True, slots=True)
class UnclaimReplacement(Action):
    """§2.6.1: the index already has a SUSPECT row, so the ORDINARY one on a missing cell is the
    replacement, whose cell is *also* missing: it is unclaimed and auctioned again."""

    kind: ClassVar[str] = "unclaim-replacement"
    row: Row
    suspect: Row


@dataclass(frozen=True, slots=True)
class CreateMissing(Action):
    """§5.2 step 6: indices in [0, instances) without an ORDINARY row get an UNCLAIMED one and
    an auction (never gated by domain freshness)."""

    kind: ClassVar[str] = "create-missing"
    process_guid: str
    indices: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RetireExtra(Action):
    """§5.2 step 6: an ORDINARY row at an index ≥ instances, domain fresh, is retired."""

    kind: ClassVar[str] = "retire-extra"
    row: Row


@dataclass(frozen=True, slots=True)
class RetireOrphaned(Action):
    """§5.2 step 7: an ORDINARY row with no DesiredLRP, domain fresh, is retired."""

    kind: ClassVar[str] = "retire-orphaned"
    row: Row


@dataclass(frozen=True, slots=True)
class RemoveSuspect(Action):
    """§5.2 step 8 / §2.6.3–4: the SUSPECT row is deleted — `reason` "orphaned" (no DesiredLRP,
    domain fresh) or "extra" (its replacement is RUNNING too)."""

    kind: ClassVar[str] = "remove-suspect"
    row: Row
    reason: str


@dataclass(frozen=True, slots=True)
class PromoteSuspect(Action):
    """§5.2 step 9 / §2.6.2: the SUSPECT row's cell is back: the ORDINARY replacement (if any)
    is deleted and the suspect becomes ORDINARY again."""

    kind: ClassVar[str] = "promote-suspect"
    suspect: Row
    replacement: Row | None


@dataclass(frozen=True, slots=True)
class RestartCrashed(Action):
    """§5.2 step 10 / §2.3: a CRASHED row whose backoff has passed goes to UNCLAIMED and is
    auctioned."""

    kind: ClassVar[str] = "restart-crashed"
    row: Row


# ---- tasks (reference §5.3) ----------------------------------------------------------------------

EXPIRED_PENDING = "not started within time limit"
CELL_DISAPPEARED = "cell disappeared before completion"


@dataclass(frozen=True, slots=True)
class FailTask(Action):
    """§5.3 steps 1 and 3: PENDING too long, or RUNNING on a cell that is gone → COMPLETED, failed."""

    kind: ClassVar[str] = "fail-task"
    task_guid: str
    rev: int
    reason: str


@dataclass(frozen=True, slots=True)
class KickTasks(Action):
    """§5.3 step 2: every other PENDING task is sent to the auctioneer again (one batch)."""

    kind: ClassVar[str] = "kick-tasks"
    task_guids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DemoteResolving(Action):
    """§5.3 step 4: RESOLVING for longer than kick_task (its resolver died) → COMPLETED. The
    planner follows it with KickCompleted when the task has a callback URL (step 6)."""

    kind: ClassVar[str] = "demote-resolving"
    task_guid: str
    rev: int


@dataclass(frozen=True, slots=True)
class DeleteTask(Action):
    """§5.3 step 5 ("expired": first completed longer ago than expire_completed_task) and step 7
    ("malformed": the stored task does not deserialize)."""

    kind: ClassVar[str] = "delete-task"
    task_guid: str
    rev: int
    reason: str


@dataclass(frozen=True, slots=True)
class KickCompleted(Action):
    """§5.3 step 6: COMPLETED with updated_at older than kick_task and a completion callback URL
    → handed to the callback worker again (no write here; the worker marks it RESOLVING)."""

    kind: ClassVar[str] = "kick-completed"
    task_guid: str


ALL_KINDS: tuple[type[Action], ...] = (
    PruneEvacuating, AuctionUnclaimed, MarkSuspect, UnclaimReplacement, CreateMissing, RetireExtra,
    RetireOrphaned, RemoveSuspect, PromoteSuspect, RestartCrashed, FailTask, KickTasks,
    DemoteResolving, DeleteTask, KickCompleted)
