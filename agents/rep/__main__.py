"""Entry of the rep daemon: `pydiego rep --config FILE` (SIGTERM evacuates, SIGINT stops in place)."""
from __future__ import annotations

import sys

from control.kit import logging as klog
from control.kit.config import ConfigError, load
from control.kit.supervisor import run_process

from .config import RepConfig


def run_rep(config_path: str) -> int:
    try:
        cfg = load(RepConfig, config_path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    klog.configure("rep", cfg.log_level)
    from .server import Rep
    holder: list[Rep] = []

    async def main() -> int:
        rep = Rep(cfg)
        holder.append(rep)
        return await rep.run()

    async def on_term() -> None:
        if holder:
            await holder[0].evacuate()

    return run_process(main, on_term=on_term)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--config":
        print("usage: python -m agents.rep --config FILE", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_rep(sys.argv[2]))
