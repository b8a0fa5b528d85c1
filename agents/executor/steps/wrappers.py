"""Steps that wrap one other step: timeout, try, emit_progress (reference §1.6).

- Timeout: cancels the wrapped step after timeout_ms and fails with "timed out after <d>".
- Try: swallows the wrapped step's failure (logged), never its cancellation.
- EmitProgress: writes start_message before, success_message after a success, and
  "<failure_message_prefix>: <error>" after a failure (which it passes on unchanged).
"""
from __future__ import annotations

import asyncio

import structlog

from ..logs import ContainerLog
from .base import Step, StepFailed, go_duration

log = structlog.get_logger("executor")


class TimeoutStep:
    def __init__(self, step: Step, seconds: float) -> None:
        self.step = step
        self.seconds = seconds
        self.leaves = step.leaves

    async def perform(self) -> None:
        try:
            async with asyncio.timeout(self.seconds):
                await self.step.perform()
        except TimeoutError:
            raise StepFailed(f"timed out after {go_duration(self.seconds)}") from None


class TryStep:
    def __init__(self, step: Step) -> None:
        self.step = step
        self.leaves = step.leaves

    async def perform(self) -> None:
        try:
            await self.step.perform()
        except StepFailed as exc:
            log.info("try-step-failed", error=exc.message)


class EmitProgressStep:
    def __init__(self, step: Step, container_log: ContainerLog, source: str, start: str = "", success: str = "",
                 failure_prefix: str = "") -> None:
        self.step = step
        self.log = container_log
        self.source = source
        self.start = start
        self.success = success
        self.failure_prefix = failure_prefix
        self.leaves = step.leaves

    async def perform(self) -> None:
        if self.start:
            self.log.system(self.start, source=self.source)
        try:
            await self.step.perform()
        except StepFailed as exc:
            if self.failure_prefix:
                self.log.system(f"{self.failure_prefix}: {exc.message}", source=self.source, stream="stderr")
            raise
        if self.success:
            self.log.system(self.success, source=self.source)
