"""Serial, parallel and codependent steps (reference §1.6; Diego's depot/steps/*_step.go).

- Serial: one after the other; stops at the first failure.
- Parallel: all at once; waits for all; fails with the first failure (in action order).
- Codependent: all at once; the first to end ends the group. A failure cancels the others and is
  returned; a success cancels them and fails with "codependent step exited" when error_on_exit
  (the action language's CodependentAction), or is just waited out when not (the executor's own
  action + monitor group, where an action exiting 0 is a daemon that went to the background).
Cancelling a composite cancels its children and waits until they have all finished.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .base import Step, StepFailed, settle

CODEPENDENT_EXITED = "codependent step exited"


class SerialStep:
    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)
        self.leaves = sum(s.leaves for s in self.steps)

    async def perform(self) -> None:
        for step in self.steps:
            await step.perform()


class ParallelStep:
    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)
        self.leaves = sum(s.leaves for s in self.steps)

    async def perform(self) -> None:
        tasks = [asyncio.ensure_future(s.perform()) for s in self.steps]
        try:
            await asyncio.wait(tasks)
        finally:
            for task in tasks:
                task.cancel()
            await settle(tasks)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


class CodependentStep:
    def __init__(self, steps: Sequence[Step], error_on_exit: bool = True) -> None:
        self.steps = list(steps)
        self.error_on_exit = error_on_exit
        self.leaves = sum(s.leaves for s in self.steps)

    async def perform(self) -> None:
        tasks = [asyncio.ensure_future(s.perform()) for s in self.steps]
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=tasks.index):
                    if task.cancelled():
                        continue
                    error = task.exception()
                    if error is not None:
                        raise error
                    if self.error_on_exit:
                        raise StepFailed(CODEPENDENT_EXITED)
        finally:
            for task in tasks:
                task.cancel()
            await settle(tasks)
