"""Files of a local cluster directory and its state file (`cluster.json`)."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class ClusterError(Exception):
    """What went wrong, in one line a person can act on (the CLI prints it after `error:`)."""


@dataclass
class Process:
    component: str
    name: str
    pid: int
    address: str
    log: str
    active: bool = True
    cmd: list[str] = field(default_factory=list)
    restarts: int = 0


@dataclass
class CellRecord:
    """One cell of the cluster: where its rep runs and what its backend makes (for `down`)."""

    n: int
    cell_id: str
    netns: str
    address: str
    rep_url: str
    zone: str
    config: str
    depot: str
    tag: str
    bridge_subnet: str


@dataclass
class ClusterState:
    directory: str
    bbs_url: str
    ca_cert: str
    client_cert: str
    client_key: str
    etcd_endpoint: str
    consul_address: str
    coordination: dict[str, Any] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)
    keeper_pid: int = 0
    network: dict[str, Any] = field(default_factory=dict)  # the cells network (cellnet.setup's record)
    cells: list[CellRecord] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def save(self, path: Path) -> None:
        """Atomically replace the state file (the keeper and the CLI both write it)."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "ClusterState":
        data: dict[str, Any] = json.loads(path.read_text())
        data["processes"] = [Process(**p) for p in data.get("processes", [])]
        data["cells"] = [CellRecord(**c) for c in data.get("cells", [])]
        return cls(**data)


class Layout:
    def __init__(self, directory: Path) -> None:
        self.dir = directory.absolute()

    @property
    def state(self) -> Path:
        return self.dir / "cluster.json"

    @property
    def certs(self) -> Path:
        return self.dir / "certs"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def config(self) -> Path:
        return self.dir / "config"

    @property
    def network_file(self) -> Path:
        """The cells network's record, written before the network is made."""
        return self.dir / "network.json"

    def data(self, name: str) -> Path:
        return self.dir / "data" / name

    def make(self) -> None:
        for d in (self.certs, self.logs, self.config, self.dir / "data"):
            d.mkdir(parents=True, exist_ok=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
