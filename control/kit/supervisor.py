"""The ordered process supervisor (CONVENTIONS: Concurrency).

Members start in order, each only after the previous one signalled ready; if any member ends
(returns or raises), the others are stopped and the process exits non-zero; SIGTERM/SIGINT stop
the members in reverse order (the API drains first, the lock is released after it) and the
process exits 0 once their cleanup ran.
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
    """Run the members in order until one ends or this coroutine is cancelled; then stop them
    in reverse order, each after the one started after it has finished (so the API drains its
    requests before the lock is released and the store connection closes)."""
    tasks: list[asyncio.Task[None]] = []
    try:
        for name, member in members:
            ready = asyncio.Event()
            task = asyncio.create_task(_guard(name, member, ready), name=name)
            tasks.append(task)
            waiter = asyncio.create_task(ready.wait(), name=f"{name}-ready")
            try:
                await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if task.done():
                task.result()  # raises the member's failure
            log.info("member-ready", member=name)
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in reversed(tasks):
            if not task.done():
                task.cancel()
                await asyncio.wait([task])
        for task in tasks:  # retrieve every outcome so none is reported as never retrieved
            if task.done() and not task.cancelled():
                task.exception()


def run_process(main: Callable[[], Awaitable[int | None]],
                on_term: Callable[[], Awaitable[None]] | None = None) -> int:
    """Run `main` with signal handling; 0 after SIGTERM/SIGINT, 1 if it ended by itself
    (unless it returned an int, which becomes the exit code).

    With `on_term`, SIGTERM first awaits it (a rep evacuates) and then stops `main`; a second
    SIGTERM, or SIGINT, stops at once.
    """
    async def wrapper() -> int:
        task = asyncio.current_task()
        assert task is not None
        stopping = False
        draining: list[asyncio.Task[None]] = []

        def stop() -> None:
            nonlocal stopping
            stopping = True
            task.cancel()

        def term() -> None:
            if on_term is None or draining:
                stop()
                return
            log.info("draining-on-sigterm")

            async def drain() -> None:
                try:
                    await on_term()
                except Exception as exc:
                    log.error("drain-failed", error=repr(exc))
                stop()
            draining.append(asyncio.create_task(drain()))

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, term)
        loop.add_signal_handler(signal.SIGINT, stop)
        try:
            result = await main()
        except asyncio.CancelledError:
            if stopping:
                log.info("stopped-by-signal")
                return 0
            raise
        except MemberExited as exc:
            log.error("member-exited", member=exc.name)
            return 1
        except Exception as exc:
            log.error("process-failed", error=repr(exc))
            return 1
        finally:
            for d in draining:
                d.cancel()
        return result if isinstance(result, int) else 1

    return asyncio.run(wrapper())
