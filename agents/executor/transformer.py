"""RunRequest → step tree, as Diego's depot/transformer/transformer.go composes it (reference §1.6).

    LRP:   Serial(setup, Codependent(action, health check | monitor, readiness; error_on_exit=False))
    task:  Serial(setup, action)

The outer codependent does not fail when the action exits 0 (a daemon went to the background)
so monitoring goes on; any failure cancels the rest and fails the tree. With neither checks nor
a monitor the container is RUNNING as soon as the action starts; otherwise when the startup
checks pass. Pure construction: nothing runs until `perform()`.

A re-adopted container (recovery.py) gets a reduced tree: its recorded action processes,
re-attached, in place of the action, and the checks in the phase it had reached.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from control.models.actions import (CodependentAction, DownloadAction, EmitProgressAction, ParallelAction, RunAction,
                                    SerialAction, TimeoutAction, TryAction, UploadAction, unwrap)

from .models import Lifecycle, RunRequest
from .steps.base import ProcessRef, Role, Step, StepContext
from .steps.composite import CodependentStep, ParallelStep, SerialStep
from .steps.health import HealthCheckStep, ReadinessStep
from .steps.monitor import MonitorStep
from .steps.run import AttachedRunStep, Capture, RunStep
from .steps.transfer import DownloadStep, UploadStep
from .steps.wrappers import EmitProgressStep, TimeoutStep, TryStep


class NotifyStep:
    """Calls `callback` when the wrapped step starts (RUNNING without checks)."""

    def __init__(self, step: Step, callback: Callable[[], None]) -> None:
        self.step = step
        self.callback = callback
        self.leaves = step.leaves

    async def perform(self) -> None:
        self.callback()
        await self.step.perform()


class EmptyStep:
    leaves = 0

    async def perform(self) -> None:
        return None


@dataclass(frozen=True)
class Plan:
    root: Step
    action_leaves: int


def step_for(ctx: StepContext, action: object, role: Role, source: str, capture: Capture | None = None) -> Step:
    """One action (an envelope like {"run": {...}}) as a step; `source` is the inherited log source."""
    name, inner = unwrap(action)  # type: ignore[arg-type]
    source = getattr(inner, "log_source", "") or source
    if isinstance(inner, RunAction):
        return RunStep(ctx, inner, source, role, capture=capture, log_exit=capture is None)
    if isinstance(inner, DownloadAction):
        return DownloadStep(ctx, inner, source, role)
    if isinstance(inner, UploadAction):
        return UploadStep(ctx, inner, source, role)
    if isinstance(inner, SerialAction):
        return SerialStep([step_for(ctx, a, role, source, capture) for a in inner.actions])
    if isinstance(inner, ParallelAction):
        return ParallelStep([step_for(ctx, a, role, source, capture) for a in inner.actions])
    if isinstance(inner, CodependentAction):
        return CodependentStep([step_for(ctx, a, role, source, capture) for a in inner.actions], error_on_exit=True)
    if isinstance(inner, TimeoutAction):
        return TimeoutStep(step_for(ctx, inner.action, role, source, capture), inner.timeout_ms / 1000)
    if isinstance(inner, TryAction):
        return TryStep(step_for(ctx, inner.action, role, source, capture))
    if isinstance(inner, EmitProgressAction):
        return EmitProgressStep(step_for(ctx, inner.action, role, source, capture), ctx.log, source,
                                inner.start_message, inner.success_message, inner.failure_message_prefix)
    raise ValueError(f"unknown action {name}")


def build(request: RunRequest, lifecycle: Lifecycle, ctx: StepContext, on_running: Callable[[], None],
          on_routable: Callable[[bool], None]) -> Plan:
    if request.action is None:
        raise ValueError("container cannot have an empty action")
    source = ctx.default_source
    action = step_for(ctx, request.action, Role.ACTION, source)
    setup = step_for(ctx, request.setup, Role.SETUP, source) if request.setup is not None else None
    if lifecycle == Lifecycle.TASK:
        long_lived: Step = NotifyStep(action, on_running)
    else:
        long_lived = _monitored(request, ctx, action, on_running, on_routable, liveness_only=False)
    root = SerialStep([setup, long_lived]) if setup is not None else long_lived
    return Plan(root, action.leaves)


def build_recovered(request: RunRequest, lifecycle: Lifecycle, ctx: StepContext, processes: Sequence[ProcessRef],
                    was_running: bool, on_running: Callable[[], None], on_routable: Callable[[bool], None]) -> Plan:
    """The tree of a re-adopted container: its running action processes plus monitoring."""
    attached: list[Step] = [AttachedRunStep(ctx, ref) for ref in processes]
    action: Step = (attached[0] if len(attached) == 1 else
                    CodependentStep(attached, error_on_exit=False) if attached else EmptyStep())
    if lifecycle == Lifecycle.TASK:
        return Plan(NotifyStep(action, on_running), action.leaves)
    return Plan(_monitored(request, ctx, action, on_running, on_routable, liveness_only=was_running), action.leaves)


def _monitored(request: RunRequest, ctx: StepContext, action: Step, on_running: Callable[[], None],
               on_routable: Callable[[bool], None], liveness_only: bool) -> Step:
    start_timeout = request.start_timeout_ms / 1000
    checks = request.check_definition.checks if request.check_definition else []
    readiness_checks = request.check_definition.readiness_checks if request.check_definition else []
    if request.check_definition and request.check_definition.log_source:
        ctx.health_source = request.check_definition.log_source
    monitor: Step | None = None
    if checks:
        monitor = HealthCheckStep(ctx, list(checks), start_timeout, on_running, liveness_only=liveness_only)
    elif request.monitor is not None:
        monitor_action = request.monitor

        def make_check(capture: Capture) -> Step:
            return step_for(ctx, monitor_action, Role.MONITOR, ctx.health_source, capture)
        monitor = MonitorStep(ctx, make_check, start_timeout, on_running, liveness_only=liveness_only)
    substeps: list[Step] = [action if monitor is not None else NotifyStep(action, on_running)]
    if monitor is not None:
        substeps.append(monitor)
    if readiness_checks:
        substeps.append(ReadinessStep(ctx, list(readiness_checks), on_routable))
    return substeps[0] if len(substeps) == 1 else CodependentStep(substeps, error_on_exit=False)
