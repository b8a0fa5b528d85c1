"""The crash restart policy of reference §2.3, with explicit `now` values (no clock at all)."""
from __future__ import annotations

import pytest

from control.models.crash_policy import (MAX_BACKOFF_COUNT, MAX_RESTARTS, backoff_ns, next_crash_count,
                                         restarts_immediately, should_restart)

S = 1_000_000_000
MIN = 60 * S
CRASHED_AT = 1_700_000_000 * S  # an arbitrary `since` of the CRASHED row

# count → wait before the converger may restart it (reference §2.3 "Resulting schedule")
SCHEDULE = {3: 30 * S, 4: 60 * S, 5: 2 * MIN, 6: 4 * MIN, 7: 8 * MIN, 8: 16 * MIN, 9: 16 * MIN,
            50: 16 * MIN, 198: 16 * MIN, 199: 16 * MIN}


def test_max_backoff_count_is_five() -> None:
    assert MAX_BACKOFF_COUNT == 5  # floor(log2(ceil(16 min / 30 s))) = floor(log2(32))


@pytest.mark.parametrize(("count", "immediate"), [(1, True), (2, True), (3, False), (4, False), (200, False)])
def test_only_the_first_and_second_crash_in_a_row_restart_immediately(count: int, immediate: bool) -> None:
    assert restarts_immediately(count) is immediate


@pytest.mark.parametrize("count", [0, 1, 2])
def test_counts_below_three_restart_at_once(count: int) -> None:
    assert backoff_ns(count) == 0
    assert should_restart(now_ns=CRASHED_AT, since_ns=CRASHED_AT, crash_count=count)


@pytest.mark.parametrize(("count", "wait"), sorted(SCHEDULE.items()))
def test_backoff_schedule(count: int, wait: int) -> None:
    assert backoff_ns(count) == wait
    assert not should_restart(now_ns=CRASHED_AT, since_ns=CRASHED_AT, crash_count=count)
    assert not should_restart(now_ns=CRASHED_AT + wait - 1, since_ns=CRASHED_AT, crash_count=count)
    assert should_restart(now_ns=CRASHED_AT + wait, since_ns=CRASHED_AT, crash_count=count)  # at, not after
    assert should_restart(now_ns=CRASHED_AT + wait + 1, since_ns=CRASHED_AT, crash_count=count)


def test_schedule_in_plain_numbers() -> None:
    assert [backoff_ns(n) // S for n in range(3, 10)] == [30, 60, 120, 240, 480, 960, 960]


@pytest.mark.parametrize("count", [MAX_RESTARTS, MAX_RESTARTS + 1, 1000])
def test_never_restarted_at_200_crashes_or_more(count: int) -> None:
    assert MAX_RESTARTS == 200
    year = 365 * 24 * 60 * MIN
    assert not should_restart(now_ns=CRASHED_AT + 16 * MIN, since_ns=CRASHED_AT, crash_count=count)
    assert not should_restart(now_ns=CRASHED_AT + year, since_ns=CRASHED_AT, crash_count=count)


def test_199_crashes_still_restart_after_16_minutes() -> None:
    assert should_restart(now_ns=CRASHED_AT + 16 * MIN, since_ns=CRASHED_AT, crash_count=199)


# ---- the count written by a crash --------------------------------------------------------------

STARTED = 1_700_000_000 * S  # `since` of the RUNNING (or CLAIMED) row that crashes


@pytest.mark.parametrize(("was_running", "ran_for", "count", "new_count"), [
    (True, 5 * MIN + 1, 0, 1),      # RUNNING for more than 5 min: the count resets to 1 ...
    (True, 5 * MIN + 1, 7, 1),
    (True, 5 * MIN + 1, 199, 1),
    (True, 60 * MIN, 250, 1),
    (True, 5 * MIN, 7, 8),          # ... exactly 5 min is not "more than"
    (True, 5 * MIN - 1, 7, 8),
    (True, 0, 0, 1),
    (True, 30 * S, 2, 3),
    (False, 60 * MIN, 7, 8),        # CLAIMED for an hour: no reset, it never ran
    (False, 0, 0, 1),
])
def test_next_crash_count(was_running: bool, ran_for: int, count: int, new_count: int) -> None:
    assert next_crash_count(was_running, since_ns=STARTED, now_ns=STARTED + ran_for, crash_count=count) == new_count


def test_a_flapping_instance_walks_the_whole_schedule() -> None:
    """Start, crash after 10 s, wait exactly the backoff, repeat: counts and waits as in §2.3."""
    now, count, waits, immediates = STARTED, 0, [], []
    for _ in range(10):
        now += 10 * S                                    # ran 10 s, then crashed
        count = next_crash_count(True, since_ns=now - 10 * S, now_ns=now, crash_count=count)
        if restarts_immediately(count):
            immediates.append(count)
            continue
        crashed_at = now
        while not should_restart(now, crashed_at, count):
            now += S
        waits.append((count, (now - crashed_at) // S))
    assert immediates == [1, 2]
    assert waits == [(3, 30), (4, 60), (5, 120), (6, 240), (7, 480), (8, 960), (9, 960), (10, 960)]
