"""Entry of the converger daemon: `pydiego converger --config FILE` or
`python -m control.converger --config FILE`."""
from __future__ import annotations

import sys

from control.kit.daemon import module_main, run_daemon

from .config import ConvergerConfig


def run_converger(config_path: str) -> int:
    def main(cfg: ConvergerConfig):  # type: ignore[no-untyped-def]
        from .server import ConvergerProcess
        return ConvergerProcess(cfg).run()
    return run_daemon("converger", ConvergerConfig, config_path, main)


if __name__ == "__main__":
    sys.exit(module_main("control.converger", sys.argv, run_converger))
