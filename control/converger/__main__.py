"""Entry of the converger daemon: parse, load config, run under the supervisor.

`pydiego converger --config FILE` or `python -m control.converger --config FILE`.
"""
from __future__ import annotations

import sys

from control.kit import logging as klog
from control.kit.config import ConfigError, load
from control.kit.supervisor import run_process

from .config import ConvergerConfig


def run_converger(config_path: str) -> int:
    try:
        cfg = load(ConvergerConfig, config_path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    klog.configure("converger", cfg.log_level)
    from .server import ConvergerProcess
    return run_process(lambda: ConvergerProcess(cfg).run())


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--config":
        print("usage: python -m control.converger --config FILE", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_converger(sys.argv[2]))
