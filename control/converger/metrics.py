"""The converger's Prometheus metrics: pass duration and outcome, actions by kind and result,
the time of the last pass, and the census of the last snapshot (reference §5.2 step 13)."""
from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


class ConvergerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.pass_seconds = Histogram("converger_pass_seconds", "duration of one convergence pass",
                                      buckets=BUCKETS, registry=r)
        self.passes = Counter("converger_passes_total", "convergence passes by outcome (ok, skipped, failed)",
                              ["outcome"], registry=r)
        self.actions = Counter("converger_actions_total", "convergence actions by kind and result "
                               "(applied, noop: the rows changed since the snapshot, failed)",
                               ["kind", "result"], registry=r)
        self.last_pass = Gauge("converger_last_pass_timestamp_seconds", "end of the last completed pass (unix time)",
                               registry=r)
        self.census = Gauge("converger_census", "counts seen by the last pass (ActualLRPs by presence and "
                            "state, desired instances, cells, tasks by state)", ["what"], registry=r)

    def record_census(self, counts: Mapping[str, int]) -> None:
        for what, n in counts.items():
            self.census.labels(what).set(n)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
