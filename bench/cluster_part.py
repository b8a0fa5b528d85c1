"""auction_bench.py's `cluster` part: the real local cluster (`pydiego cluster up --cells 3`,
runc containers, busybox httpd with a TCP check).

Figures (polled every 10 ms over the BBS API, no CLI start-up inside): desire -> every instance RUNNING (3 and 30 instances, 3 runs each), and cell loss:
SIGKILL of a rep holding instances (the keeper is paused so the rep stays down) -> every index
RUNNING again on a live cell. The replacement path: the cell's presence expires (presence_ttl
4 s), the converger is woken by the presence watch, marks the instances SUSPECT and asks for
replacements, the auctioneer places them, the reps start them.
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from control.kit import tls

ROOT = Path(__file__).resolve().parents[1]
PYDIEGO = [str(Path(sys.executable).with_name("pydiego"))]
LRP = """process_guid: {guid}
domain: bench
rootfs: preloaded:busybox
instances: {instances}
memory_mb: 32
disk_mb: 32
ports: [8080]
action:
  run: {{path: /bin/sh, user: root, args: ["-c", "mkdir -p /www && echo $INSTANCE_INDEX > /www/index.html && exec httpd -f -p 8080 -h /www"]}}
check_definition: {{checks: [{{tcp_check: {{port: 8080}}}}]}}
"""


def _cli(env: dict[str, str], *args: str, check: bool = True) -> str:
    out = subprocess.run([*PYDIEGO, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if check and out.returncode != 0:
        raise RuntimeError(f"pydiego {' '.join(args)} failed: {out.stderr[-2000:]}")
    return out.stdout


class API:
    """The BBS over mutual TLS with the cluster's client certificate (no CLI start-up in the timings)."""

    def __init__(self, cluster_dir: Path) -> None:
        state = json.loads((cluster_dir / "cluster.json").read_text())
        ctx = tls.client_context(state["ca_cert"], state["client_cert"], state["client_key"])
        self.http = httpx.Client(base_url=state["bbs_url"], verify=ctx, timeout=30)


_api: list[API] = []


def _rows(env: dict[str, str], guid: str) -> list[dict[str, Any]]:
    resp = _api[0].http.get("/v1/actual_lrps", params={"process_guid": guid})
    resp.raise_for_status()
    return resp.json()  # type: ignore[no-any-return]


def _desire_until_running(env: dict[str, str], d: Path, guid: str, instances: int) -> float:
    body = yaml.safe_load(LRP.format(guid=guid, instances=instances))
    started = time.perf_counter()
    _api[0].http.post("/v1/desired_lrps", json=body).raise_for_status()
    while True:
        rows = _rows(env, guid)
        if sum(1 for r in rows if r["state"] == "RUNNING" and r.get("presence", "ORDINARY") == "ORDINARY") >= instances:
            return time.perf_counter() - started
        if time.perf_counter() - started > 120:
            raise RuntimeError(f"{guid}: not all RUNNING after 120 s")
        time.sleep(0.01)


def _cell_loss(env: dict[str, str], d: Path, state: dict[str, Any], guid: str) -> float:
    rows = _rows(env, guid)
    victim = max({r["cell_id"] for r in rows}, key=lambda c: sum(1 for r in rows if r["cell_id"] == c))
    lost = {r["index"] for r in rows if r["cell_id"] == victim}
    rep = next(p for p in json.loads(_cli(env, "cluster", "status", "--json"))["processes"] if p["name"] == victim)
    keeper = state["keeper_pid"]
    os.kill(keeper, signal.SIGSTOP)
    try:
        os.kill(rep["pid"], signal.SIGKILL)
        started = time.perf_counter()
        while True:
            now = _rows(env, guid)
            ok = {r["index"] for r in now if r["state"] == "RUNNING" and r["cell_id"] != victim}
            if lost <= ok:
                took = time.perf_counter() - started
                break
            if time.perf_counter() - started > 120:
                raise RuntimeError(f"replacements of {sorted(lost)} not RUNNING after 120 s")
            time.sleep(0.01)
    finally:
        os.kill(keeper, signal.SIGCONT)
    deadline = time.time() + 60  # the keeper restarts the rep; wait until its presence is back
    while time.time() < deadline and victim not in _cli(env, "cells"):
        time.sleep(0.2)
    time.sleep(2)
    return took


def bench_cluster(quick: bool = False) -> dict[str, Any]:
    d = Path(tempfile.mkdtemp(prefix="pydiego-cluster-bench-", dir="/var/tmp"))
    env = dict(os.environ, PYDIEGO_CLUSTER_DIR=str(d / "cluster"))
    runs = 1 if quick else 3
    try:
        print("  cluster   bringing up a local cluster with 3 cells ...", flush=True)
        started = time.perf_counter()
        _cli(env, "cluster", "up", "--cells", "3")
        up_s = time.perf_counter() - started
        state = json.loads((d / "cluster" / "cluster.json").read_text())
        _api[:] = [API(d / "cluster")]
        results: dict[str, Any] = {"cluster_up_s": round(up_s, 1)}
        for instances in (3, 30):
            times = []
            for r in range(runs):
                guid = f"b{instances}-{r}"
                times.append(_desire_until_running(env, d, guid, instances))
                _cli(env, "remove", guid)
                time.sleep(1)
            results[f"desire_to_running_{instances}_median_s"] = round(statistics.median(times), 2)
            print(f"  cluster   desire -> {instances} RUNNING: median {statistics.median(times):.2f} s "
                  f"({', '.join(f'{t:.2f}' for t in times)})", flush=True)
        _desire_until_running(env, d, "victims", 6)
        losses = [_cell_loss(env, d, state, "victims") for _ in range(runs)]
        results["cell_loss_to_replacements_running_median_s"] = round(statistics.median(losses), 2)
        print(f"  cluster   rep SIGKILL -> replacements RUNNING: median {statistics.median(losses):.2f} s "
              f"({', '.join(f'{t:.2f}' for t in losses)}); presence_ttl 4 s", flush=True)
        return results
    finally:
        _cli(env, "cluster", "down", check=False)
