"""A snapshot of the executor's numbers for the rep's /metrics (and tests)."""
from __future__ import annotations

from pydantic import Field

from control.models.base import Model

from .models import Resources


class ExecutorMetrics(Model):
    containers: dict[str, int] = Field(description="containers by state (reserved ... completed)")
    starting: int = Field(description="reserved + initializing + created: the auction's StartingContainerCount")
    total: Resources
    remaining: Resources
    events: dict[str, int] = Field(description="events published since start (reserved, running, completed, ...), "
                                               "completed_failed/succeeded, expired, recovered_<fate>")
    log_bytes: int = Field(description="retained log bytes of every container")

    def prometheus(self, prefix: str = "executor") -> str:
        """Prometheus text exposition lines (gauges and counters), for a /metrics endpoint."""
        lines = [f'{prefix}_containers{{state="{state}"}} {count}' for state, count in sorted(self.containers.items())]
        lines.append(f"{prefix}_starting_containers {self.starting}")
        for kind, resources in (("total", self.total), ("remaining", self.remaining)):
            lines += [f'{prefix}_{kind}_{name} {value}' for name, value in resources.model_dump().items()]
        lines += [f'{prefix}_events_total{{kind="{kind}"}} {count}' for kind, count in sorted(self.events.items())]
        lines.append(f"{prefix}_retained_log_bytes {self.log_bytes}")
        return "\n".join(lines) + "\n"
