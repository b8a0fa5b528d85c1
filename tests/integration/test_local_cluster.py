"""`pydiego cluster up|status|down` and the operator verbs, driven as a newcomer would: through
the CLI against real etcd, Consul and a BBS with mutual TLS."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from control.kit import tls
from control.localcluster.layout import alive

ROOT = Path(__file__).resolve().parents[2]


def pydiego(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "control.cli.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    if check and proc.returncode != 0:
        logs = ""
        if "--dir" in args:  # show what the cluster's processes said
            for log in sorted((Path(args[args.index("--dir") + 1]) / "logs").glob("*.log")):
                logs += f"\n--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise AssertionError(f"pydiego {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}{logs}")
    return proc


def test_cluster_lifecycle_and_operator_verbs(tmp_path: Path) -> None:
    d = str(tmp_path / "cluster")
    try:
        up = pydiego("cluster", "up", "--dir", d)
        assert "[4/6] starting 2 BBS processes" in up.stderr and "bbs-0 active" in up.stderr  # progress is shown
        assert "auctioneer-0 active" in up.stderr and "converger-0 active" in up.stderr
        status = json.loads(pydiego("cluster", "status", "--dir", d, "--json").stdout)
        assert status["running"] is True
        for key in ("bbs_url", "ca_cert", "client_cert", "client_key"):
            assert status[key], key
        components = sorted(p["component"] for p in status["processes"])
        assert components == ["auctioneer", "auctioneer", "bbs", "bbs", "consul", "converger", "converger", "etcd"]
        assert all(p["pid"] and p["address"] for p in status["processes"])
        bbses = [p for p in status["processes"] if p["component"] == "bbs"]
        assert [p["active"] for p in bbses].count(True) == 1  # one active, one standby
        active = next(p for p in bbses if p["active"])
        assert status["bbs_url"] == active["address"]
        locks = json.loads(pydiego("locks", "--json", "--dir", d).stdout)
        holders = {p["component"]: p["name"] for p in status["processes"] if p["active"] and p["component"] != "bbs"
                   and p["component"] in ("auctioneer", "converger")}
        assert sorted((x["name"], x["owner"]) for x in locks) == sorted(
            [("auctioneer", holders["auctioneer"]), ("bbs", active["name"]), ("converger", holders["converger"])])

        # the generated certificates give mutual TLS
        ctx = tls.client_context(status["ca_cert"], status["client_cert"], status["client_key"])
        assert httpx.get(status["bbs_url"] + "/v1/ping", verify=ctx).json() == {"available": True}

        # a newcomer's session with the CLI
        pydiego("domains", "upsert", "cf-apps", "--ttl", "120", "--dir", d)
        assert "cf-apps" in pydiego("domains", "--dir", d).stdout
        pydiego("desire", str(ROOT / "examples" / "web.yml"), "--dir", d)
        actual = json.loads(pydiego("actual-lrps", "--process-guid", "web", "--json", "--dir", d).stdout)
        assert sorted(a["index"] for a in actual) == [0, 1, 2] and {a["state"] for a in actual} == {"UNCLAIMED"}
        pydiego("scale", "web", "1", "--dir", d)
        assert len(json.loads(pydiego("actual-lrps", "--json", "--dir", d).stdout)) == 1
        again = pydiego("desire", str(ROOT / "examples" / "web.yml"), "--dir", d, check=False)
        assert again.returncode == 1 and "ResourceExists" in again.stderr
        pydiego("run-task", str(ROOT / "examples" / "task.yml"), "--dir", d)
        assert json.loads(pydiego("tasks", "hello", "--dir", d).stdout)["state"] == "PENDING"
        pydiego("cancel-task", "hello", "--dir", d)
        task = json.loads(pydiego("tasks", "hello", "--dir", d).stdout)
        assert task["failed"] is True and task["failure_reason"] == "task was cancelled"
        bad = tmp_path / "bad.json"
        bad.write_text('{"process_guid": "no spaces allowed", "domain": "d"}')
        refused = pydiego("desire", str(bad), "--dir", d, check=False)
        assert refused.returncode == 1 and "process_guid" in refused.stderr and "rootfs" in refused.stderr
        assert len(json.loads(pydiego("desired-lrps", "--json", "--dir", d).stdout)) == 1
        # SIGKILL the active BBS: the CLI follows the standby, and the keeper restarts the dead one
        os.kill(active["pid"], signal.SIGKILL)
        assert len(json.loads(pydiego("desired-lrps", "--json", "--dir", d).stdout)) == 1
        deadline = time.monotonic() + 20
        while True:
            after = json.loads(pydiego("cluster", "status", "--dir", d, "--json", check=False).stdout)
            roles = {p["name"]: (p["active"], p["restarts"]) for p in after["processes"] if p["component"] == "bbs"}
            # the killed one is back (as standby, or active again if it won the race for the lock)
            if roles[active["name"]][1] == 1 and [a for a, _ in roles.values()].count(True) == 1:
                break
            assert time.monotonic() < deadline, roles
            time.sleep(0.3)
        pydiego("remove", "web", "--dir", d)
        assert json.loads(pydiego("desired-lrps", "--json", "--dir", d).stdout) == []
    finally:
        pydiego("cluster", "down", "--dir", d)
    assert not Path(d).exists()
    assert not any(alive(p["pid"]) for p in status["processes"])
    assert not any(alive(p["pid"]) for p in after["processes"])
    gone = pydiego("cluster", "status", "--dir", d, check=False)
    assert gone.returncode == 1 and "no cluster" in gone.stdout


def test_verbs_without_a_cluster_explain_what_to_do(tmp_path: Path) -> None:
    proc = pydiego("desired-lrps", "--dir", str(tmp_path / "none"), check=False)
    assert proc.returncode == 1 and "pydiego cluster up" in proc.stderr
