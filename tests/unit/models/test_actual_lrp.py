"""The ActualLRP transition table pinned to reference §2.1, and the per-state invariants of
Diego's ActualLRP.Validate() (§1.2). The component test walks the same table against the BBS;
this one makes sure the table itself says what the reference says."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from control.models.actual_lrp import (EMPTY_KEY, TRANSITIONS, ActualLRP, ActualLRPState, InstanceKey,
                                       Presence, Rule, allows_transition)
from control.models.desired_lrp import ModificationTag

S = ActualLRPState
CUR = InstanceKey(instance_guid="ig-1", cell_id="cell-1")
OTHER = InstanceKey(instance_guid="ig-2", cell_id="cell-2")

# reference §2.1, row by row (from → to: rule for the request's key k)
REFERENCE_2_1 = {
    (S.UNCLAIMED, S.UNCLAIMED): Rule.ANY, (S.UNCLAIMED, S.CLAIMED): Rule.ANY,
    (S.UNCLAIMED, S.RUNNING): Rule.ANY, (S.UNCLAIMED, S.CRASHED): Rule.NEVER,
    (S.CLAIMED, S.UNCLAIMED): Rule.EMPTY, (S.CLAIMED, S.CLAIMED): Rule.SAME,
    (S.CLAIMED, S.RUNNING): Rule.ANY, (S.CLAIMED, S.CRASHED): Rule.SAME,
    (S.RUNNING, S.UNCLAIMED): Rule.EMPTY, (S.RUNNING, S.CLAIMED): Rule.SAME,
    (S.RUNNING, S.RUNNING): Rule.SAME, (S.RUNNING, S.CRASHED): Rule.SAME,
    (S.CRASHED, S.UNCLAIMED): Rule.EMPTY, (S.CRASHED, S.CLAIMED): Rule.SAME,
    (S.CRASHED, S.RUNNING): Rule.SAME, (S.CRASHED, S.CRASHED): Rule.NEVER,
}


def test_transition_table_is_exactly_reference_2_1() -> None:
    assert TRANSITIONS == REFERENCE_2_1


KEYS = st.builds(InstanceKey, instance_guid=st.sampled_from(["", "ig-1", "ig-2"]),
                 cell_id=st.sampled_from(["", "cell-1", "cell-2"]))


@given(st.sampled_from(list(S)), KEYS, st.sampled_from(list(S)), KEYS)
def test_allows_transition_follows_the_rule_of_the_pair(frm: S, cur: InstanceKey, to: S, k: InstanceKey) -> None:
    rule = TRANSITIONS[(frm, to)]
    expected = {Rule.ANY: True, Rule.NEVER: False, Rule.SAME: k == cur, Rule.EMPTY: k.empty}[rule]
    assert allows_transition(frm, cur, to, k) is expected


@pytest.mark.parametrize(("frm", "cur", "to", "k", "allowed"), [
    (S.UNCLAIMED, EMPTY_KEY, S.CLAIMED, OTHER, True),
    (S.CLAIMED, CUR, S.CLAIMED, CUR, True),        # idempotent claim
    (S.CLAIMED, CUR, S.CLAIMED, OTHER, False),
    (S.CLAIMED, CUR, S.RUNNING, OTHER, True),      # another cell may take a claimed instance
    (S.RUNNING, CUR, S.RUNNING, OTHER, False),
    (S.RUNNING, CUR, S.UNCLAIMED, EMPTY_KEY, True),
    (S.RUNNING, CUR, S.UNCLAIMED, CUR, False),     # only the BBS unclaims
    (S.CRASHED, EMPTY_KEY, S.CLAIMED, CUR, False),  # "effectively never": a cell always has a key
    (S.UNCLAIMED, EMPTY_KEY, S.CRASHED, EMPTY_KEY, False),
])
def test_allows_transition_examples(frm: S, cur: InstanceKey, to: S, k: InstanceKey, allowed: bool) -> None:
    assert allows_transition(frm, cur, to, k) is allowed


# ---- per-state invariants ------------------------------------------------------------------------

BASE: dict[str, Any] = {"process_guid": "web", "index": 0, "domain": "apps"}
KEY = {"instance_guid": "ig-1", "cell_id": "cell-1"}
NET = {"address": "10.0.0.1", "ports": [{"container_port": 8080, "host_port": 61001}]}


@pytest.mark.parametrize("fields", [
    {"state": "UNCLAIMED"},
    {"state": "UNCLAIMED", "placement_error": "no cell", "crash_count": 2, "crash_reason": "oom"},
    {"state": "CLAIMED", **KEY},
    {"state": "CLAIMED", **KEY, "presence": "SUSPECT"},
    {"state": "RUNNING", **KEY, **NET},
    {"state": "RUNNING", **KEY, **NET, "presence": "EVACUATING"},
    {"state": "CRASHED", "crash_count": 3, "crash_reason": "Exit status 1"},
])
def test_valid_rows(fields: dict[str, Any]) -> None:
    lrp = ActualLRP.model_validate({**BASE, **fields})
    assert lrp.state is S(fields["state"])


@pytest.mark.parametrize("fields", [
    {"state": "UNCLAIMED", **KEY},                       # no instance key
    {"state": "UNCLAIMED", **NET},                       # no net info
    {"state": "UNCLAIMED", "presence": "EVACUATING"},    # always ORDINARY
    {"state": "CLAIMED"},                                # needs an instance key
    {"state": "CLAIMED", "instance_guid": "ig-1"},       # ... both halves of it
    {"state": "CLAIMED", **KEY, **NET},                  # no net info yet
    {"state": "CLAIMED", **KEY, "placement_error": "x"},
    {"state": "RUNNING", **KEY},                         # needs an address
    {"state": "RUNNING", **NET},                         # needs an instance key
    {"state": "RUNNING", **KEY, **NET, "placement_error": "x"},
    {"state": "CRASHED", **KEY},                         # the crash clears the key
    {"state": "CRASHED", **NET},
    {"state": "RUNNING", **KEY, **NET, "crash_reason": "x" * 1025},
    {"state": "UNCLAIMED", "index": -1},
    {"state": "BROKEN"},
])
def test_invalid_rows(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ActualLRP.model_validate({**BASE, **fields})


def test_presence_values() -> None:
    assert [p.value for p in Presence] == ["ORDINARY", "EVACUATING", "SUSPECT"]


# ---- modification tags ---------------------------------------------------------------------------

@pytest.mark.parametrize(("tag", "other", "newer"), [
    (ModificationTag(epoch="a", index=1), ModificationTag(epoch="a", index=2), True),
    (ModificationTag(epoch="a", index=2), ModificationTag(epoch="a", index=2), False),
    (ModificationTag(epoch="a", index=3), ModificationTag(epoch="a", index=2), False),
    (ModificationTag(epoch="a", index=9), ModificationTag(epoch="b", index=0), True),   # a new row
    (ModificationTag(epoch="", index=9), ModificationTag(epoch="a", index=0), True),    # unknown: accept
    (ModificationTag(epoch="a", index=9), ModificationTag(epoch="", index=0), True),
])
def test_succeeded_by(tag: ModificationTag, other: ModificationTag, newer: bool) -> None:
    assert tag.succeeded_by(other) is newer


def test_incremented_keeps_the_epoch() -> None:
    assert ModificationTag(epoch="a", index=4).incremented() == ModificationTag(epoch="a", index=5)
