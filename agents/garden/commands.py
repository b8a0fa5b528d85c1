"""Running external tools (runc, ip, iptables, mount, mkfs) and undoing half-done work.

`run_cmd` spawns the short-lived helpers (ip, iptables, mount, mkfs, runc kill/delete): every
call has a timeout and a failure becomes a typed `CommandFailed` with argv, exit code and stderr.
`UndoStack`
records the inverse of each step of a multi-step operation so that a failure (or cancellation)
midway unwinds exactly what was done, in reverse order.
"""
from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from .errors import CommandFailed

log = structlog.get_logger("garden")


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")


async def run_cmd(argv: Sequence[str], *, input: bytes | None = None, check: bool = True,
                  timeout: float = 30.0) -> CommandResult:
    """Run a helper command to completion; raise CommandFailed on non-zero exit (if check) or timeout."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise CommandFailed(f"cannot run {argv[0]}: {exc}", argv=list(argv)) from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), timeout)
    except asyncio.TimeoutError:
        await _reap(proc)
        raise CommandFailed(f"{argv[0]} timed out after {timeout}s", argv=list(argv)) from None
    except BaseException:
        await _reap(proc)  # cancelled: leave neither a zombie nor an open pipe behind
        raise
    assert proc.returncode is not None
    result = CommandResult(tuple(argv), proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise CommandFailed(f"{' '.join(argv)}: exit {proc.returncode}: {err.decode(errors='replace').strip()[:500]}",
                            argv=list(argv), returncode=proc.returncode)
    return result


async def _reap(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


class UndoStack:
    """Inverse steps of a multi-step operation; `unwind()` runs them newest first and never raises."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], Awaitable[object] | None]]] = []

    def push(self, name: str, step: Callable[[], Awaitable[object] | None]) -> None:
        """Record an inverse step: a plain function or one returning an awaitable."""
        self._steps.append((name, step))

    def clear(self) -> None:
        """The operation succeeded: keep what it made."""
        self._steps.clear()

    async def unwind(self, **context: object) -> list[str]:
        """Undo everything recorded; return the names of the steps that failed (after logging them)."""
        failed: list[str] = []
        while self._steps:
            name, step = self._steps.pop()
            try:
                result = step()
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # keep unwinding: one stuck step must not leak the rest
                failed.append(name)
                log.error("undo-step-failed", step=name, error=str(exc), **context)
        return failed
