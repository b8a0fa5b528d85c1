"""Argument handling and output of `pydiego cluster up|down|status`."""
from __future__ import annotations

import json
import sys
from argparse import Namespace
from dataclasses import asdict
from pathlib import Path

from control.cli.connection import default_cluster_dir

from . import cluster
from .layout import ClusterState


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_cluster(args: Namespace) -> int:
    directory = Path(args.dir) if args.dir else default_cluster_dir()
    try:
        if args.action == "up":
            state = cluster.up(directory, _progress, base_port=args.base_port, cells=args.cells)
            flag = "" if directory == default_cluster_dir() else f" --dir {directory}"
            print(f"cluster ready in {state.directory}\n  BBS: {state.bbs_url}")
            for cell in state.cells:
                print(f"  {cell.cell_id}: {cell.rep_url} ({cell.zone}, netns {cell.netns})")
            print(f"  try: pydiego {'cells' if state.cells else 'domains'}{flag}")
            return 0
        if args.action == "down":
            cluster.down(directory, _progress)
            return 0
        return _status(directory, args.json)
    except cluster.ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _status(directory: Path, as_json: bool) -> int:
    state, health = cluster.status(directory)
    if state is None:
        if as_json:
            print(json.dumps({"running": False, "directory": str(directory), "processes": []}))
        else:
            print(f"no cluster in {directory} (start one with `pydiego cluster up`)")
        return 1
    running = all(health.values())
    if as_json:
        doc = asdict(state)
        doc.update(running=running, health=health)
        print(json.dumps(doc, indent=2))
    else:
        _print_status(state, health, running)
    return 0 if running else 1


def _print_status(state: ClusterState, health: dict[str, bool], running: bool) -> None:
    print(f"cluster in {state.directory}: {'running' if running else 'DEGRADED'}")
    print(f"  bbs_url      {state.bbs_url}  (api {'ok' if health.get('bbs_api') else 'DOWN'})")
    print(f"  etcd         {state.etcd_endpoint}\n  consul       {state.consul_address}")
    print(f"  ca_cert      {state.ca_cert}\n  client_cert  {state.client_cert}\n  client_key   {state.client_key}")
    if state.network:
        net = state.network
        print(f"  cells net    bridge {net.get('bridge')} {net.get('gateway')} ({net.get('subnet')})")
    print("  processes:")
    for p in state.processes:
        if p.component in ("bbs", "auctioneer", "converger"):
            role = "active" if p.active else ("standby" if health.get(p.name) else "DEAD")
        else:
            role = "alive" if health.get(p.name) else "DEAD"
        print(f"    {p.component:<10} {p.name:<12} pid {p.pid:<8} {p.address:<28} {role:<8} log {p.log}")
