"""The ordered process supervisor (CONVENTIONS: Concurrency).

Members start in order, each only after the previous one signalled ready; if any member ends
(returns or raises), every member is cancelled and the process exits non-zero; SIGTERM/SIGINT
cancel the whole group and the process exits 0 after the members' cleanup ran.
"""
from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

log = structlog.get_logger("supervisor")


class Runner(Protocol):
    async def run(self, ready: asyncio.Event) -> None: ...


class MemberExited(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"member {name} exited")
        self.name = name


async def _guard(name: str, member: Runner, ready: asyncio.Event) -> None:
    await member.run(ready)
    raise MemberExited(name)  # a member must run until cancelled


async def run_members(members: list[tuple[str, Runner]]) -> None:
    """Run the members in order until one ends or the group is cancelled."""
    async with asyncio.TaskGroup() as group:
        for name, member in members:
            ready = asyncio.Event()
            task = group.create_task(_guard(name, member, ready), name=name)
            waiter = group.create_task(ready.wait(), name=f"{name}-ready")
            await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
            if not ready.is_set():
                waiter.cancel()
                await asyncio.wait([task])
                return  # the TaskGroup re-raises the member's failure
            log.info("member-ready", member=name)


def run_process(main: Callable[[], Awaitable[None]]) -> int:
    """Run `main` with signal handling; 0 after SIGTERM/SIGINT, 1 if it ended by itself."""
    async def wrapper() -> int:
        task = asyncio.current_task()
        assert task is not None
        stopping = False

        def stop() -> None:
            nonlocal stopping
            stopping = True
            task.cancel()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        try:
            await main()
        except asyncio.CancelledError:
            if stopping:
                log.info("stopped-by-signal")
                return 0
            raise
        except BaseExceptionGroup as group:
            for exc in _leaves(group):
                if isinstance(exc, MemberExited):
                    log.error("member-exited", member=exc.name)
                elif not isinstance(exc, asyncio.CancelledError):
                    log.error("process-failed", error=repr(exc))
            return 1
        except Exception as exc:
            log.error("process-failed", error=repr(exc))
            return 1
        return 1

    return asyncio.run(wrapper())


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
