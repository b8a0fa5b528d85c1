"""`pydiego cluster up --cells 2`: two reps, each in its own network namespace on the cells
bridge, driven through the CLI as an operator would; `pydiego logs` reads instances' logs
from both cells; `cluster down` leaves nothing behind (namespaces, links, mounts, chains,
cgroups, processes), also after SIGKILLed reps and a lost state file, and twice in a row."""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from control.kit import tls
from control.localcluster.layout import alive

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(b) for b in ("runc", "nsenter", "iptables-save", "busybox")),
    reason="cells need root, runc, nsenter, iptables and busybox (scripts/setup.sh)")

LRP = """
process_guid: {guid}
domain: cells-test
rootfs: preloaded:busybox
instances: {instances}
memory_mb: {memory_mb}
disk_mb: 32
ports: [8080]
action:
  run:
    path: /bin/sh
    args: ["-c", "echo hello from $INSTANCE_INDEX > /tmp/index.html; echo started $INSTANCE_INDEX; exec httpd -f -p 8080 -h /tmp"]
    user: root
"""


def pydiego(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "control.cli.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        logs = ""
        if "--dir" in args:
            for log in sorted((Path(args[args.index("--dir") + 1]) / "logs").glob("*.log")):
                logs += f"\n--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise AssertionError(f"pydiego {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}{logs}")
    return proc


def leftovers(directory: Path, network: dict[str, Any], cells: int) -> list[str]:
    """Everything a cluster with this cells network and `cells` cells could leave on the host."""
    slot = network["slot"]
    roots = [directory, Path(network["cells_root"])]
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith(f"pdcell{slot}-")]
    found += [f"netns {line.split()[0]}" for line in netns.splitlines()
              if any(line.startswith(f"pd{slot}c{n}-") for n in range(1, cells + 1))]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name == f"pdcells{slot}" or name.startswith(f"pdcv{slot}-"):
            found.append(f"link {name}")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
            found.append(f"mount {point}")
    for table in ("nat", "filter"):
        rules = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True).stdout
        found += [f"{table} {line}" for line in rules.splitlines()
                  if f"PD-CELLS{slot}-" in line or any(f"PD-{slot}c{n}-" in line for n in range(1, cells + 1))]
    for n in range(1, cells + 1):
        found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/pydiego/{slot}c{n}")]
    found += [f"directory {r}" for r in roots if r.exists()]
    return found


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def up(directory: Path, cells: int = 2) -> dict[str, Any]:
    """Start a cluster; if anything about its start-up is wrong, take it down before failing."""
    try:
        proc = pydiego("cluster", "up", "--cells", str(cells), "--dir", str(directory))
        assert f"[8/8] starting {cells} cell(s)" in proc.stderr and f"cell-{cells} ready at" in proc.stderr  # progress
        return json.loads(pydiego("cluster", "status", "--dir", str(directory), "--json").stdout)  # type: ignore[no-any-return]
    except BaseException:
        pydiego("cluster", "down", "--dir", str(directory), check=False)
        raise


def netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def test_two_cells_serve_from_their_own_namespaces_and_down_removes_everything(tmp_path: Path) -> None:
    d = tmp_path / "cluster"
    status = up(d)
    slot = status["network"]["slot"]
    try:
        assert status["running"] is True
        reps = [p for p in status["processes"] if p["component"] == "rep"]
        assert sorted(p["name"] for p in reps) == ["cell-1", "cell-2"]
        assert all(p["pid"] and status["health"][p["name"]] for p in reps)

        # each rep runs in its own netns (the one `ip netns` names), not the host's
        for rep, cell in zip(sorted(reps, key=lambda p: p["name"]), status["cells"]):
            assert netns_inode(rep["pid"]) == os.stat(f"/run/netns/{cell['netns']}").st_ino
            assert netns_inode(rep["pid"]) != netns_inode(os.getpid())
            assert rep["address"] == cell["rep_url"]

        # both presences are in the BBS, with distinct addresses on the cells bridge
        cells = json.loads(pydiego("cells", "--json", "--dir", str(d)).stdout)
        assert sorted(c["cell_id"] for c in cells) == ["cell-1", "cell-2"]
        urls = {c["rep_url"] for c in cells}
        assert len(urls) == 2 and all(u.startswith(f"https://10.253.{slot}.") for u in urls)
        assert {c["zone"] for c in cells} == {"z1", "z2"}

        # /state answers over mutual TLS from the host, with the cluster's client certificate
        ctx = tls.client_context(status["ca_cert"], status["client_cert"], status["client_key"])
        for url in sorted(urls):
            state = httpx.get(f"{url}/state", verify=ctx, timeout=10).json()
            assert state["total_resources"]["memory_mb"] > 0 and state["total_resources"]["containers"] > 0
            assert any("busybox" in p["properties"] for p in state["rootfs_providers"]), state["rootfs_providers"]
            with pytest.raises(httpx.HTTPError):  # no client certificate, no answer
                httpx.get(f"{url}/state", verify=tls.client_context(status["ca_cert"], None, None), timeout=5).raise_for_status()

        run_instances_and_read_logs(d, status, ctx, cells)
    finally:
        pydiego("cluster", "down", "--dir", str(d))
    assert leftovers(d, status["network"], 2) == []
    assert not any(alive(p["pid"]) for p in status["processes"])
    again = pydiego("cluster", "down", "--dir", str(d))  # harmless
    assert "no cluster" in again.stderr


def desire(d: Path, guid: str, instances: int = 2, memory_mb: int = 32) -> None:
    (d / f"{guid}.yml").write_text(LRP.format(guid=guid, instances=instances, memory_mb=memory_mb))
    pydiego("domains", "upsert", "cells-test", "--dir", str(d))
    pydiego("desire", str(d / f"{guid}.yml"), "--dir", str(d))


def start_instances(d: Path, guid: str, instances: int) -> list[dict[str, Any]]:
    """Desire the LRP (the auctioneer places it) and wait until every instance runs."""
    desire(d, guid, instances)

    def running() -> list[dict[str, Any]] | None:
        rows = json.loads(pydiego("actual-lrps", "--process-guid", guid, "--json", "--dir", str(d)).stdout)
        rows = [r for r in rows if r["presence"] == "ORDINARY"]
        return rows if len(rows) == instances and all(r["state"] == "RUNNING" for r in rows) else None
    try:
        rows = wait_for(running, 30, "the instances RUNNING")
    except AssertionError:
        actual = pydiego("actual-lrps", "--dir", str(d)).stdout
        logs = "".join(f"\n--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                       for log in sorted((d / "logs").glob("cell-*.log")))
        raise AssertionError(f"instances not RUNNING:\n{actual}{logs}") from None
    return sorted(rows, key=lambda r: r["index"])


def run_instances_and_read_logs(d: Path, status: dict[str, Any], ctx: Any, cells: list[dict[str, Any]]) -> None:
    """One instance on each cell (the auctioneer spreads an LRP's instances), both on the same
    host port of their own cell; `pydiego logs` reads them through the cells' rep_url."""
    guid = "cells-web"
    rows = start_instances(d, guid, 2)
    assert sorted(r["cell_id"] for r in rows) == ["cell-1", "cell-2"]
    assert rows[0]["ports"][0]["host_port"] == rows[1]["ports"][0]["host_port"]  # separate machines' ports
    for r in rows:  # each reachable from the host at its cell's address
        body = httpx.get(f"http://{r['address']}:{r['ports'][0]['host_port']}/", timeout=5).text
        assert body == f"hello from {r['index']}\n"

    both = wait_for(lambda: (p := pydiego("logs", guid, "--dir", str(d))).stdout.count("started") == 2 and p,
                    15, "the start lines of both instances")
    assert "[0] " in both.stdout and "started 0" in both.stdout and "[1] " in both.stdout
    one = pydiego("logs", guid, "--index", "1", "--json", "--dir", str(d))
    docs = [json.loads(line) for line in one.stdout.splitlines()]
    assert docs and {doc["index"] for doc in docs} == {1} and any(doc["line"] == "started 1" for doc in docs)
    assert {"timestamp", "source", "stream", "line"} <= set(docs[0])
    follow = subprocess.Popen([sys.executable, "-m", "control.cli.main", "logs", guid, "--index", "0", "--follow",
                               "--tail", "5", "--dir", str(d)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert follow.stdout is not None
        ready, _, _ = select.select([follow.stdout], [], [], 15)
        assert ready and "started 0" in follow.stdout.readline()
        time.sleep(0.5)
        assert follow.poll() is None  # the stream stays open
    finally:
        follow.send_signal(signal.SIGINT)
        follow.wait(10)
        if follow.stdout is not None:
            follow.stdout.close()
    assert follow.returncode == 130  # Ctrl-C ends --follow quietly

    unknown_index = pydiego("logs", guid, "--index", "5", "--dir", str(d), check=False)
    assert unknown_index.returncode == 1 and "no instance at index 5" in unknown_index.stderr
    unknown = pydiego("logs", "nope", "--dir", str(d), check=False)
    assert unknown.returncode == 1 and "ResourceNotFound" in unknown.stderr
    desire(d, "too-big", 1, memory_mb=10_000_000)  # fits no cell: stays UNCLAIMED with a placement error
    no_cell = pydiego("logs", "too-big", "--index", "0", "--dir", str(d), check=False)
    assert no_cell.returncode == 1 and "has no cell" in no_cell.stderr


def test_down_after_sigkilled_reps_and_a_lost_state_file(tmp_path: Path) -> None:
    # pytest's tmp_path is closed to others, so cells live under /var/lib/pydiego (see
    # cells.cells_root); here the cluster directory is open and holds its cells itself
    d = Path(f"/var/tmp/pydiego-cells-test-{os.getpid()}")
    status = up(d)
    assert status["network"]["cells_root"] == str(d / "cells")
    try:
        start_instances(d, "orphan", 2)  # containers, with their mounts
        os.kill(status["keeper_pid"], signal.SIGKILL)
        for p in status["processes"]:
            if p["component"] == "rep":
                os.kill(p["pid"], signal.SIGKILL)
        (d / "cluster.json").unlink()  # down finds the rest from network.json and the processes
        assert leftovers(d, status["network"], 2)  # namespaces, bridge and rules are still there
    finally:
        down = pydiego("cluster", "down", "--dir", str(d))
    assert "stopping" in down.stderr and "removing the cells network" in down.stderr
    assert leftovers(d, status["network"], 2) == []
    assert not any(alive(p["pid"]) for p in status["processes"])
    assert "no cluster" in pydiego("cluster", "down", "--dir", str(d)).stderr


def test_a_killed_rep_is_restarted_in_its_namespace_and_readopts_its_container() -> None:
    d = Path(f"/var/tmp/pydiego-cells-restart-{os.getpid()}")
    status = up(d, cells=1)
    try:
        ctx = tls.client_context(status["ca_cert"], status["client_cert"], status["client_key"])
        before = start_instances(d, "survivor", 1)[0]
        rep = next(p for p in status["processes"] if p["component"] == "rep")
        os.kill(rep["pid"], signal.SIGKILL)

        def back() -> bool:
            now = json.loads(pydiego("cluster", "status", "--dir", str(d), "--json", check=False).stdout)
            again = next(p for p in now["processes"] if p["component"] == "rep")
            if not (again["restarts"] >= 1 and now["health"]["cell-1"]):
                return False
            try:
                state = httpx.get(f"{again['address']}/state", verify=ctx, timeout=2).json()
            except httpx.HTTPError:
                return False
            return [x["instance_guid"] for x in state["lrps"] if x["state"] == "RUNNING"] == [before["instance_guid"]]
        wait_for(back, 30, "the restarted rep re-adopting its container")
        assert netns_inode(next(p for p in json.loads(pydiego("cluster", "status", "--dir", str(d), "--json").stdout)
                                ["processes"] if p["component"] == "rep")["pid"]) == os.stat(
            f"/run/netns/{status['cells'][0]['netns']}").st_ino
        body = httpx.get(f"http://{before['address']}:{before['ports'][0]['host_port']}/", timeout=5).text
        assert body == "hello from 0\n"  # the container kept serving through the rep's restart
    finally:
        pydiego("cluster", "down", "--dir", str(d))
    assert leftovers(d, status["network"], 1) == []
