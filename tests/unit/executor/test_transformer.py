"""RunRequest → step tree (reference §1.6): the shape, and which step reports RUNNING."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.executor.config import ExecutorConfig
from agents.executor.logs import ContainerLog
from agents.executor.models import Lifecycle
from agents.executor.steps.base import ProcessRef, Role, StepContext
from agents.executor.steps.composite import CodependentStep, ParallelStep, SerialStep
from agents.executor.steps.health import HealthCheckStep
from agents.executor.steps.monitor import MonitorStep
from agents.executor.steps.run import AttachedRunStep, RunStep
from agents.executor.steps.transfer import DownloadStep, UploadStep
from agents.executor.steps.wrappers import EmitProgressStep, TimeoutStep, TryStep
from agents.executor.transformer import NotifyStep, build, build_recovered, step_for
from control.kit.clock import FakeClock

from .helpers import request, run

TCP = {"checks": [{"tcp_check": {"port": 8080}}]}


def ctx(tmp_path: Path) -> StepContext:
    return StepContext(backend=None, handle="h", config=ExecutorConfig(state_dir=str(tmp_path)),
                       log=ContainerLog(tmp_path, 10_000, FakeClock()))


def shape(step: Any) -> Any:
    """A nested tuple naming each step class, e.g. ("Serial", "Run", ("Codependent", ...))."""
    name = type(step).__name__.removesuffix("Step")
    if hasattr(step, "steps"):
        return (name, *(shape(c) for c in step.steps))
    if hasattr(step, "step"):
        return (name, shape(step.step))
    return name


def noop(*_: Any) -> None:
    return None


def test_lrp_with_setup_checks_and_readiness(tmp_path: Path) -> None:
    req = request(setup=run("exit", "0"), check_definition={**TCP, "readiness_checks": TCP["checks"]})
    plan = build(req, Lifecycle.LRP, ctx(tmp_path), noop, noop)
    assert shape(plan.root) == ("Serial", "Run", ("Codependent", "Run", "HealthCheck", "Readiness"))
    assert plan.action_leaves == 1
    codependent = plan.root.steps[1]  # type: ignore[attr-defined]
    assert isinstance(codependent, CodependentStep) and not codependent.error_on_exit


def test_lrp_without_checks_is_the_action_reporting_running_when_it_starts(tmp_path: Path) -> None:
    plan = build(request(), Lifecycle.LRP, ctx(tmp_path), noop, noop)
    assert shape(plan.root) == ("Notify", "Run")
    assert isinstance(plan.root, NotifyStep) and isinstance(plan.root.step, RunStep)


def test_monitor_action_when_no_checks(tmp_path: Path) -> None:
    plan = build(request(monitor=run("exit", "0")), Lifecycle.LRP, ctx(tmp_path), noop, noop)
    assert shape(plan.root) == ("Codependent", "Run", "Monitor")
    assert isinstance(plan.root.steps[1], MonitorStep)  # type: ignore[attr-defined]


def test_checks_win_over_the_monitor(tmp_path: Path) -> None:
    plan = build(request(monitor=run("exit", "0"), check_definition=TCP), Lifecycle.LRP, ctx(tmp_path), noop, noop)
    assert isinstance(plan.root.steps[1], HealthCheckStep)  # type: ignore[attr-defined]


def test_task_ignores_checks(tmp_path: Path) -> None:
    plan = build(request(setup=run("exit", "0"), check_definition=TCP, monitor=run("exit", "0")),
                 Lifecycle.TASK, ctx(tmp_path), noop, noop)
    assert shape(plan.root) == ("Serial", "Run", ("Notify", "Run"))


def test_every_action_kind(tmp_path: Path) -> None:
    download = {"download": {"from": "http://x/a.tgz", "to": "/app", "user": "root"}}
    upload = {"upload": {"from": "/app/out", "to": "http://x/up", "user": "root"}}
    action = {"serial": {"actions": [
        download,
        {"parallel": {"actions": [run("a"), upload]}},
        {"codependent": {"actions": [run("b"), run("c")]}},
        {"timeout": {"action": run("d"), "timeout_ms": 1500}},
        {"try": {"action": run("e")}},
        {"emit_progress": {"action": run("f"), "start_message": "go"}},
    ]}}
    step = step_for(ctx(tmp_path), request(action).action, Role.ACTION, "APP")
    assert isinstance(step, SerialStep) and step.leaves == 8
    kinds = [type(s) for s in step.steps]
    assert kinds == [DownloadStep, ParallelStep, CodependentStep, TimeoutStep, TryStep, EmitProgressStep]
    assert isinstance(step.steps[1].steps[1], UploadStep)  # type: ignore[attr-defined]
    assert step.steps[3].seconds == 1.5  # type: ignore[attr-defined]


def test_log_source_is_inherited_and_overridden(tmp_path: Path) -> None:
    action = {"serial": {"log_source": "STG", "actions": [run("a"), run("b", log_source="OWN")]}}
    step = step_for(ctx(tmp_path), request(action).action, Role.ACTION, "APP")
    assert [s.source for s in step.steps] == ["STG", "OWN"]  # type: ignore[attr-defined]


def test_recovered_tree_reattaches_and_resumes_liveness(tmp_path: Path) -> None:
    refs = [ProcessRef(process_id="action-1", source="APP")]
    plan = build_recovered(request(check_definition=TCP), Lifecycle.LRP, ctx(tmp_path), refs, True, noop, noop)
    assert isinstance(plan.root, CodependentStep)
    attached, health = plan.root.steps
    assert isinstance(attached, AttachedRunStep) and isinstance(health, HealthCheckStep) and health.liveness_only
    plan = build_recovered(request(check_definition=TCP), Lifecycle.LRP, ctx(tmp_path), refs, False, noop, noop)
    assert not plan.root.steps[1].liveness_only  # type: ignore[attr-defined]
