"""`pydiego`: the daemons (`pydiego bbs --config FILE`), the operator verbs, and
`pydiego cluster up|down|status` for a complete local cluster."""
from __future__ import annotations

import argparse
import sys


def _connection_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection (default: the local cluster's cluster.json)")
    g.add_argument("--bbs-url", help="BBS URL, e.g. https://10.0.0.1:8889")
    g.add_argument("--ca-cert", help="CA certificate that signed the BBS's certificate")
    g.add_argument("--client-cert", help="client certificate (mutual TLS)")
    g.add_argument("--client-key", help="key of --client-cert")
    g.add_argument("--dir", help="local cluster directory (default ~/.pydiego/cluster or $PYDIEGO_CLUSTER_DIR)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pydiego", description="Diego's container runtime, in Python")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("bbs", help="run the BBS daemon")
    d.add_argument("--config", required=True, help="YAML or JSON config file (BBSConfig)")

    d = sub.add_parser("auctioneer", help="run the auctioneer daemon (active/passive under its lock)")
    d.add_argument("--config", required=True, help="YAML or JSON config file (AuctioneerConfig)")

    d = sub.add_parser("converger", help="run the converger daemon")
    d.add_argument("--config", required=True, help="YAML or JSON config file (ConvergerConfig)")

    d = sub.add_parser("rep", help="run a cell's rep daemon (SIGTERM evacuates, SIGINT stops in place)")
    d.add_argument("--config", required=True, help="YAML or JSON config file (RepConfig)")

    c = sub.add_parser("cluster", help="a complete local cluster on this machine")
    c.add_argument("action", choices=["up", "down", "status"])
    c.add_argument("--dir", help="cluster directory (default ~/.pydiego/cluster or $PYDIEGO_CLUSTER_DIR)")
    c.add_argument("--json", action="store_true", help="status as JSON")
    c.add_argument("--cells", type=int, default=0, help=(
        "number of cells to start: a rep each, in its own network namespace with its own address "
        "(needs root; the busybox stack is offered)"))
    c.add_argument("--base-port", type=int, default=0, help="first port to use (default: pick free ports)")

    v = sub.add_parser("domains", help="list domains, or `domains upsert NAME --ttl S`")
    v.add_argument("action", nargs="?", choices=["list", "upsert"], default="list")
    v.add_argument("name", nargs="?")
    v.add_argument("--ttl", type=int, default=0, help="seconds until the domain expires; 0 = never")
    v = sub.add_parser("desire", help="desire an LRP from a JSON or YAML file ('-' = stdin)")
    v.add_argument("file")
    v.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                   help="wait until every instance is RUNNING and print their addresses (fails after SECONDS)")
    v = sub.add_parser("desired-lrps", help="list desired LRPs, or show one")
    v.add_argument("process_guid", nargs="?")
    v.add_argument("--domain")
    v = sub.add_parser("actual-lrps", help="list actual LRP instances")
    v.add_argument("--domain")
    v.add_argument("--cell-id")
    v.add_argument("--process-guid")
    v.add_argument("--index", type=int)
    v = sub.add_parser("scale", help="change an LRP's instance count")
    v.add_argument("process_guid")
    v.add_argument("instances", type=int)
    v = sub.add_parser("retire", help="stop one instance (convergence restarts the index)")
    v.add_argument("process_guid")
    v.add_argument("index", type=int)
    v = sub.add_parser("remove", help="remove a desired LRP and stop its instances")
    v.add_argument("process_guid")
    v = sub.add_parser("tasks", help="list tasks, or show one")
    v.add_argument("task_guid", nargs="?")
    v.add_argument("--domain")
    v.add_argument("--cell-id")
    v = sub.add_parser("run-task", help="desire a task from a JSON or YAML file {task_guid, domain, task_definition}")
    v.add_argument("file")
    v = sub.add_parser("cancel-task", help="cancel a task")
    v.add_argument("task_guid")
    v = sub.add_parser("cells", help="list cells and their capacity")
    v = sub.add_parser("logs", help="an LRP's logs, read from its cells (`[index] source line`)")
    v.add_argument("process_guid")
    v.add_argument("--index", type=int, help="only this instance")
    v.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the containers go")
    v.add_argument("--tail", type=int, default=100, help="earlier lines to show first, per instance (default 100)")
    v = sub.add_parser("locks", help="list lock holders (active instances of the singletons)")
    v.add_argument("--consul", help="Consul address (locks in Consul)")
    v.add_argument("--etcd", help="etcd endpoint (locks in etcd, or the fences of Consul locks)")
    v.add_argument("--key-prefix", default="/pydiego/v1")
    v = sub.add_parser("events", help="follow the event stream")
    v.add_argument("--tasks", action="store_true", help="task events instead of LRP events")
    v.add_argument("--cell-id", help="only instance events of this cell")
    v.add_argument("--count", type=int, default=0, help="stop after N events")
    for name in ("domains", "desire", "desired-lrps", "actual-lrps", "scale", "retire", "remove", "tasks",
                 "run-task", "cancel-task", "cells", "events", "locks", "logs"):
        _connection_flags(sub.choices[name])
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "auctioneer":
        from control.auctioneer.__main__ import run_auctioneer
        return run_auctioneer(args.config)
    if args.command == "rep":
        from agents.rep.__main__ import run_rep
        return run_rep(args.config)
    if args.command == "bbs":
        from control.bbs.__main__ import run_bbs
        return run_bbs(args.config)
    if args.command == "converger":
        from control.converger.__main__ import run_converger
        return run_converger(args.config)
    if args.command == "cluster":
        from control.localcluster.cli import run_cluster
        return run_cluster(args)
    from .commands import run_verb
    return run_verb(args)


if __name__ == "__main__":
    sys.exit(main())
