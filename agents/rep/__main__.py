"""Entry of the rep daemon: `pydiego rep --config FILE` or `python -m agents.rep --config FILE`.
SIGTERM evacuates the cell and then exits; SIGINT stops at once, leaving the containers running."""
from __future__ import annotations

import sys

from control.kit.daemon import module_main, run_daemon

from .config import RepConfig


def run_rep(config_path: str) -> int:
    holder: list[object] = []

    async def main(cfg: RepConfig) -> int:
        from .server import Rep
        rep = Rep(cfg)
        holder.append(rep)
        return await rep.run()

    async def on_term() -> None:
        if holder:
            await holder[0].evacuate()  # type: ignore[attr-defined]

    return run_daemon("rep", RepConfig, config_path, main, on_term=on_term)


if __name__ == "__main__":
    sys.exit(module_main("agents.rep", sys.argv, run_rep))
