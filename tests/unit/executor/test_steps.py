"""Semantics of the composite and wrapper steps (reference §1.6), with scripted leaf steps."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agents.executor.logs import ContainerLog
from agents.executor.steps.base import StepFailed, go_duration
from agents.executor.steps.composite import CODEPENDENT_EXITED, CodependentStep, ParallelStep, SerialStep
from agents.executor.steps.wrappers import EmitProgressStep, TimeoutStep, TryStep
from control.kit.clock import FakeClock


class Scripted:
    leaves = 1

    def __init__(self, log: list[str], name: str, delay: float = 0.0, fail: str | None = None) -> None:
        self.log, self.name, self.delay, self.fail = log, name, delay, fail

    async def perform(self) -> None:
        self.log.append(f"start {self.name}")
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.log.append(f"cancelled {self.name}")
            raise
        if self.fail:
            self.log.append(f"fail {self.name}")
            raise StepFailed(self.fail)
        self.log.append(f"end {self.name}")


async def test_serial_runs_in_order_and_stops_at_the_first_failure() -> None:
    log: list[str] = []
    step = SerialStep([Scripted(log, "a"), Scripted(log, "b", fail="b broke"), Scripted(log, "c")])
    assert step.leaves == 3
    with pytest.raises(StepFailed, match="b broke"):
        await step.perform()
    assert log == ["start a", "end a", "start b", "fail b"]


async def test_parallel_runs_everything_and_returns_the_first_failure_in_order() -> None:
    log: list[str] = []
    step = ParallelStep([Scripted(log, "a", 0.05, fail="a broke"), Scripted(log, "b", fail="b broke"),
                         Scripted(log, "c", 0.02)])
    with pytest.raises(StepFailed, match="a broke"):
        await step.perform()
    assert {"end c", "fail a", "fail b"} <= set(log) and not any(e.startswith("cancelled") for e in log)


async def test_codependent_cancels_the_others_when_one_fails() -> None:
    log: list[str] = []
    step = CodependentStep([Scripted(log, "app", 10), Scripted(log, "check", 0.01, fail="unhealthy")])
    with pytest.raises(StepFailed, match="unhealthy"):
        await step.perform()
    assert log[-1] == "cancelled app"


async def test_codependent_fails_on_a_successful_exit_when_error_on_exit() -> None:
    log: list[str] = []
    with pytest.raises(StepFailed, match=CODEPENDENT_EXITED):
        await CodependentStep([Scripted(log, "a", 10), Scripted(log, "b")]).perform()
    assert "cancelled a" in log


async def test_codependent_without_error_on_exit_treats_an_exit_as_a_daemon() -> None:
    log: list[str] = []
    step = CodependentStep([Scripted(log, "daemon"), Scripted(log, "monitor", 0.05)], error_on_exit=False)
    await step.perform()
    assert log.index("end daemon") < log.index("end monitor")


async def test_cancelling_a_composite_waits_for_its_children_to_finish() -> None:
    log: list[str] = []

    class Slow(Scripted):
        async def perform(self) -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await asyncio.sleep(0.05)  # terminating its process
                self.log.append(f"terminated {self.name}")
                raise

    task = asyncio.create_task(CodependentStep([Slow(log, "a"), Slow(log, "b")]).perform())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(log) == ["terminated a", "terminated b"]


async def test_timeout_cancels_and_fails_with_the_duration() -> None:
    log: list[str] = []
    with pytest.raises(StepFailed, match=r"^timed out after 50ms$"):
        await TimeoutStep(Scripted(log, "slow", 10), 0.05).perform()
    assert log == ["start slow", "cancelled slow"]
    await TimeoutStep(Scripted(log, "quick"), 1).perform()


async def test_try_swallows_failures_but_not_cancellation() -> None:
    log: list[str] = []
    await TryStep(Scripted(log, "a", fail="nope")).perform()
    task = asyncio.create_task(TryStep(Scripted(log, "b", 10)).perform())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_emit_progress_logs_around_the_step(tmp_path: Path) -> None:
    container_log = ContainerLog(tmp_path, 100_000, FakeClock())
    container_log.open()
    steps: list[str] = []
    await EmitProgressStep(Scripted(steps, "ok"), container_log, "STG", "starting", "done", "failed").perform()
    with pytest.raises(StepFailed, match="^boom$"):
        await EmitProgressStep(Scripted(steps, "bad", fail="boom"), container_log, "STG", "again", "", "failed").perform()
    assert [(l.source, l.stream, l.line) for l in container_log.tail(10)] == [
        ("STG", "stdout", "starting"), ("STG", "stdout", "done"), ("STG", "stdout", "again"),
        ("STG", "stderr", "failed: boom")]


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (2, "2s"), (60, "1m0s"), (90, "1m30s"), (0.5, "500ms"), (1.5, "1.5s"), (3600, "1h0m0s"),
    (0.0015, "1.5ms"), (61.25, "1m1.25s"),
])
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_exit_messages() -> None:
    from agents.executor.steps.run import exit_message, instance_env
    from agents.garden.models import ExitStatus

    assert exit_message(ExitStatus(code=3)) == "Exit status 3"
    assert exit_message(ExitStatus(code=137, signal=9, oom_killed=True, reason="out of memory")) == \
        "Exit status 137 (out of memory)"
    assert exit_message(ExitStatus(code=255, lost=True, reason="exit status lost")) == \
        "Exit status 255 (exit status lost)"
    assert instance_env("10.0.0.5", "10.254.0.2", []) == ("CF_INSTANCE_IP=10.0.0.5", "CF_INSTANCE_INTERNAL_IP=10.254.0.2")
    assert instance_env("h", "c", [(8080, 61001), (9090, 61002)])[2:] == (
        "CF_INSTANCE_PORT=61001", "CF_INSTANCE_ADDR=h:61001",
        'CF_INSTANCE_PORTS=[{"external":61001,"internal":8080},{"external":61002,"internal":9090}]')
