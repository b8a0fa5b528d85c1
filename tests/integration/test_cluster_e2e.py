"""Issue #5 end to end, on the real local cluster: `pydiego cluster up --cells 3` (etcd, Consul,
2 BBS, 2 auctioneers, 2 convergers converging every 5 s, 3 cells in their own network
namespaces in zones z1/z2/z1, and the keeper that restarts whatever exits), driven as an
operator would: the CLI for what a user types, the BBS API and the reps' /state (mutual TLS,
the cluster's client certificate) for what must be observed.

One cluster serves the whole module; each test uses its own process guids, removes what it made
and leaves every process running (a killed process is back, restarted by the keeper, before a
test returns). The module ends with `cluster down` and a check that nothing is left on the host.
Malformed auction requests (issue item 9) are covered by
tests/integration/rep/test_auction.py::test_malformed_auction_requests_are_refused_whole.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from control.localcluster.layout import alive
from tests.integration.cluster_helpers import (DOMAIN, Cluster, EventStream, HitCounter, InstanceSampler, http_get,
                                               run_cli, serving_indices)
from tests.integration.test_local_cluster_cells import leftovers

CELLS = 3

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(b) for b in ("runc", "nsenter", "iptables-save", "busybox", "curl")),
    reason="cells need root, runc, nsenter, iptables, busybox and curl (scripts/setup.sh)")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # an open directory (not pytest's tmp_path), so the cells live under it (cells.cells_root)
    d = Path(f"/var/tmp/pydiego-e2e-{os.getpid()}")
    c: Cluster | None = None
    try:
        c = Cluster.up(d, CELLS)
        c.cli("domains", "upsert", DOMAIN)
        yield c
    finally:
        if c is not None:
            c.close()
        down = run_cli("cluster", "down", "--dir", str(d), check=False, timeout=300)
    assert down.returncode == 0, down.stderr
    if c is not None:
        assert leftovers(d, c.network, CELLS) == []


@pytest.fixture(autouse=True)
def clean_slate(cluster: Cluster) -> Iterator[None]:
    """Each test starts on a healthy cluster and leaves no LRP, task or container behind."""
    cluster.wait_healthy()
    yield
    cluster.wait_healthy()
    cluster.cleanup()


def metric(text: str, name: str) -> float:
    """A sample's value in Prometheus text (0 when absent); `name` may carry labels."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def rows_in_events(events: EventStream, guid: str, presence: str) -> set[str]:
    """Instance guids of `guid`'s rows that some instance event showed in `presence`."""
    return {row["instance_guid"] for _, payload in events.events for part in ("actual_lrp", "after")
            if isinstance(row := payload.get(part), dict) and row.get("process_guid") == guid
            and row.get("presence") == presence}


# ---- 1. placement across cells ---------------------------------------------------------------

def test_three_instances_land_on_three_cells_and_answer_from_the_host(cluster: Cluster) -> None:
    cluster.desire("e2e-spread", 3, wait=60)  # the CLI waits until all three are RUNNING
    rows = cluster.wait_running("e2e-spread", 3)
    assert sorted(r["cell_id"] for r in rows) == sorted(c["cell_id"] for c in cluster.cells), cluster.diagnostics()
    for row in rows:
        assert row["address"] == cluster.cell(row["cell_id"])["address"]  # the cell's own address
        assert http_get(row["address"], row["ports"][0]["host_port"]) == f"hello from {row['index']}\n"


# ---- 2. scaling ------------------------------------------------------------------------------

def test_scale_three_to_five_to_two_stops_the_retired_instances(cluster: Cluster) -> None:
    guid = "e2e-scale"
    cluster.desire(guid, 3, wait=60)
    cluster.cli("scale", guid, "5")
    five = cluster.wait_running(guid, 5)
    for row in five:
        assert http_get(row["address"], row["ports"][0]["host_port"]) == f"hello from {row['index']}\n"

    cluster.cli("scale", guid, "2")
    kept = {r["index"]: r["instance_guid"] for r in five if r["index"] < 2}

    def settled() -> list[dict[str, Any]] | None:
        rows = cluster.actual_lrps(guid)
        if [(r["index"], r["state"], r["presence"]) for r in rows] != [(0, "RUNNING", "ORDINARY"),
                                                                       (1, "RUNNING", "ORDINARY")]:
            return None
        on_cells = set().union(*cluster.containers(guid).values())
        return rows if on_cells == set(kept.values()) else None
    rows = cluster.wait_for(settled, 60, "exactly indices 0 and 1 RUNNING and the other containers gone")
    assert {r["index"]: r["instance_guid"] for r in rows} == kept  # scaling down left these alone


# ---- 3. a crashed process ----------------------------------------------------------------------

def test_a_killed_app_process_is_counted_as_a_crash_and_restarted(cluster: Cluster) -> None:
    guid = "e2e-crash"
    cluster.desire(guid, 1, wait=60)
    (before,) = cluster.wait_running(guid, 1)
    pids = cluster.app_pids(before["cell_id"], before["instance_guid"], "httpd")
    assert len(pids) == 1, f"httpd processes in the container's cgroup: {pids}"
    os.kill(pids[0], signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        rows = cluster.running(guid)
        return next((r for r in rows if r["crash_count"] >= 1 and r["instance_guid"] != before["instance_guid"]),
                    None)
    after = cluster.wait_for(restarted, 60, "the crashed instance RUNNING again with its crash counted")
    assert after["crash_count"] == 1 and after["crash_reason"], after
    assert http_get(after["address"], after["ports"][0]["host_port"]) == "hello from 0\n"


# ---- 4. a lost cell: SUSPECT instances and their replacements -----------------------------------

def test_a_sigkilled_rep_turns_its_instances_suspect_and_none_is_lost(cluster: Cluster) -> None:
    guid = "e2e-lostcell"
    cluster.desire(guid, 3, wait=60)
    rows = cluster.wait_running(guid, 3)
    victim = rows[0]["cell_id"]
    moved = {r["index"]: r["instance_guid"] for r in rows if r["cell_id"] == victim}
    rep = cluster.process(victim)

    with EventStream(cluster) as events, InstanceSampler(cluster, guid) as sampler:
        with cluster.keeper_paused():  # the rep stays down until the replacements run
            os.kill(rep["pid"], signal.SIGKILL)
            killed_at = time.monotonic()

            def replaced() -> bool:
                now = cluster.actual_lrps(guid)
                return all(any(r["index"] == i and r["presence"] == "ORDINARY" and r["state"] == "RUNNING"
                               and r["cell_id"] != victim for r in now) for i in moved)
            cluster.wait_for(replaced, 60, f"replacements of {sorted(moved)} RUNNING on cells other than {victim}",
                             logs=[victim, "converger-0", "converger-1", "auctioneer-0", "auctioneer-1"])
            back_at = time.monotonic()
        cluster.wait_rep_back(victim, rep["pid"])

        def cleaned() -> bool:
            now = cluster.actual_lrps(guid)
            one_each = [(r["index"], r["presence"], r["state"]) for r in now] == \
                [(i, "ORDINARY", "RUNNING") for i in range(3)]
            return one_each and not (cluster.containers(guid)[victim] & set(moved.values()))
        cluster.wait_for(cleaned, 60, f"no SUSPECT row left and {victim} holding none of the moved containers",
                         logs=[victim, "converger-0", "converger-1"])
        time.sleep(0.3)  # a last few samples after the clean-up

    # every moved instance turned SUSPECT (seen in the event stream or in a sample)
    suspects = rows_in_events(events, guid, "SUSPECT") | {
        r["instance_guid"] for _, rs in sampler.samples for r in rs if r["presence"] == "SUSPECT"}
    assert set(moved.values()) <= suspects, f"moved {moved}, suspects seen {suspects}\n{cluster.diagnostics()}"
    # no index ever went without a RUNNING row: before, while the rep was down, and after
    down_samples = sampler.between(killed_at, back_at)
    assert len(down_samples) >= 5, f"only {len(down_samples)} samples while the rep was down"
    gaps = [(round(t - killed_at, 2), sorted(serving_indices(rs))) for t, rs in sampler.samples
            if serving_indices(rs) != {0, 1, 2}]
    assert not gaps, f"indices without a RUNNING row (seconds after the kill, serving): {gaps[:10]}"


def test_a_lost_cell_back_before_its_replacement_runs_gets_its_suspect_promoted(cluster: Cluster) -> None:
    """Reference §2.6 steps 2 and 6: a replacement that cannot be placed leaves the SUSPECT
    RUNNING (and serving); when the cell returns, the suspect is ORDINARY again, the same
    container, and the unplaced replacement is gone."""
    guid = "e2e-promote"
    full = min(c["capacity"]["memory_mb"] for c in _cells_json(cluster)) - 16
    cluster.desire(guid, CELLS, memory_mb=full, wait=60)  # one per cell, and no room for another
    rows = cluster.wait_running(guid, CELLS)
    lost = rows[0]
    rep = cluster.process(lost["cell_id"])
    with InstanceSampler(cluster, guid) as sampler:
        with cluster.keeper_paused():
            os.kill(rep["pid"], signal.SIGKILL)
            killed_at = time.monotonic()

            def stuck() -> bool:
                now = cluster.actual_lrps(guid)
                suspect = [r for r in now if r["presence"] == "SUSPECT"]
                replacement = [r for r in now if r["index"] == 0 and r["presence"] == "ORDINARY"]
                return [(r["instance_guid"], r["state"]) for r in suspect] == [(lost["instance_guid"], "RUNNING")] \
                    and [(r["state"], r["placement_error"]) for r in replacement] == [
                        ("UNCLAIMED", "insufficient resources: memory")]
            cluster.wait_for(stuck, 60, "index 0 SUSPECT and RUNNING, its replacement unplaceable",
                             logs=[lost["cell_id"], "converger-0", "converger-1", "auctioneer-0", "auctioneer-1"])
            # the suspect's container keeps serving while its rep is away
            assert http_get(lost["address"], lost["ports"][0]["host_port"]) == "hello from 0\n"
            back_at = time.monotonic()
        cluster.wait_rep_back(lost["cell_id"], rep["pid"])
        def promoted_back() -> list[dict[str, Any]] | None:
            now = cluster.actual_lrps(guid)
            return now if [(r["index"], r["presence"], r["state"]) for r in now] == \
                [(i, "ORDINARY", "RUNNING") for i in range(CELLS)] else None
        promoted = cluster.wait_for(promoted_back, 60, "the suspect promoted back to ORDINARY, the replacement removed",
                                    logs=[lost["cell_id"], "converger-0", "converger-1"])
    assert {(r["index"], r["instance_guid"]) for r in promoted} == {(r["index"], r["instance_guid"]) for r in rows}
    assert cluster.containers(guid)[lost["cell_id"]] == {lost["instance_guid"]}
    assert http_get(lost["address"], lost["ports"][0]["host_port"]) == "hello from 0\n"
    assert len(sampler.between(killed_at, back_at)) >= 5
    gaps = [round(t - killed_at, 2) for t, rs in sampler.samples if serving_indices(rs) != set(range(CELLS))]
    assert not gaps, f"moments (s after the kill) when an index had no RUNNING row: {gaps[:10]}"


# ---- 5. failover of the singletons --------------------------------------------------------------

def test_the_standby_auctioneer_takes_over_from_a_sigkilled_active_one(cluster: Cluster) -> None:
    active = cluster.active("auctioneer")
    assert active is not None
    with cluster.keeper_paused():  # the killed auctioneer stays down: only the standby can place
        os.kill(active["pid"], signal.SIGKILL)
        standby = cluster.wait_for(lambda: (a := cluster.active("auctioneer")) and a["name"] != active["name"] and a,
                                   30, "the standby auctioneer holding the lock",
                                   logs=["auctioneer-0", "auctioneer-1"])
        cluster.desire("e2e-after-auctioneer", 2)
        rows = cluster.wait_running("e2e-after-auctioneer", 2)
        assert len({r["cell_id"] for r in rows}) == 2
        placed = metric(cluster.metrics(standby), "auctioneer_placed_total")
        assert placed >= 2, f"the new active auctioneer placed {placed}"
    cluster.wait_for(lambda: cluster.process(active["name"])["pid"] != active["pid"]
                     and alive(cluster.process(active["name"])["pid"]), 30,
                     f"{active['name']} restarted by the keeper")


def test_the_standby_converger_takes_over_from_a_sigkilled_active_one(cluster: Cluster) -> None:
    guid = "e2e-after-converger"
    cluster.desire(guid, 2, wait=60)
    before = cluster.wait_running(guid, 2)
    active = cluster.active("converger")
    assert active is not None
    with cluster.keeper_paused():
        os.kill(active["pid"], signal.SIGKILL)
        standby = cluster.wait_for(lambda: (a := cluster.active("converger")) and a["name"] != active["name"] and a,
                                   30, "the standby converger holding the lock", logs=["converger-0", "converger-1"])
        # a retired instance is stopped and its row removed; only convergence creates it again
        cluster.cli("retire", guid, "0")
        again = cluster.wait_for(
            lambda: next((r for r in cluster.running(guid)
                          if r["index"] == 0 and r["instance_guid"] != before[0]["instance_guid"]), None),
            60, "index 0 created again by the standby converger and RUNNING",
            logs=["converger-0", "converger-1", before[0]["cell_id"]])
        assert http_get(again["address"], again["ports"][0]["host_port"]) == "hello from 0\n"
        created = metric(cluster.metrics(standby), 'converger_actions_total{kind="create-missing",result="applied"}')
        assert created >= 1, cluster.metrics(standby)
    cluster.wait_for(lambda: cluster.process(active["name"])["pid"] != active["pid"]
                     and alive(cluster.process(active["name"])["pid"]), 30,
                     f"{active['name']} restarted by the keeper")


# ---- 6. a task runs exactly once ----------------------------------------------------------------

def test_a_task_runs_exactly_once_and_returns_its_result(cluster: Cluster) -> None:
    guid = "e2e-once"
    with HitCounter(cluster.network["gateway"]) as counter, EventStream(cluster, "/v1/events/tasks") as events:
        url = f"http://{counter.host}:{counter.port}/ran/{guid}"
        cluster.run_task(guid, {
            "rootfs": "preloaded:busybox", "memory_mb": 32, "disk_mb": 32, "result_file": "/tmp/result",
            # tell the test we ran (the only way out of a container), then outlive a few auction rounds
            "action": {"run": {"path": "/bin/sh", "user": "root", "args": [
                "-c", f"wget -q -O /dev/null {url} && sleep 2 && echo -n done-{guid} > /tmp/result"]}},
            "egress_rules": [{"protocol": "tcp", "destinations": [counter.host], "ports": [counter.port]}]})
        task = cluster.wait_for(lambda: (t := cluster.task(guid))["state"] == "COMPLETED" and t, 60,
                                "the task COMPLETED")
        assert task["failed"] is False and task["result"] == f"done-{guid}", task
        # convergence kicks PENDING tasks every pass: two more passes may not start this one again
        converger = cluster.active("converger")
        assert converger is not None
        passes = metric(cluster.metrics(converger), 'converger_passes_total{outcome="ok"}')
        cluster.wait_for(lambda: metric(cluster.metrics(converger), 'converger_passes_total{outcome="ok"}')
                         >= passes + 2, 30, "two more convergence passes", logs=[converger["name"]])
        assert cluster.task(guid)["state"] == "COMPLETED"
    assert counter.hits == {f"/ran/{guid}": 1}, counter.hits
    mine = [(name, p) for name, p in events.events
            if (p.get("task") or p.get("after") or {}).get("task_guid") == guid]
    assert [name for name, _ in mine][:1] == ["task_created"], mine  # subscribed before it existed
    starts = [p for name, p in mine if name == "task_changed"
              and p["before"]["state"] != "RUNNING" and p["after"]["state"] == "RUNNING"]
    assert len(starts) == 1, f"task started {len(starts)} times: {mine}"
    assert any(name == "task_changed" and p["after"]["state"] == "COMPLETED" for name, p in mine), mine


# ---- 7. placement errors, then capacity ----------------------------------------------------------

def test_placement_errors_clear_once_capacity_appears(cluster: Cluster) -> None:
    capacity = {c["cell_id"]: c["capacity"]["memory_mb"] for c in _cells_json(cluster)}
    biggest, smallest = max(capacity.values()), min(capacity.values())

    # larger than any cell: never placed
    cluster.desire("e2e-huge", 1, memory_mb=biggest + 1)
    cluster.wait_for(lambda: [r for r in cluster.actual_lrps("e2e-huge")
                              if r["placement_error"] == "insufficient resources: memory"
                              and r["state"] == "UNCLAIMED"], 30, "the placement error of e2e-huge")

    # fill every cell, then desire what fits only once that is gone
    cluster.desire("e2e-fill", CELLS, memory_mb=smallest - 16, wait=60)
    cluster.desire("e2e-waiting", 1, memory_mb=smallest // 2)
    cluster.wait_for(lambda: [r for r in cluster.actual_lrps("e2e-waiting")
                              if r["placement_error"] == "insufficient resources: memory"
                              and r["state"] == "UNCLAIMED"], 30, "the placement error of e2e-waiting")
    cluster.cli("remove", "e2e-fill")
    (row,) = cluster.wait_running("e2e-waiting", 1, timeout=60)  # convergence re-auctions it (every 5 s)
    assert row["placement_error"] == ""
    assert http_get(row["address"], row["ports"][0]["host_port"]) == "hello from 0\n"
    huge = cluster.actual_lrps("e2e-huge")
    assert [(r["state"], r["placement_error"]) for r in huge] == [("UNCLAIMED", "insufficient resources: memory")]


def _cells_json(cluster: Cluster) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = json.loads(cluster.cli("cells", "--json").stdout)
    assert len(cells) == CELLS
    return cells


# ---- 8. evacuation -------------------------------------------------------------------------------

def test_evacuating_a_cell_moves_its_instances_while_they_keep_serving(cluster: Cluster) -> None:
    guid = "e2e-evacuate"
    cluster.desire(guid, 3, wait=60)
    rows = cluster.wait_running(guid, 3)
    cell = cluster.cell(rows[1]["cell_id"])
    moved = {r["index"]: r["instance_guid"] for r in rows if r["cell_id"] == cell["cell_id"]}
    rep = cluster.process(cell["cell_id"])
    admin_port = _admin_port(cell)

    with EventStream(cluster) as events, InstanceSampler(cluster, guid) as sampler:
        start = time.monotonic()
        # the operator's drain: POST /evacuate on the admin port, loopback inside the cell's netns
        out = subprocess.run(["nsenter", f"--net=/var/run/netns/{cell['netns']}", "curl", "-sS", "-X", "POST",
                              f"http://127.0.0.1:{admin_port}/evacuate"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and "ping_path" in out.stdout, out

        def moved_away() -> bool:
            now = cluster.actual_lrps(guid)
            return [(r["index"], r["presence"], r["state"]) for r in now] == \
                [(i, "ORDINARY", "RUNNING") for i in range(3)] \
                and not any(r["cell_id"] == cell["cell_id"] for r in now)
        cluster.wait_for(moved_away, 60, f"the instances of {cell['cell_id']} RUNNING elsewhere, no EVACUATING row",
                         logs=[cell["cell_id"], "auctioneer-0", "auctioneer-1"])
        # the rep exits once its cell is empty; the keeper starts it again
        cluster.wait_rep_back(cell["cell_id"], rep["pid"])
        end = time.monotonic()
    assert not cluster.containers(guid)[cell["cell_id"]], cluster.diagnostics([cell["cell_id"]])
    assert moved and all(r["instance_guid"] not in moved.values() for r in cluster.running(guid))

    window = sampler.between(start, end)
    assert len(window) >= 10, f"only {len(window)} samples"
    # each moved instance kept serving through an EVACUATING row (it may live for less than a
    # sample's interval: the event stream sees it for sure)
    evacuating = rows_in_events(events, guid, "EVACUATING") | {
        r["instance_guid"] for _, rs in window for r in rs if r["presence"] == "EVACUATING"}
    assert set(moved.values()) <= evacuating, f"moved {moved}, EVACUATING rows seen {evacuating}"
    least = min(len(serving_indices(rs)) for _, rs in window)
    assert least >= 3 - 1, f"only {least} of 3 indices had a RUNNING row at some point"


def _admin_port(cell: dict[str, Any]) -> int:
    listen = yaml.safe_load(Path(cell["config"]).read_text())["admin_listen_address"]
    match = re.fullmatch(r"127\.0\.0\.1:(\d+)", listen)
    assert match, listen
    return int(match.group(1))
