"""Declarative health checks, run from the host against the container's own address (reference §6.4).

Diego runs a healthcheck binary inside the container; here the executor probes
internal_ip:port itself, which needs no asset in the image and no process per check. The
semantics and messages are the healthcheck binary's:
- TCP passes if a connection opens within the timeout;
- HTTP passes only on status 200 to GET <path> within the timeout.

HealthCheckStep: the startup phase runs every check (every 10 ms for the first second, then
backing off to unhealthy_monitoring_interval; see until_all_pass) until
all have passed — failing with "Instance never healthy after <start timeout>: <error>" if
start_timeout_ms (0 = no limit) runs out first; then it reports the container healthy (RUNNING)
and the liveness phase probes each check every interval_ms (default healthy_monitoring_interval)
until one fails: "Instance became unhealthy: <error>".

ReadinessStep: never fails; it flips `routable` — true once every readiness check passes
(checked every unhealthy_monitoring_interval), false again when one fails in the readiness
phase (checked every interval_ms or healthy_monitoring_interval), and so on.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from control.models.checks import Check

from .base import SYSTEM_SOURCE, StepContext, StepFailed, go_duration

NEVER_HEALTHY = "Instance never healthy after {}: {}"
BECAME_UNHEALTHY = "Instance became unhealthy: {}"


@dataclass(frozen=True)
class Probe:
    """One check, resolved against the executor's defaults."""

    port: int
    timeout: float
    interval: float           # liveness/readiness interval
    path: str | None = None   # None = TCP

    async def __call__(self, ip: str) -> str | None:
        """None when healthy, else the healthcheck binary's error message."""
        if self.path is None:
            return await probe_tcp(ip, self.port, self.timeout)
        return await probe_http(ip, self.port, self.path, self.timeout)


def probe_for(check: Check, ctx: StepContext) -> Probe:
    default_timeout = ctx.config.default_check_timeout.total_seconds()
    default_interval = ctx.config.healthy_monitoring_interval.total_seconds()
    if check.tcp_check is not None:
        c = check.tcp_check
        return Probe(c.port, (c.connect_timeout_ms or 0) / 1000 or default_timeout,
                     (c.interval_ms or 0) / 1000 or default_interval)
    h = check.http_check
    assert h is not None
    return Probe(h.port, (h.request_timeout_ms or 0) / 1000 or default_timeout,
                 (h.interval_ms or 0) / 1000 or default_interval, h.path or "/")


async def probe_tcp(ip: str, port: int, timeout: float) -> str | None:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(ip, port)
    except TimeoutError:
        return f"Failed to make TCP connection to port {port}: timed out after {timeout:.2f} seconds"
    except OSError as exc:  # worded like Go's net.Dial error, as the healthcheck binary prints it
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        return f"Failed to make TCP connection to port {port}: dial tcp {ip}:{port}: connect: {reason}"
    writer.close()
    await _closed(writer)
    return None


async def probe_http(ip: str, port: int, path: str, timeout: float) -> str | None:
    started = time.monotonic()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(ip, port)
            writer.write((f"GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: diego-healthcheck\r\n"
                          "X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n").encode())
            await writer.drain()
            status_line = await reader.readline()
    except TimeoutError:
        return f"Failed to make HTTP request to '{path}' on port {port}: timed out after {timeout:.2f} seconds"
    except OSError:
        return f"Failed to make HTTP request to '{path}' on port {port}: connection refused"
    finally:
        if writer is not None:
            writer.close()
            await _closed(writer)
    parts = status_line.decode("latin-1").split()
    code = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
    if code == 200:
        return None
    elapsed = int((time.monotonic() - started) * 1000)
    return f"Failed to make HTTP request to '{path}' on port {port}: received status code {code} in {elapsed}ms"


async def _closed(writer: asyncio.StreamWriter) -> None:
    try:
        await writer.wait_closed()
    except OSError:
        pass


class StartupWatch:
    """The startup phase's last error, for the "never healthy" message (checks and monitor action)."""

    def __init__(self, start_timeout: float) -> None:
        self.start_timeout = start_timeout
        self.last_error = "health check never ran"

    def failure(self) -> StepFailed:
        return StepFailed(NEVER_HEALTHY.format(go_duration(self.start_timeout), self.last_error))


FIRST_RETRY = 0.01      # retry every 10 ms ...
FAST_RETRIES_FOR = 1.0  # ... for the first second, then back off (doubling) to the interval


async def until_all_pass(probes: list[Probe], ip: str, interval: float, watch: StartupWatch | None = None) -> None:
    """Probe until each probe has passed once (noting the last error in `watch`).

    Retries come every 10 ms for the first second, then back off (doubling) to `interval`: Diego waits a whole
    unhealthy_monitoring_interval (2 s) after a first failed probe, which is most of its
    start latency for an app that listens within milliseconds. Failure semantics (start
    timeout, messages) are unchanged; only early probes are more frequent.
    """
    pending = list(probes)
    delay = min(FIRST_RETRY, interval)
    fast_until = time.monotonic() + FAST_RETRIES_FOR
    while True:
        results = await asyncio.gather(*(p(ip) for p in pending))
        failed = [(p, error) for p, error in zip(pending, results) if error is not None]
        if not failed:
            return
        if watch is not None:
            watch.last_error = failed[0][1]
        pending = [p for p, _ in failed]
        await asyncio.sleep(delay)
        if time.monotonic() >= fast_until:
            delay = min(delay * 2, interval)


async def until_one_fails(probes: list[Probe], ip: str) -> str:
    """Probe each at its own interval; returns the first error."""
    async def watch(probe: Probe) -> str:
        while True:
            await asyncio.sleep(probe.interval)
            error = await probe(ip)
            if error is not None:
                return error

    tasks = [asyncio.ensure_future(watch(p)) for p in probes]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return next(iter(done)).result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class HealthCheckStep:
    leaves = 0

    def __init__(self, ctx: StepContext, checks: list[Check], start_timeout: float,
                 on_healthy: Callable[[], None], liveness_only: bool = False) -> None:
        self.ctx = ctx
        self.probes = [probe_for(c, ctx) for c in checks]
        self.start_timeout = start_timeout
        self.on_healthy = on_healthy
        self.liveness_only = liveness_only  # re-adopted after a restart: it was healthy already

    async def perform(self) -> None:
        ctx, ip = self.ctx, self.ctx.internal_ip
        if not self.liveness_only:
            ctx.log.system("Starting health monitoring of container", source=SYSTEM_SOURCE)
            watch = StartupWatch(self.start_timeout)
            try:
                async with asyncio.timeout(self.start_timeout or None):
                    await until_all_pass(self.probes, ip, ctx.config.unhealthy_monitoring_interval.total_seconds(),
                                         watch)
            except TimeoutError:
                failure = watch.failure()
                ctx.log.system(watch.last_error, source=ctx.health_source, stream="stderr")
                ctx.log.system(f"Timed out after {go_duration(self.start_timeout)}: health check never passed.",
                               source=SYSTEM_SOURCE, stream="stderr")
                raise failure from None
            ctx.log.system("Container became healthy", source=SYSTEM_SOURCE)
        self.on_healthy()
        error = await until_one_fails(self.probes, ip)
        ctx.log.system(error, source=ctx.health_source, stream="stderr")
        ctx.log.system("Container became unhealthy", source=SYSTEM_SOURCE)
        raise StepFailed(BECAME_UNHEALTHY.format(error))

class ReadinessStep:
    leaves = 0

    def __init__(self, ctx: StepContext, checks: list[Check], on_change: Callable[[bool], None]) -> None:
        self.ctx = ctx
        self.probes = [probe_for(c, ctx) for c in checks]
        self.on_change = on_change

    async def perform(self) -> None:
        ip = self.ctx.internal_ip
        interval = self.ctx.config.unhealthy_monitoring_interval.total_seconds()
        while True:
            await until_all_pass(self.probes, ip, interval)
            self.on_change(True)
            error = await until_one_fails(self.probes, ip)
            self.ctx.log.system(f"Instance became not ready: {error}", source=self.ctx.health_source, stream="stderr")
            self.on_change(False)
