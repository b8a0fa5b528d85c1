"""Processes of a local cluster: started in their own sessions (they outlive the CLI), stopped
by pid (SIGTERM, then SIGKILL after a grace period), and found again by command line when no
record of them is left."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from .layout import alive


def spawn(cmd: list[str], log: Path) -> int:
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return proc.pid


def stop_pid(pid: int, grace: float = 10.0) -> None:
    if not alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)
    if alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


COMPONENT_MODULES = ("agents.rep", "control.bbs", "control.auctioneer", "control.converger", "control.localcluster.keeper")


def orphans(roots: list[Path]) -> list[tuple[int, str]]:
    """(pid, component) of live cluster processes whose command line names a path under `roots`
    (component: keeper, rep or other): for a `down` without a state file. Only the cluster's own
    components are considered."""
    found = []
    prefixes = [str(r) for r in roots]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid() or not alive(int(entry.name)):
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any(a == p or a.startswith(p + "/") for a in argv for p in prefixes):
            continue
        if Path(argv[0]).name in ("etcd", "consul") or any(m in argv for m in COMPONENT_MODULES):
            kind = "keeper" if "control.localcluster.keeper" in argv else "rep" if "agents.rep" in argv else "other"
            found.append((int(entry.name), kind))
    return found
