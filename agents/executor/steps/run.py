"""RunAction: a process in the container (reference §1.6; Diego's depot/steps/run_step.go).

The process's stdout and stderr go to host files registered with the container log (unless
`suppress_log_output`), or to a bounded in-memory capture for health-check processes whose
output becomes the failure message. A non-zero exit fails the step with "Exit status N", plus
" (out of memory)" when the memory cgroup killed it. Cancellation sends SIGTERM, then SIGKILL
after graceful_shutdown_interval, and waits for the exit — unless the executor is detaching,
in which case the process is left running for the next executor to re-attach.

Limit: resource_limits.nofile is not applied (the backend's ProcessSpec has no rlimits yet).
"""
from __future__ import annotations

import asyncio
import json
import signal
import uuid

import structlog

from agents.garden.errors import GardenError
from agents.garden.models import ExitStatus, ProcessIO, ProcessSpec
from control.models.actions import RunAction

from .base import ProcessRef, Role, StepContext, StepFailed, finish_shielded

log = structlog.get_logger("executor")

CAPTURE_LIMIT = 4096


def exit_message(status: ExitStatus) -> str:
    """Diego's "Exit status N", plus " (out of memory)" for an OOM kill; a status the backend could not
    learn (its keeper died with the process) says so rather than passing for a real 255."""
    message = f"Exit status {status.code}"
    if status.oom_killed:
        return message + " (out of memory)"
    if status.lost:
        return message + f" ({status.reason or 'exit status lost'})"
    return message


def instance_env(external_ip: str, internal_ip: str, ports: list[tuple[int, int]]) -> tuple[str, ...]:
    """CF_INSTANCE_* variables (reference §1.7); ports are (container, host) pairs, first one is "the" port."""
    env = [f"CF_INSTANCE_IP={external_ip}", f"CF_INSTANCE_INTERNAL_IP={internal_ip}"]
    if ports:
        container_port, host_port = ports[0]
        env += [f"CF_INSTANCE_PORT={host_port}", f"CF_INSTANCE_ADDR={external_ip}:{host_port}",
                "CF_INSTANCE_PORTS=" + json.dumps([{"external": h, "internal": c} for c, h in ports],
                                                  separators=(",", ":"))]
    return tuple(env)


class Capture:
    """Keeps the last CAPTURE_LIMIT bytes a process wrote (health checks and monitor runs)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.data.extend(chunk)
        del self.data[:-CAPTURE_LIMIT]

    def io(self) -> ProcessIO:
        return ProcessIO(stdout=self.feed, stderr=self.feed)

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace").strip()


class RunStep:
    leaves = 1

    def __init__(self, ctx: StepContext, action: RunAction, source: str, role: Role,
                 capture: Capture | None = None, log_exit: bool = True) -> None:
        self.ctx = ctx
        self.action = action
        self.source = source
        self.role = role
        self.capture = capture
        self.log_exit = log_exit

    async def perform(self) -> None:
        ctx, action = self.ctx, self.action
        ctx.tracker.leaf_started(self.role)
        stdout = stderr = None
        if self.capture is None and not action.suppress_log_output:
            stdout, stderr = ctx.log.new_output(self.source)
        spec = ProcessSpec(
            path=action.path, args=tuple(action.args), dir=action.dir or ctx.default_dir, user=action.user,
            env=(*ctx.env, *(f"{e.name}={e.value}" for e in action.env)),
            process_id=f"{self.role}-{uuid.uuid4().hex[:12]}", stdout_path=stdout, stderr_path=stderr)
        try:
            process = await ctx.backend.run(ctx.handle, spec, self.capture.io() if self.capture else None)
        except GardenError as exc:
            if stdout and stderr:
                ctx.log.finish_output(stdout, stderr)
            raise StepFailed(f"failed to start {action.path}: {exc.message}") from exc
        ref = ProcessRef(process_id=process.id, source=self.source, stdout_path=stdout, stderr_path=stderr)
        await supervise(ctx, process, ref, self.role, self.log_exit)


async def supervise(ctx: StepContext, process: object, ref: ProcessRef, role: Role, log_exit: bool) -> None:
    """Wait for a started (or re-attached) process; terminate it if cancelled; judge its exit."""
    ctx.tracker.process_started(role, ref)
    try:
        status: ExitStatus = await process.wait()  # type: ignore[attr-defined]
    except asyncio.CancelledError:
        if not ctx.detaching:
            await finish_shielded(terminate(ctx, process, ref))
            _finished(ctx, role, ref)
        raise
    except GardenError as exc:  # the backend lost track of the process (its keeper died)
        _finished(ctx, role, ref)
        raise StepFailed(f"lost process {ref.process_id}: {exc.message}") from exc
    _finished(ctx, role, ref)
    message = exit_message(status)
    if log_exit:
        ctx.log.system(message, source=ref.source)
    if status.code != 0:
        raise StepFailed(message)


def _finished(ctx: StepContext, role: Role, ref: ProcessRef) -> None:
    ctx.tracker.process_exited(role, ref)
    if ref.stdout_path and ref.stderr_path:
        ctx.log.finish_output(ref.stdout_path, ref.stderr_path)


async def terminate(ctx: StepContext, process: object, ref: ProcessRef) -> None:
    """SIGTERM, then SIGKILL after the graceful interval; returns once the process has exited."""
    grace = ctx.config.graceful_shutdown_interval.total_seconds()
    process.signal(signal.SIGTERM)  # type: ignore[attr-defined]
    try:
        await asyncio.wait_for(process.wait(), grace)  # type: ignore[attr-defined]
        return
    except asyncio.TimeoutError:
        log.info("graceful-shutdown-timed-out", handle=ctx.handle, process_id=ref.process_id)
    except GardenError:
        return
    process.signal(signal.SIGKILL)  # type: ignore[attr-defined]
    try:
        await asyncio.wait_for(process.wait(), 10)  # type: ignore[attr-defined]
    except (asyncio.TimeoutError, GardenError) as exc:
        log.error("process-did-not-exit-after-sigkill", handle=ctx.handle, process_id=ref.process_id,
                  error=str(exc) or type(exc).__name__)


class AttachedRunStep:
    """A process of the action started by a previous executor, re-attached after a restart."""

    leaves = 1

    def __init__(self, ctx: StepContext, ref: ProcessRef) -> None:
        self.ctx = ctx
        self.ref = ref

    async def perform(self) -> None:
        try:
            process = await self.ctx.backend.attach(self.ctx.handle, self.ref.process_id)
        except GardenError as exc:
            raise StepFailed(f"cannot re-attach to process {self.ref.process_id}: {exc.message}") from exc
        await supervise(self.ctx, process, self.ref, Role.ACTION, log_exit=True)
