"""Evacuation (reference §2.5) with two real cells: the instance keeps serving from the
evacuating cell until its replacement runs on the other, then the old container goes away."""
from __future__ import annotations

import signal

from control.models.actual_lrp import ActualLRPState, Presence

from .conftest import wait_for
from .helpers import assert_cell_clean, http_get, httpd_lrp, lrp_work
from .test_rep_lrps import desire, rows, running


def test_evacuation_hands_instances_back(world) -> None:  # type: ignore[no-untyped-def]
    old, new = world.add_rep().start(), world.add_rep().start()
    desire(world, httpd_lrp("evac"))
    old.post_work(lrps=[lrp_work("evac")])
    first = wait_for(lambda: running(world, "evac"), timeout=30, what="RUNNING on the old cell")
    assert first.cell_id == old.cell_id
    assert old.proc is not None
    old.proc.send_signal(signal.SIGTERM)  # evacuation on SIGTERM

    def handed_back():  # type: ignore[no-untyped-def]
        by = {r.presence: r for r in rows(world, "evac")}
        evac, ordinary = by.get(Presence.EVACUATING), by.get(Presence.ORDINARY)
        return (evac, ordinary) if evac and ordinary and ordinary.state is ActualLRPState.UNCLAIMED else None
    evac, _ = wait_for(handed_back, timeout=20, what="evacuating row + unclaimed replacement")
    assert evac.state is ActualLRPState.RUNNING and evac.cell_id == old.cell_id
    assert "hello-0" in http_get("127.0.0.1", first.ports[0].host_port)  # still serving meanwhile
    assert old.state()["evacuating"] is True
    refused = old.post_work(lrps=[lrp_work("evac")])
    assert refused["lrps"][0]["reason"] == "cell is evacuating"

    new.post_work(lrps=[lrp_work("evac")])  # what the auctioneer does with the replacement
    moved = wait_for(lambda: (r := running(world, "evac")) and r.cell_id == new.cell_id and r, timeout=30,
                     what="replacement RUNNING on the new cell")
    assert "hello-0" in http_get("127.0.0.1", moved.ports[0].host_port)
    wait_for(lambda: all(r.presence is Presence.ORDINARY for r in rows(world, "evac")), timeout=20,
             what="evacuating row gone")
    assert old.proc.wait(30) == 0  # the old rep exits once it is empty
    assert_cell_clean(old)
