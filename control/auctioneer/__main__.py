"""Entry of the auctioneer daemon: `pydiego auctioneer --config FILE` or
`python -m control.auctioneer --config FILE`."""
from __future__ import annotations

import sys

from control.kit.daemon import module_main, run_daemon

from .config import AuctioneerConfig


def run_auctioneer(config_path: str) -> int:
    def main(cfg: AuctioneerConfig):  # type: ignore[no-untyped-def]
        from .server import Auctioneer
        return Auctioneer(cfg).run()
    return run_daemon("auctioneer", AuctioneerConfig, config_path, main)


if __name__ == "__main__":
    sys.exit(module_main("control.auctioneer", sys.argv, run_auctioneer))
