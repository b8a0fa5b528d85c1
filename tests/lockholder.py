"""A separate process that holds a lock (for SIGSTOP / SIGKILL tests of the coordination layer).

usage: python -m tests.lockholder CONFIG_JSON NAME
Prints `ACQUIRED <token>` once it holds the lock, then renews it; prints `LOST` and exits 3
when the lock is lost; releases it and exits 0 on SIGTERM.
"""
from __future__ import annotations

import asyncio
import signal
import sys

from control.coordination.base import CoordinationConfig, LockLost
from control.coordination.factory import build
from control.coordination.members import LockMember, lock_value
from control.kit import logging as klog
from control.kit.etcd import Etcd
from control.kit.supervisor import run_members


async def main(cfg: CoordinationConfig, name: str) -> int:
    etcd = Etcd(cfg.etcd_endpoints)
    coordinator = build(cfg, etcd)

    class Announce:
        async def run(self, ready: asyncio.Event) -> None:
            print(f"ACQUIRED {lock.token}", flush=True)
            ready.set()
            await asyncio.Event().wait()

    lock = LockMember(coordinator, name, lock_value(name, "test"), etcd, cfg.key_prefix)
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await run_members([("lock", lock), ("announce", Announce())])
    except asyncio.CancelledError:
        return 0
    except LockLost:
        print("LOST", flush=True)
        return 3
    finally:
        await etcd.close()
    return 1


if __name__ == "__main__":
    config = CoordinationConfig.model_validate_json(sys.argv[1])
    klog.configure("lockholder", "warning")  # logs on stderr; stdout carries the protocol
    sys.exit(asyncio.run(main(config, sys.argv[2])))
