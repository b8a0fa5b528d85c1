"""Entry of the BBS daemon: parse, load config, run under the supervisor."""
from __future__ import annotations

import sys

from control.kit import logging as klog
from control.kit.config import ConfigError, load
from control.kit.supervisor import run_process

from .config import BBSConfig


def run_bbs(config_path: str) -> int:
    try:
        cfg = load(BBSConfig, config_path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    klog.configure("bbs", cfg.log_level)
    from .server import BBS
    return run_process(lambda: BBS(cfg).run())


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--config":
        print("usage: python -m control.bbs --config FILE", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_bbs(sys.argv[2]))
