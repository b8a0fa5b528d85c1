"""The auction's scheduling core (reference §4.2–§4.6): a pure function of the cells' states and
a batch of requests, returning where each unit goes and why the others could not be placed.

No I/O and no clock: the shell (auction runner) fetches `/state` from every cell, calls
`schedule`, posts `/work` to the winners and reports failures to the BBS. Every placement
updates the in-memory cell before the next decision, so no cell is over-committed within a
batch. Ties go to the first cell in input order (deterministic, unlike Diego's map order).
"""
from __future__ import annotations

from dataclasses import dataclass, field

LOCALITY_OFFSET = 1000.0
STARTING_CONTAINER_WEIGHT = 0.25

ERR_ROOTFS = "found no compatible cell for required rootfs"
ERR_VOLUME = "found no compatible cell with required volume drivers"
ERR_NO_CELLS = "unable to communicate to compatible cells"
ERR_IN_FLIGHT = "waiting to start instance: reached in-flight start limit"


@dataclass
class CellSnapshot:
    """One cell as the auction sees it; mutated as units are placed on it."""

    cell_id: str
    zone: str
    total_memory: int
    total_disk: int
    total_containers: int
    memory: int
    disk: int
    containers: int
    starting: int = 0
    providers: dict[str, set[str] | None] = field(default_factory=dict)  # scheme -> stacks (None = arbitrary)
    placement_tags: frozenset[str] = frozenset()
    optional_tags: frozenset[str] = frozenset()
    volume_drivers: frozenset[str] = frozenset()
    lrps: dict[str, int] = field(default_factory=dict)  # process_guid -> instances here
    tasks: int = 0
    index: int = 0  # bin-pack ordering inside its zone


@dataclass(frozen=True)
class Unit:
    """One LRP instance (process_guid, index) or one task (task_guid, index -1)."""

    guid: str
    index: int
    memory: int
    disk: int
    rootfs: str
    placement_tags: frozenset[str] = frozenset()
    volume_drivers: frozenset[str] = frozenset()
    is_task: bool = False


@dataclass(frozen=True)
class Placement:
    unit: Unit
    cell_id: str


@dataclass(frozen=True)
class Failure:
    unit: Unit
    error: str


@dataclass
class Outcome:
    placed: list[Placement] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)


def rootfs_ok(cell: CellSnapshot, rootfs: str) -> bool:
    scheme, _, rest = rootfs.partition(":")
    if scheme not in cell.providers:
        return False
    stacks = cell.providers[scheme]
    if stacks is None:
        return True
    return rest.split("?", 1)[0] in stacks


def tags_ok(cell: CellSnapshot, wanted: frozenset[str]) -> bool:
    """R ⊆ D and D ⊆ R ∪ O (reference §4.4)."""
    return cell.placement_tags <= wanted and wanted <= cell.placement_tags | cell.optional_tags


def tag_error(wanted: frozenset[str]) -> str:
    if not wanted:
        return "found no compatible cell with no placement tags"
    names = [f'"{t}"' for t in sorted(wanted)]
    if len(names) == 1:
        return f"found no compatible cell with placement tag {names[0]}"
    return f"found no compatible cell with placement tags {', '.join(names[:-1])} and {names[-1]}"


def shortfalls(cell: CellSnapshot, unit: Unit) -> set[str]:
    out = set()
    if cell.memory < unit.memory:
        out.add("memory")
    if cell.disk < unit.disk:
        out.add("disk")
    if cell.containers < 1:
        out.add("containers")
    return out


def score(cell: CellSnapshot, unit: Unit, bin_pack_weight: float = 0.0,
          starting_weight: float = STARTING_CONTAINER_WEIGHT) -> float:
    def used(remaining: int, total: int) -> float:
        return 1.0 - remaining / total if total > 0 else 1.0
    resource = (used(cell.memory - unit.memory, cell.total_memory) + used(cell.disk - unit.disk, cell.total_disk)
                + used(cell.containers - 1, cell.total_containers)) / 3
    value = resource + cell.starting * starting_weight
    if unit.is_task:
        return value + LOCALITY_OFFSET * cell.tasks
    return value + LOCALITY_OFFSET * cell.lrps.get(unit.guid, 0) + cell.index * bin_pack_weight


def _compatible(cells: list[CellSnapshot], unit: Unit) -> tuple[list[CellSnapshot], str | None]:
    """Filter in §4.4 order; the error names the furthest stage any cell reached."""
    stage = [c for c in cells if rootfs_ok(c, unit.rootfs)]
    if not stage:
        return [], ERR_ROOTFS
    stage2 = [c for c in stage if unit.volume_drivers <= c.volume_drivers]
    if not stage2:
        return [], ERR_VOLUME
    stage3 = [c for c in stage2 if tags_ok(c, unit.placement_tags)]
    if not stage3:
        return [], tag_error(unit.placement_tags)
    return stage3, None


@dataclass(frozen=True)
class Weights:
    bin_pack: float = 0.0
    starting: float = STARTING_CONTAINER_WEIGHT


def _best(candidates: list[CellSnapshot], unit: Unit, weights: Weights) -> CellSnapshot | None:
    """The fitting candidate with the lowest `score` (first one on ties). `score` inlined: this
    loop is the auction's hot path (cells x units)."""
    m, d, guid, is_task = unit.memory, unit.disk, unit.guid, unit.is_task
    bin_pack, starting_w = weights.bin_pack, weights.starting
    best, best_score = None, 0.0
    for c in candidates:
        if c.memory < m or c.disk < d or c.containers < 1:
            continue
        tm, td, tc = c.total_memory, c.total_disk, c.total_containers
        s = ((1.0 - (c.memory - m) / tm if tm > 0 else 1.0) + (1.0 - (c.disk - d) / td if td > 0 else 1.0)
             + (1.0 - (c.containers - 1) / tc if tc > 0 else 1.0)) / 3 + c.starting * starting_w
        if is_task:
            s += LOCALITY_OFFSET * c.tasks
        else:
            s = s + LOCALITY_OFFSET * c.lrps.get(guid, 0) + c.index * bin_pack  # same order as score()
        if best is None or s < best_score:
            best, best_score = c, s
    return best


def _insufficient(candidates: list[CellSnapshot], unit: Unit) -> str:
    common: set[str] | None = None
    for cell in candidates:
        short = shortfalls(cell, unit)
        common = short if common is None else common & short
    if not common:
        return "insufficient resources"
    return "insufficient resources: " + ", ".join(sorted(common))


FilterKey = tuple[str, frozenset[str], frozenset[str]]


class _Scheduler:
    """One scheduling pass; caches what stays the same between units of a batch: the compatible
    cells per (rootfs, tags, drivers) and their zones, and each LRP's instance count per zone."""

    def __init__(self, cells: list[CellSnapshot], weights: Weights) -> None:
        self.cells = cells
        self.weights = weights
        self.compat: dict[FilterKey, tuple[list[CellSnapshot], str | None, dict[str, list[CellSnapshot]]]] = {}
        self.loads: dict[str, dict[FilterKey, dict[str, int]]] = {}  # guid -> filter key -> zone -> instances
        self.members: dict[FilterKey, set[int]] = {}  # id() of the compatible cells per key

    def _filtered(self, unit: Unit) -> tuple[FilterKey, list[CellSnapshot], str | None, dict[str, list[CellSnapshot]]]:
        key = (unit.rootfs, unit.placement_tags, unit.volume_drivers)
        if key not in self.compat:
            compatible, error = _compatible(self.cells, unit)
            zones: dict[str, list[CellSnapshot]] = {}
            for cell in compatible:
                zones.setdefault(cell.zone, []).append(cell)
            self.compat[key] = (compatible, error, zones)
            self.members[key] = {id(c) for c in compatible}
        compatible, error, zones = self.compat[key]
        return key, compatible, error, zones

    def place(self, unit: Unit) -> CellSnapshot | str:
        key, compatible, error, zones = self._filtered(unit)
        if error is not None:
            return error
        if unit.is_task:
            winner = _best(compatible, unit, self.weights)
            return winner if winner is not None else _insufficient(compatible, unit)
        by_key = self.loads.setdefault(unit.guid, {})
        load = by_key.get(key)
        if load is None:
            load = {z: sum(c.lrps.get(unit.guid, 0) for c in members) for z, members in zones.items()}
            by_key[key] = load
        ordered = sorted(zones, key=lambda z: load[z])  # stable: input order breaks ties
        i = 0
        while i < len(ordered):
            group = [ordered[i]]
            while i + len(group) < len(ordered) and load[ordered[i + len(group)]] == load[ordered[i]]:
                group.append(ordered[i + len(group)])
            candidates = zones[group[0]] if len(group) == 1 else [c for z in group for c in zones[z]]
            winner = _best(candidates, unit, self.weights)
            if winner is not None:
                return winner
            i += len(group)
        return _insufficient(compatible, unit)

    def commit(self, cell: CellSnapshot, unit: Unit) -> None:
        _commit(cell, unit)
        if not unit.is_task:
            for key, load in self.loads.get(unit.guid, {}).items():
                if id(cell) in self.members[key]:
                    load[cell.zone] += 1


def _commit(cell: CellSnapshot, unit: Unit) -> None:
    cell.memory -= unit.memory
    cell.disk -= unit.disk
    cell.containers -= 1
    cell.starting += 1
    if unit.is_task:
        cell.tasks += 1
    else:
        cell.lrps[unit.guid] = cell.lrps.get(unit.guid, 0) + 1


def order(units: list[Unit]) -> list[Unit]:
    """§4.2: index-0 LRPs, then tasks, then the other LRPs; larger memory first within each group."""
    lrps = sorted((u for u in units if not u.is_task), key=lambda u: (u.index, -u.memory))
    tasks = sorted((u for u in units if u.is_task), key=lambda u: -u.memory)
    return [u for u in lrps if u.index == 0] + tasks + [u for u in lrps if u.index != 0]


def schedule(cells: list[CellSnapshot], units: list[Unit], bin_pack_weight: float = 0.0,
             max_in_flight: int = 0, starting_weight: float = STARTING_CONTAINER_WEIGHT) -> Outcome:
    """Place every unit or say why not. `cells` are mutated to reflect the placements.

    max_in_flight > 0 caps starting containers across all cells (reference §4.7).
    """
    outcome = Outcome()
    scheduler = _Scheduler(cells, Weights(bin_pack_weight, starting_weight))
    in_flight = sum(c.starting for c in cells)
    for unit in order(units):
        if not cells:
            outcome.failed.append(Failure(unit, ERR_NO_CELLS))
            continue
        if max_in_flight and in_flight >= max_in_flight:
            outcome.failed.append(Failure(unit, ERR_IN_FLIGHT))
            continue
        result = scheduler.place(unit)
        if isinstance(result, str):
            outcome.failed.append(Failure(unit, result))
            continue
        scheduler.commit(result, unit)
        in_flight += 1
        outcome.placed.append(Placement(unit, result.cell_id))
    return outcome
