"""Entry of the BBS daemon: `pydiego bbs --config FILE` or `python -m control.bbs --config FILE`."""
from __future__ import annotations

import sys

from control.kit.daemon import module_main, run_daemon

from .config import BBSConfig


def run_bbs(config_path: str) -> int:
    def main(cfg: BBSConfig):  # type: ignore[no-untyped-def]
        from .server import BBS
        return BBS(cfg).run()
    return run_daemon("bbs", BBSConfig, config_path, main)


if __name__ == "__main__":
    sys.exit(module_main("control.bbs", sys.argv, run_bbs))
