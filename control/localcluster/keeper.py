"""The local cluster's process keeper: restarts any cluster process that exits, the way
systemd does in production (ARCHITECTURE §1), and records the new pid in cluster.json.

usage: python -m control.localcluster.keeper CLUSTER_DIR
"""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from .cluster import spawn
from .layout import ClusterState, Layout, alive

POLL_S = 0.2
RESTART_BACKOFF_S = 0.5


def keep(directory: Path) -> int:
    layout = Layout(directory)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    last_restart: dict[str, float] = {}
    while not stopping:
        time.sleep(POLL_S)
        if not layout.state.exists():
            return 0  # the cluster was removed
        state = ClusterState.load(layout.state)
        changed = False
        for proc in state.processes:
            if alive(proc.pid) or not proc.cmd or stopping:
                continue
            if time.monotonic() - last_restart.get(proc.name, 0.0) < RESTART_BACKOFF_S:
                continue
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
