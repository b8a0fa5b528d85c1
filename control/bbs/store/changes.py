"""What a lifecycle decision wants done to the rows of one ActualLRP index."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from control.models.actual_lrp import ActualLRP, Presence

Rows = dict[Presence, ActualLRP]


@dataclass
class IndexChange:
    """Rows to write and presences to delete for one (process_guid, index); `result` carries
    whatever the decision wants to hand back to its caller (e.g. keep_container)."""

    puts: dict[Presence, ActualLRP] = field(default_factory=dict)
    deletes: set[Presence] = field(default_factory=set)
    result: Any = None
    auction: bool = False  # the decision asks for an auction of this index

    @property
    def empty(self) -> bool:
        return not self.puts and not self.deletes

    def pairs(self, before: Rows) -> list[tuple[ActualLRP | None, ActualLRP | None]]:
        """(before, after) per touched presence."""
        out: list[tuple[ActualLRP | None, ActualLRP | None]] = []
        for presence in sorted(set(self.puts) | self.deletes, key=lambda p: p.value):
            after = None if presence in self.deletes else self.puts.get(presence)
            out.append((before.get(presence), after))
        return out
