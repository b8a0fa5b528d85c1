"""The local cluster's process keeper: restarts any cluster process that exits, the way
systemd does in production (ARCHITECTURE §1), and records the new pid in cluster.json. A
process that keeps dying right after its restart is restarted less and less often (0.5 s,
doubling up to 10 s), as systemd's restart rate limit would; reps are restarted with the same
`nsenter --net` command, so they come back in their cell's network namespace.

usage: python -m control.localcluster.keeper CLUSTER_DIR
"""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from .processes import spawn
from .layout import ClusterState, Layout, alive

POLL_S = 0.2
RESTART_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0
STABLE_S = 10.0  # a process that lived this long after a restart gets the short backoff again


def keep(directory: Path) -> int:
    layout = Layout(directory)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    last_restart: dict[str, float] = {}
    backoff: dict[str, float] = {}  # doubles while a process keeps dying at once (a crash loop)
    while not stopping:
        time.sleep(POLL_S)
        if not layout.state.exists():
            return 0  # the cluster was removed
        state = ClusterState.load(layout.state)
        changed = False
        for proc in state.processes:
            if alive(proc.pid) or not proc.cmd or stopping:
                continue
            now = time.monotonic()
            since = now - last_restart.get(proc.name, 0.0)
            delay = backoff.get(proc.name, RESTART_BACKOFF_S)
            if since < delay:
                continue
            backoff[proc.name] = RESTART_BACKOFF_S if since > STABLE_S + delay else min(delay * 2, MAX_BACKOFF_S)
            proc.pid = spawn(proc.cmd, Path(proc.log))
            proc.restarts += 1
            last_restart[proc.name] = time.monotonic()
            changed = True
            print(json.dumps({"event": "process-restarted", "process": proc.name, "pid": proc.pid,
                              "restarts": proc.restarts, "component": "keeper"}), flush=True)
        if changed:
            state.save(layout.state)
    return 0


if __name__ == "__main__":
    sys.exit(keep(Path(sys.argv[1])))
