"""The entry of every pydiego daemon: load its config model, configure logging, run it under
the supervisor's signal handling. `python -m <package> --config FILE` and `pydiego <name>
--config FILE` both end here."""
from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from pydantic import BaseModel

from . import logging as klog
from .config import ConfigError, load
from .supervisor import run_process

C = TypeVar("C", bound=BaseModel)


def run_daemon(name: str, model: type[C], config_path: str, main: Callable[[C], Awaitable[int | None]],
               on_term: Callable[[], Awaitable[None]] | None = None) -> int:
    """Exit status: 2 for a config that does not load (the reason on stderr), else run_process's."""
    try:
        cfg = load(model, config_path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    klog.configure(name, getattr(cfg, "log_level", "info"))
    return run_process(lambda: main(cfg), on_term=on_term)


def module_main(module: str, argv: Sequence[str], run: Callable[[str], int]) -> int:
    """`python -m module --config FILE`."""
    if len(argv) != 3 or argv[1] != "--config":
        print(f"usage: python -m {module} --config FILE", file=sys.stderr)
        return 2
    return run(argv[2])
