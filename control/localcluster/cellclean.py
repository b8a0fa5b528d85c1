"""Remove every container of one local-cluster cell and everything its backend made.

usage: nsenter --net=/run/netns/<cell netns> -- python -m control.localcluster.cellclean DEPOT \
           [--tag TAG --bridge-subnet CIDR]

Run inside the cell's network namespace (its container bridge, veths and iptables chains live
there; mounts, cgroups and netns names are the host's, since nsenter enters only the network
namespace). `cleanup_all` learns the backend's tag from DEPOT/garden.json; when the depot is
gone (a directory partly removed), --tag and --bridge-subnet rebuild that file first so the
cgroups, chains and netns names of the tag are still found. Exit status 1 if anything remains.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m control.localcluster.cellclean")
    p.add_argument("depot")
    p.add_argument("--tag", help="garden tag of the cell (used when DEPOT/garden.json is missing)")
    p.add_argument("--bridge-subnet", help="container subnet of the cell (with --tag)")
    args = p.parse_args(argv)

    from agents.garden import GardenConfig, GardenError, cleanup_all

    depot = Path(args.depot)
    config_file = depot / "garden.json"
    if not config_file.exists() and args.tag:
        fields = {"depot_dir": str(depot), "tag": args.tag}
        if args.bridge_subnet:
            fields["bridge_subnet"] = args.bridge_subnet
        depot.mkdir(parents=True, exist_ok=True)
        config_file.write_text(GardenConfig.model_validate(fields).model_dump_json())
    try:
        asyncio.run(cleanup_all(depot))
    except GardenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
