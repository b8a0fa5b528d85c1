"""The legacy monitor action (reference §6.4; Diego's depot/steps/monitor_step.go).

The monitor action is run again and again: every unhealthy_monitoring_interval until it first
succeeds (failing with "Instance never healthy after <start timeout>: <error>" once
start_timeout_ms runs out; 0 = no limit), then every healthy_monitoring_interval until it fails
("Instance became unhealthy: <error>"). The error is the check's own output when it wrote any
(the healthcheck binary prints its reason), else its exit status.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from .base import SYSTEM_SOURCE, Step, StepContext, StepFailed
from .health import BECAME_UNHEALTHY, StartupWatch
from .run import Capture

MonitorFactory = Callable[[Capture], Step]


class MonitorStep:
    leaves = 0

    def __init__(self, ctx: StepContext, make_check: MonitorFactory, start_timeout: float,
                 on_healthy: Callable[[], None], liveness_only: bool = False) -> None:
        self.ctx = ctx
        self.make_check = make_check
        self.start_timeout = start_timeout
        self.on_healthy = on_healthy
        self.liveness_only = liveness_only

    async def perform(self) -> None:
        config, log = self.ctx.config, self.ctx.log
        if not self.liveness_only:
            log.system("Starting health monitoring of container", source=SYSTEM_SOURCE)
            watch = StartupWatch(self.start_timeout)
            try:
                async with asyncio.timeout(self.start_timeout or None):
                    while (error := await self._check()) is not None:
                        watch.last_error = error
                        await asyncio.sleep(config.unhealthy_monitoring_interval.total_seconds())
            except TimeoutError:
                raise watch.failure() from None
            log.system("Container became healthy", source=SYSTEM_SOURCE)
        self.on_healthy()
        while True:
            await asyncio.sleep(config.healthy_monitoring_interval.total_seconds())
            error = await self._check()
            if error is not None:
                log.system(error, source=self.ctx.health_source, stream="stderr")
                log.system("Container became unhealthy", source=SYSTEM_SOURCE)
                raise StepFailed(BECAME_UNHEALTHY.format(error))

    async def _check(self) -> str | None:
        capture = Capture()
        try:
            await self.make_check(capture).perform()
        except StepFailed as exc:
            return capture.text or exc.message
        return None
