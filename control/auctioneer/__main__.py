"""Entry of the auctioneer daemon: `pydiego auctioneer --config FILE`."""
from __future__ import annotations

import sys

from control.kit import logging as klog
from control.kit.config import ConfigError, load
from control.kit.supervisor import run_process

from .config import AuctioneerConfig


def run_auctioneer(config_path: str) -> int:
    try:
        cfg = load(AuctioneerConfig, config_path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    klog.configure("auctioneer", cfg.log_level)
    from .server import Auctioneer
    return run_process(lambda: Auctioneer(cfg).run())


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--config":
        print("usage: python -m control.auctioneer --config FILE", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_auctioneer(sys.argv[2]))
