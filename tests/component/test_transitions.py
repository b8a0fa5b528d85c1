"""Every (from, to) pair of the ActualLRP transition table (reference §2.1) and of the task
state machine (§2.7), walked against a real BBS over real etcd through the HTTP API.

Legal requests must land in the target state; illegal ones must get a 409 typed error and leave
every etcd key of the index (or the task) exactly as it was: same bytes, same mod_revision.
The expectations come from the tables themselves (`allows_transition`, `TASK_TRANSITIONS`), so
a change to a table without a matching change to the BBS (or the reverse) fails here.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from control.kit.etcd import Etcd
from control.models.actual_lrp import (EMPTY_KEY, TRANSITIONS, ActualLRP, ActualLRPState, InstanceKey,
                                       Presence, allows_transition)
from control.models.errors import (CannotBeClaimed, CannotBeCrashed, CannotBeStarted, InvalidRequest,
                                   InvalidTransition, PydiegoError, RunningOnDifferentCell)
from control.models.task import TASK_TRANSITIONS, Task, TaskState, task_allows
from tests.component.conftest import RunningBBS
from tests.factories import desired_lrp, start_body, task_request

S = ActualLRPState
CUR = InstanceKey(instance_guid="ig-1", cell_id="cell-1")     # the incarnation set up in `from`
OTHER = InstanceKey(instance_guid="ig-2", cell_id="cell-2")   # anyone else

Snapshot = dict[bytes, tuple[bytes, int]]


async def snapshot(etcd: Etcd, prefix: bytes) -> Snapshot:
    kvs, _ = await etcd.range(prefix)
    return {kv.key: (kv.value, kv.mod_revision) for kv in kvs}


# ---- ActualLRPs ----------------------------------------------------------------------------------

def key_body(key: InstanceKey) -> dict[str, str]:
    return {"instance_guid": key.instance_guid, "cell_id": key.cell_id}


@dataclass(frozen=True)
class Attempt:
    """One request that tries to move a row from `from` to `to`.

    `verb` is the endpoint; `key` the instance key it carries (EMPTY_KEY for the BBS-internal
    unclaim that a crash with immediate restart or an evacuation performs); `gate` the target
    state whose table entry the BBS evaluates for this request (a crash is judged as a move to
    CRASHED even when the policy then writes UNCLAIMED); `crashes` how many crashes (each with
    an immediate restart) the index has behind it before the `from` row is set up."""

    verb: str
    key: InstanceKey
    gate: ActualLRPState
    crashes: int = 0
    sent_key: InstanceKey | None = None  # what the request body carries, when not `key`

    @property
    def body_key(self) -> InstanceKey:
        return self.sent_key if self.sent_key is not None else self.key


def attempts_for(frm: ActualLRPState, to: ActualLRPState) -> list[Attempt]:
    """The API requests that lead from `frm` to `to`, with the same key, another key, and the
    BBS-internal path where the API reaches it."""
    cur_keys = [CUR] if frm in (S.CLAIMED, S.RUNNING) else []  # UNCLAIMED/CRASHED rows have no key
    if to is S.CLAIMED:
        return [Attempt("claim", k, S.CLAIMED) for k in cur_keys + [OTHER]]
    if to is S.RUNNING:
        return [Attempt("start", k, S.RUNNING) for k in cur_keys + [OTHER]]
    if to is S.CRASHED:
        # two crashes behind it, so a legal crash (the third) lands in CRASHED, not UNCLAIMED
        return [Attempt("crash", k, S.CRASHED, crashes=2) for k in cur_keys + [OTHER]]
    # to UNCLAIMED
    if frm is S.UNCLAIMED:
        return [Attempt("fail", EMPTY_KEY, S.UNCLAIMED)]  # re-written with a placement error
    if frm is S.CRASHED:
        return []  # only the converger's restart: asserted on the table below
    internal = [
        # BBS-internal unclaims (k empty), triggered by the owning cell's request
        Attempt("crash", EMPTY_KEY, S.UNCLAIMED, sent_key=CUR),             # immediate restart
        Attempt("evacuate_claimed", EMPTY_KEY, S.UNCLAIMED, sent_key=CUR),  # unclaim + auction
    ]
    if frm is S.RUNNING:
        internal.append(Attempt("evacuate_running", EMPTY_KEY, S.UNCLAIMED, sent_key=CUR))  # the dance
    # the same requests from another instance are judged on their own key and refused
    return internal + [Attempt("crash", OTHER, S.CRASHED), Attempt("evacuate_claimed", OTHER, S.UNCLAIMED)]


async def lrp_in_state(bbs: RunningBBS, frm: ActualLRPState, crashes: int) -> str:
    """Desire one instance and drive index 0 to `frm` (owned by CUR when it has a key)."""
    guid = (await bbs.client.desire_lrp(desired_lrp(instances=1))).process_guid
    c = bbs.client
    for n in range(crashes if frm is not S.CRASHED else 2):
        await c.start(guid, 0, f"ig-earlier-{n}", "cell-9", "10.0.0.9")
        await c.crash(guid, 0, f"ig-earlier-{n}", "cell-9", "Exit status 1")
    if frm in (S.CLAIMED, S.RUNNING, S.CRASHED):
        await c.claim(guid, 0, CUR.instance_guid, CUR.cell_id)
    if frm in (S.RUNNING, S.CRASHED):
        await c.start(guid, 0, CUR.instance_guid, CUR.cell_id, "10.0.0.1")
    if frm is S.CRASHED:
        await c.crash(guid, 0, CUR.instance_guid, CUR.cell_id, "Exit status 2")
    (row,) = await c.actual_lrps(process_guid=guid)
    assert row.state is frm
    return guid


async def call(bbs: RunningBBS, guid: str, attempt: Attempt) -> Any:
    body: dict[str, Any] = key_body(attempt.body_key)
    if attempt.verb == "fail":
        body = {"error_message": "found no compatible cell"}
    elif attempt.verb == "crash":
        body["error_message"] = "Exit status 137"
    elif attempt.verb in ("start", "evacuate_running"):
        body = start_body(attempt.body_key.instance_guid, attempt.body_key.cell_id, address="10.0.0.77")
    return await bbs.client.actual_lrp_call(guid, 0, attempt.verb, body)


REFUSAL = {"claim": CannotBeClaimed, "start": CannotBeStarted, "crash": CannotBeCrashed}


def rows_by_presence(rows: list[ActualLRP]) -> dict[Presence, ActualLRP]:
    return {r.presence: r for r in rows}


@pytest.mark.parametrize(("frm", "to"), list(TRANSITIONS), ids=[f"{f}->{t}" for f, t in TRANSITIONS])
async def test_actual_lrp_transition_table_against_the_bbs(
        clocked_bbs: RunningBBS, etcd: Etcd, frm: ActualLRPState, to: ActualLRPState) -> None:
    bbs = clocked_bbs
    attempts = attempts_for(frm, to)
    if frm is S.CRASHED and to is S.UNCLAIMED:
        # Reachable only inside the BBS (the converger restarts a CRASHED row after its
        # backoff, reference §2.3 step 4); no API request leads there, so assert the table.
        assert allows_transition(S.CRASHED, EMPTY_KEY, S.UNCLAIMED, EMPTY_KEY)
        assert not allows_transition(S.CRASHED, EMPTY_KEY, S.UNCLAIMED, OTHER)
    if frm is S.CRASHED and to in (S.CLAIMED, S.RUNNING):
        # Legal by the table only for k == the stored key, which is empty for a CRASHED row; a
        # cell always sends a key, so the request schema refuses an empty one ("effectively never").
        assert allows_transition(frm, EMPTY_KEY, to, EMPTY_KEY)
        guid = await lrp_in_state(bbs, frm, crashes=0)
        before = await snapshot(etcd, bbs.bbs.keys.actual_index(guid, 0))
        with pytest.raises(InvalidRequest):
            await call(bbs, guid, Attempt("claim" if to is S.CLAIMED else "start", EMPTY_KEY, to))
        assert await snapshot(etcd, bbs.bbs.keys.actual_index(guid, 0)) == before

    for attempt in attempts:
        guid = await lrp_in_state(bbs, frm, attempt.crashes)
        cur_key = CUR if frm in (S.CLAIMED, S.RUNNING) else EMPTY_KEY
        legal = allows_transition(frm, cur_key, attempt.gate, attempt.key)
        prefix = bbs.bbs.keys.actual_index(guid, 0)
        before = await snapshot(etcd, prefix)
        auctions_before = len(bbs.auctioneer.lrp_batches)
        label = f"{frm}->{to} via {attempt.verb} with {attempt.body_key}"

        if not legal:
            if attempt.verb.startswith("evacuate_"):
                # Evacuation calls for an instance the BBS does not know are not errors in
                # Diego: the answer is "do not keep the container", and nothing changes.
                assert await call(bbs, guid, attempt) == {"keep_container": False}, label
            else:
                with pytest.raises(PydiegoError) as exc:
                    await call(bbs, guid, attempt)
                assert isinstance(exc.value, REFUSAL[attempt.verb]), label
                assert isinstance(exc.value, InvalidTransition) and exc.value.status == 409, label
            assert await snapshot(etcd, prefix) == before, f"{label} changed etcd"
            assert len(bbs.auctioneer.lrp_batches) == auctions_before, label
            continue

        answer = await call(bbs, guid, attempt)
        rows = rows_by_presence(await bbs.client.actual_lrps(process_guid=guid))
        ordinary = rows[Presence.ORDINARY]
        assert ordinary.state is to, label
        if to in (S.CLAIMED, S.RUNNING):
            assert ordinary.instance_key == attempt.key, label
        if attempt.verb == "claim" and frm is S.CLAIMED:
            assert await snapshot(etcd, prefix) == before, f"{label}: an idempotent claim writes nothing"
        if attempt.verb == "start":
            assert ordinary.address == "10.0.0.77", label
        if attempt.verb == "crash" and to is S.CRASHED:
            assert ordinary.crash_count == 3 and ordinary.instance_key.empty, label
        if attempt.verb == "crash" and to is S.UNCLAIMED:
            assert ordinary.crash_count == 1 and ordinary.crash_reason == "Exit status 137", label
        if attempt.verb == "fail":
            assert ordinary.placement_error == "found no compatible cell", label
        if attempt.verb == "evacuate_claimed":
            assert answer == {"keep_container": False}, label
        if attempt.verb == "evacuate_running":
            assert answer == {"keep_container": True}, label
            evacuating = rows[Presence.EVACUATING]
            assert (evacuating.state, evacuating.instance_key) == (S.RUNNING, CUR), label
        if to is S.UNCLAIMED and frm is not S.UNCLAIMED:
            # every BBS-internal unclaim asks for a new placement at once
            assert len(bbs.auctioneer.lrp_batches) == auctions_before + 1, label
            assert bbs.auctioneer.lrp_batches[-1][0].indices == [0], label
        else:
            assert len(bbs.auctioneer.lrp_batches) == auctions_before, label


def test_every_actual_lrp_pair_is_walked() -> None:
    """Each pair is exercised through the API, except the one only the converger reaches."""
    for frm, to in TRANSITIONS:
        assert attempts_for(frm, to) or (frm, to) == (S.CRASHED, S.UNCLAIMED)
    assert len(TRANSITIONS) == len(S) ** 2


# ---- tasks ---------------------------------------------------------------------------------------

DELETED = "DELETED"  # not a TaskState: the row is gone
T = TaskState
TASK_TARGETS: list[TaskState | str] = [*TaskState, DELETED]
TaskCall = Callable[[RunningBBS, str], Awaitable[Any]]

# verb → the state it leads to and the request that performs it
TASK_VERBS: dict[str, tuple[TaskState | str, TaskCall]] = {
    "start on the same cell": (T.RUNNING, lambda b, g: b.client.task_call(g, "start", {"cell_id": "cell-1"})),
    "start on another cell": (T.RUNNING, lambda b, g: b.client.task_call(g, "start", {"cell_id": "cell-2"})),
    "reject": (T.PENDING, lambda b, g: b.client.task_call(g, "reject", {"error_message": "no room"})),
    "complete on the same cell": (T.COMPLETED, lambda b, g: b.client.task_call(
        g, "complete", {"cell_id": "cell-1", "result": "42"})),
    "complete from another cell": (T.COMPLETED, lambda b, g: b.client.task_call(
        g, "complete", {"cell_id": "cell-2", "result": "42"})),
    "cancel": (T.COMPLETED, lambda b, g: b.client.task_call(g, "cancel")),
    "fail": (T.COMPLETED, lambda b, g: b.client.task_call(g, "fail", {"error_message": "broken"})),
    "reject after max retries": (T.COMPLETED, lambda b, g: b.client.task_call(
        g, "reject", {"error_message": "no room"})),
    "resolving": (T.RESOLVING, lambda b, g: b.client.task_call(g, "resolving")),
    "delete": (DELETED, lambda b, g: b.client.delete_task(g)),
}


def task_outcome(frm: TaskState, verb: str) -> str:
    """Reference §2.7, request by request: "ok", "noop" (answered, nothing written) or "refused"."""
    if verb == "start on the same cell":
        return {T.PENDING: "ok", T.RUNNING: "noop"}.get(frm, "refused")
    if verb == "start on another cell":
        return "ok" if frm is T.PENDING else "refused"
    if verb in ("reject", "cancel", "fail", "reject after max retries"):
        return "ok" if frm in (T.PENDING, T.RUNNING) else "refused"
    if verb == "complete on the same cell":
        return "ok" if frm is T.RUNNING else "refused"  # CompleteTask only from RUNNING
    if verb == "complete from another cell":
        return "refused"
    if verb == "resolving":
        return "ok" if frm is T.COMPLETED else "refused"
    assert verb == "delete"
    return "ok" if frm is T.RESOLVING else "refused"


async def task_in_state(bbs: RunningBBS, frm: TaskState, rejections: int) -> str:
    req = task_request()
    guid = (await bbs.client.desire_task(req["task_guid"], req["domain"], req["task_definition"])).task_guid
    for _ in range(rejections):
        await bbs.client.task_call(guid, "reject", {"error_message": "no room"})
    if frm is not T.PENDING:
        assert await bbs.client.start_task(guid, "cell-1") is True
    if frm in (T.COMPLETED, T.RESOLVING):
        await bbs.client.complete_task(guid, "cell-1", result="7")
    if frm is T.RESOLVING:
        await bbs.client.task_call(guid, "resolving")
    assert (await bbs.client.task(guid)).state is frm
    return guid


def _task_pairs() -> list[tuple[TaskState, TaskState | str]]:
    return [(f, t) for f in TaskState for t in TASK_TARGETS]


@pytest.mark.parametrize(("frm", "to"), _task_pairs(), ids=[f"{f}->{t}" for f, t in _task_pairs()])
async def test_task_transitions_against_the_bbs(clocked_bbs: RunningBBS, etcd: Etcd,
                                                frm: TaskState, to: TaskState | str) -> None:
    bbs = clocked_bbs
    await bbs.add_cell("cell-1", etcd)
    legal_pair = (frm, to) == (T.RESOLVING, DELETED) or (to != DELETED and task_allows(frm, to))  # type: ignore[arg-type]
    verbs = [v for v, (target, _) in TASK_VERBS.items() if target == to]
    succeeded = []
    for verb in verbs:
        rejections = 3 if verb == "reject after max retries" else 0
        guid = await task_in_state(bbs, frm, rejections)
        key = bbs.bbs.keys.task(guid)
        before_kv = await etcd.get(key)
        assert before_kv is not None
        before = Task.model_validate_json(before_kv.value)
        outcome = task_outcome(frm, verb)
        label = f"{frm}->{to} via {verb}"
        auctions = len(bbs.auctioneer.task_batches)
        cancels = len(bbs.reps.cancels)

        if outcome != "ok":
            if outcome == "noop":
                assert await bbs.client.start_task(guid, "cell-1") is False, label
            else:
                with pytest.raises(PydiegoError) as exc:
                    await TASK_VERBS[verb][1](bbs, guid)
                expected = RunningOnDifferentCell if (verb == "complete from another cell" and frm is T.RUNNING) \
                    else InvalidTransition
                assert type(exc.value) is expected and exc.value.status == 409, label
            after_kv = await etcd.get(key)
            assert after_kv is not None and (after_kv.value, after_kv.mod_revision) == \
                (before_kv.value, before_kv.mod_revision), f"{label} changed etcd"
            assert len(bbs.auctioneer.task_batches) == auctions and len(bbs.reps.cancels) == cancels, label
            continue

        assert legal_pair, f"{label} succeeded but ({frm}, {to}) is not in TASK_TRANSITIONS"
        await TASK_VERBS[verb][1](bbs, guid)
        succeeded.append(verb)
        if to == DELETED:
            assert await etcd.get(key) is None, label
            continue
        after = await bbs.client.task(guid)
        assert after.state is to, label
        if to is T.RUNNING:
            assert after.cell_id == ("cell-1" if verb == "start on the same cell" else "cell-2"), label
        if to is T.PENDING:
            assert (after.rejection_count, after.rejection_reason, after.cell_id) == (1, "no room", ""), label
            assert len(bbs.auctioneer.task_batches) == auctions, f"{label}: task convergence re-auctions, not reject (§4.6)"
        if to is T.COMPLETED:
            assert after.cell_id == "" and after.first_completed_at > 0, label
            failed, reason, result = {
                "complete on the same cell": (False, "", "42"),
                "cancel": (True, "task was cancelled", ""),
                "fail": (True, "broken", ""),
                "reject after max retries": (True, "no room", ""),
            }[verb]
            assert (after.failed, after.failure_reason, after.result) == (failed, reason, result), label
            if verb == "cancel":
                # the rep running it is told to stop; a PENDING task has no rep yet
                assert bbs.reps.cancels[cancels:] == ([("cell-1", guid)] if frm is T.RUNNING else []), label
        if to is T.RESOLVING:
            assert after.result == before.result, label

    if (frm, to) == (T.RESOLVING, T.COMPLETED):
        # Legal, but only the converger demotes a RESOLVING task whose resolver died (after
        # kick_task_duration); the API refuses every request that would, as asserted above.
        assert task_allows(frm, to) and not succeeded
    elif legal_pair:
        assert succeeded, f"({frm}, {to}) is legal but no request reached it"
    else:
        assert not succeeded


def test_task_table_is_exactly_reference_2_7() -> None:
    assert set(TASK_TRANSITIONS) == {
        (T.PENDING, T.RUNNING), (T.PENDING, T.PENDING), (T.RUNNING, T.PENDING), (T.PENDING, T.COMPLETED),
        (T.RUNNING, T.COMPLETED), (T.COMPLETED, T.RESOLVING), (T.RESOLVING, T.COMPLETED)}
