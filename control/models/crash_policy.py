"""Crash restart policy, exactly as reference §2.3 (Diego's RestartCalculator).

Pure functions of (now, since, crash_count): the clock is always a parameter.
"""
from __future__ import annotations

import math

NS = 1_000_000_000
IMMEDIATE_RESTARTS = 3
CRASH_BACKOFF_MIN_NS = 30 * NS
MAX_BACKOFF_NS = 16 * 60 * NS
MAX_RESTARTS = 200
CRASH_RESET_TIMEOUT_NS = 5 * 60 * NS
MAX_BACKOFF_COUNT = int(math.floor(math.log2(math.ceil(MAX_BACKOFF_NS / CRASH_BACKOFF_MIN_NS))))  # 5


def next_crash_count(was_running: bool, since_ns: int, now_ns: int, crash_count: int) -> int:
    """A crash after more than 5 minutes RUNNING resets the count to 1; otherwise it grows."""
    if was_running and now_ns - since_ns > CRASH_RESET_TIMEOUT_NS:
        return 1
    return crash_count + 1


def restarts_immediately(new_count: int) -> bool:
    """The first and second crash in a row go straight back to UNCLAIMED with an auction."""
    return new_count < IMMEDIATE_RESTARTS


def backoff_ns(crash_count: int) -> int:
    """Wait before restarting a CRASHED instance: 30 s·2^min(n−3, 5), capped at 16 min."""
    if crash_count < IMMEDIATE_RESTARTS:
        return 0
    exponent = min(crash_count - IMMEDIATE_RESTARTS, MAX_BACKOFF_COUNT)
    return min(CRASH_BACKOFF_MIN_NS * (2 ** exponent), MAX_BACKOFF_NS)


def should_restart(now_ns: int, since_ns: int, crash_count: int) -> bool:
    """Whether the converger may restart a CRASHED instance now; never at 200 crashes or more."""
    if crash_count >= MAX_RESTARTS:
        return False
    return now_ns - since_ns >= backoff_ns(crash_count)
