"""Table tests and properties of the auction's pure scheduling core (reference §4.2–§4.6)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from control.auctioneer.placement import (ERR_IN_FLIGHT, ERR_NO_CELLS, ERR_ROOTFS, CellSnapshot, Unit, order,
                                          schedule, score, tag_error)


def cell(cell_id: str, zone: str = "z1", memory: int = 1000, disk: int = 1000, containers: int = 10,
         **kw: object) -> CellSnapshot:
    return CellSnapshot(cell_id, zone, memory, disk, containers, memory, disk, containers,
                        providers=kw.pop("providers", {"preloaded": {"busybox"}, "docker": None}), **kw)  # type: ignore[arg-type]


def lrp(guid: str, index: int, memory: int = 100, disk: int = 100, rootfs: str = "preloaded:busybox",
        tags: frozenset[str] = frozenset()) -> Unit:
    return Unit(guid, index, memory, disk, rootfs, placement_tags=tags)


def task(guid: str, memory: int = 100) -> Unit:
    return Unit(guid, -1, memory, 100, "docker://r/x", is_task=True)


def test_order_is_index0_then_tasks_then_the_rest_big_first() -> None:
    units = [lrp("a", 1), task("t-small", 10), lrp("b", 0, memory=10), lrp("c", 0, memory=500), task("t-big", 900)]
    assert [(u.guid, u.index) for u in order(units)] == [("c", 0), ("b", 0), ("t-big", -1), ("t-small", -1), ("a", 1)]


def test_score_formula_matches_the_reference() -> None:
    c = cell("c", memory=1000, disk=2000, containers=4)
    c.starting = 2
    c.lrps["web"] = 1
    unit = lrp("web", 1, memory=500, disk=500)
    resource = ((1 - 500 / 1000) + (1 - 1500 / 2000) + (1 - 3 / 4)) / 3
    assert score(c, unit) == resource + 2 * 0.25 + 1000
    assert score(c, task("t")) == ((1 - 900 / 1000) + (1 - 1900 / 2000) + (1 - 3 / 4)) / 3 + 0.5


def test_instances_spread_across_cells_and_zones() -> None:
    cells = [cell("a", "z1"), cell("b", "z1"), cell("c", "z2")]
    out = schedule(cells, [lrp("web", i) for i in range(3)])
    assert sorted(p.cell_id for p in out.placed) == ["a", "b", "c"]
    zones = [next(c.zone for c in cells if c.cell_id == p.cell_id) for p in out.placed[:2]]
    assert sorted(zones) == ["z1", "z2"]  # the first two instances land in different zones


def test_placement_errors_name_the_furthest_stage() -> None:
    cells = [cell("a", placement_tags=frozenset({"gpu"}))]
    out = schedule(cells, [lrp("x", 0, rootfs="preloaded:cflinuxfs4"), lrp("y", 0), lrp("z", 0, tags=frozenset({"a", "b"}))])
    errors = {f.unit.guid: f.error for f in out.failed}
    assert errors["x"] == ERR_ROOTFS
    assert errors["y"] == "found no compatible cell with no placement tags"
    assert errors["z"] == 'found no compatible cell with placement tags "a" and "b"'
    assert tag_error(frozenset({"a", "b", "c"})) == 'found no compatible cell with placement tags "a", "b" and "c"'


def test_insufficient_resources_lists_what_every_cell_lacked() -> None:
    cells = [cell("a", memory=100, disk=5000), cell("b", memory=50, disk=10)]
    out = schedule(cells, [lrp("big", 0, memory=200, disk=200)])
    assert out.failed[0].error == "insufficient resources: memory"
    out = schedule([cell("c", containers=0)], [lrp("x", 0)])
    assert out.failed[0].error == "insufficient resources: containers"


def test_no_cells_and_in_flight_limit() -> None:
    assert schedule([], [lrp("a", 0)]).failed[0].error == ERR_NO_CELLS
    out = schedule([cell("a")], [lrp("a", i) for i in range(3)], max_in_flight=2)
    assert len(out.placed) == 2 and out.failed[0].error == ERR_IN_FLIGHT


def test_placement_tags_required_and_optional() -> None:
    c = cell("a", placement_tags=frozenset({"iso"}), optional_tags=frozenset({"ssd"}))
    assert len(schedule([c], [lrp("x", 0, tags=frozenset({"iso", "ssd"}))]).placed) == 1
    assert len(schedule([cell("b", placement_tags=frozenset({"iso"}))], [lrp("y", 0, tags=frozenset({"iso"}))]).placed) == 1
    assert schedule([cell("d", placement_tags=frozenset({"iso"}))], [lrp("z", 0)]).failed


cells_strategy = st.lists(
    st.tuples(st.sampled_from(["z1", "z2", "z3"]), st.integers(0, 2000), st.integers(0, 2000), st.integers(0, 8)),
    min_size=0, max_size=8)
units_strategy = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 5), st.integers(0, 600), st.integers(0, 600),
              st.booleans()),
    max_size=40)


@settings(max_examples=300, deadline=None)
@given(cells_strategy, units_strategy)
def test_properties_no_overcommit_and_every_unit_accounted(raw_cells, raw_units) -> None:  # type: ignore[no-untyped-def]
    cells = [cell(f"c{i}", z, m, d, n) for i, (z, m, d, n) in enumerate(raw_cells)]
    units = list({(g, i, t): (Unit(f"t-{g}{i}", -1, m, d, "docker://x", is_task=True) if t else lrp(g, i, m, d))
                  for g, i, m, d, t in raw_units}.values())
    out = schedule(cells, units)
    assert len(out.placed) + len(out.failed) == len(units)
    assert {id(p.unit) for p in out.placed}.isdisjoint({id(f.unit) for f in out.failed})
    for c in cells:
        assert c.memory >= 0 and c.disk >= 0 and c.containers >= 0


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.integers(1, 12))
def test_property_instances_spread_when_capacity_allows(n_cells: int, n_instances: int) -> None:
    cells = [cell(f"c{i}", f"z{i % 3}", memory=10_000, disk=10_000, containers=100) for i in range(n_cells)]
    out = schedule(cells, [lrp("web", i) for i in range(n_instances)])
    assert len(out.placed) == n_instances
    zones = sorted({c.zone for c in cells})
    per_zone = [sum(c.lrps.get("web", 0) for c in cells if c.zone == z) for z in zones]
    assert max(per_zone) - min(per_zone) <= 1  # zones first (§4.5) ...
    for z in zones:
        per_cell = [c.lrps.get("web", 0) for c in cells if c.zone == z]
        assert max(per_cell) - min(per_cell) <= 1  # ... then cells within a zone


@settings(max_examples=300, deadline=None)
@given(cells_strategy, st.integers(0, 600), st.integers(0, 600), st.booleans(), st.integers(0, 3))
def test_property_the_winner_has_the_lowest_score(raw_cells, memory, disk, is_task, already) -> None:  # type: ignore[no-untyped-def]
    from control.auctioneer.placement import Weights, _best, shortfalls
    cells = [cell(f"c{i}", z, m, d, n) for i, (z, m, d, n) in enumerate(raw_cells)]
    for i, c in enumerate(cells):
        c.starting = i % 3
        c.lrps["app"] = (i + already) % 2
        c.tasks = i % 2
        c.index = i
    unit = Unit("app", 1, memory, disk, "preloaded:busybox", is_task=is_task)
    winner = _best(cells, unit, Weights(bin_pack=0.5))
    fitting = [c for c in cells if not shortfalls(c, unit)]
    if not fitting:
        assert winner is None
        return
    assert winner is not None
    assert score(winner, unit, 0.5) == min(score(c, unit, 0.5) for c in fitting)
    assert winner is next(c for c in fitting if score(c, unit, 0.5) == score(winner, unit, 0.5))  # first on ties
