"""One container from reservation to deletion (Diego's depot/containerstore/storenode.go).

A ContainerNode owns the executor's view of a container (the `Container` model, replaced on
every change and saved as a record), its log, and the background task that makes the backend
container and runs its step tree. Changes follow lifecycle.TRANSITIONS; RUNNING, COMPLETED and
ROUTABLE_CHANGED are published as events.

Cancellation of the node's task means one of two things: stop() (the tree is cancelled, run
steps SIGTERM then SIGKILL their processes, the container ends COMPLETED with stopped=True), or
detach() when the executor shuts down (processes keep running, the record stays as it is, the
next executor re-adopts the container).
"""
from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

import structlog

from agents.garden.errors import ContainerNotFound as BackendContainerNotFound
from agents.garden.errors import GardenError
from agents.garden.models import ContainerInfo, ContainerSpec, EgressRule
from control.kit.clock import Clock
from control.models.desired_lrp import SecurityGroupRule

from . import lifecycle, transformer
from .backend import ExecutorBackend
from .config import ExecutorConfig
from .images import ImageResolver
from .logs import ContainerLog
from .models import (MAX_FAILURE_REASON, MAX_RESULT_BYTES, Container, ContainerState, EventKind, Lifecycle,
                     PortMapping, RunRequest, RunResult)
from .records import ContainerRecord, RecordStore
from .steps.base import ProcessRef, Role, StepContext, StepFailed, settle
from .steps.run import instance_env
from .transfers import Transfers

log = structlog.get_logger("executor")

S = ContainerState


class Deps(Protocol):
    """What a node needs from its executor."""

    config: ExecutorConfig
    backend: ExecutorBackend
    images: ImageResolver
    clock: Clock
    records: RecordStore
    transfers: Transfers

    def publish(self, kind: EventKind, container: Container) -> None: ...


def lifecycle_of(container: Container) -> Lifecycle:
    return Lifecycle.TASK if container.tags.get("lifecycle") == Lifecycle.TASK else Lifecycle.LRP


def egress_rules(rules: list[SecurityGroupRule]) -> tuple[EgressRule, ...]:
    """The DLRP/Task security group rules as the backend's firewall rules (log/annotations dropped)."""
    return tuple(EgressRule(
        protocol=rule.protocol, destinations=tuple(rule.destinations), ports=tuple(rule.ports or ()),
        port_range=(rule.port_range.start, rule.port_range.end) if rule.port_range is not None else None,
        icmp_type=_icmp(rule.icmp_info.type if rule.icmp_info is not None else None),
        icmp_code=_icmp(rule.icmp_info.code if rule.icmp_info is not None and rule.icmp_info.type >= 0 else None),
    ) for rule in rules)


def _icmp(value: int | None) -> int | None:
    """CF writes -1 for "any" ICMP type or code; the backend says None."""
    return None if value is None or value < 0 else value


class ContainerNode:
    def __init__(self, container: Container, deps: Deps) -> None:
        self.container = container
        self.deps = deps
        self.log = ContainerLog(deps.records.dir(container.guid) / "logs", deps.config.log_retention_bytes, deps.clock)
        self.task: asyncio.Task[None] | None = None
        self.ctx: StepContext | None = None
        self.stopping = False
        self.backend_made = False        # a backend container may exist: destroy it on delete
        self.processes: dict[str, ProcessRef] = {}
        self.action_leaves = 0
        self.leaves_started = 0
        self._ready = False              # readiness checks passing
        self._has_readiness = False
        self._working_dir = "/"
        self.detaching = False

    @property
    def guid(self) -> str:
        return self.container.guid

    @property
    def state(self) -> ContainerState:
        return self.container.state

    # -- state ----------------------------------------------------------------------------

    def transition(self, state: ContainerState, **updates: Any) -> None:
        lifecycle.check_transition(self.container.state, state)
        self.container = self.container.model_copy(update={"state": state, **updates})
        self.save()

    def save(self) -> None:
        record = ContainerRecord(container=self.container, action_processes=tuple(self.processes.values()),
                                 action_leaves=self.action_leaves, action_leaves_started=self.leaves_started,
                                 working_dir=self._working_dir)
        try:
            self.deps.records.save(record)
        except OSError as exc:
            log.error("container-record-write-failed", guid=self.guid, error=str(exc))

    def complete(self, failed: bool, reason: str = "", retryable: bool = False, result: str = "") -> None:
        if self.state == S.COMPLETED:
            return
        run_result = RunResult(failed=failed, failure_reason=reason[:MAX_FAILURE_REASON], stopped=self.stopping,
                               retryable=retryable, result=result)
        self.transition(S.COMPLETED, run_result=run_result, routable=False)
        log.info("container-completed", guid=self.guid, failed=failed, reason=reason[:200], stopped=self.stopping)
        self.deps.publish(EventKind.COMPLETED, self.container)

    def _on_running(self) -> None:
        if self.state != S.CREATED:
            return
        self.transition(S.RUNNING, routable=self._ready or not self._has_readiness)
        log.info("container-running", guid=self.guid)
        self.deps.publish(EventKind.RUNNING, self.container)

    def _on_routable(self, routable: bool) -> None:
        self._ready = routable
        if self.state == S.RUNNING and self.container.routable != routable:
            self.container = self.container.model_copy(update={"routable": routable})
            self.save()
            self.deps.publish(EventKind.ROUTABLE_CHANGED, self.container)

    # -- tracker (steps report the action's progress) --------------------------------------

    def leaf_started(self, role: Role) -> None:
        if role == Role.ACTION:
            self.leaves_started += 1
            self.save()

    def process_started(self, role: Role, ref: ProcessRef) -> None:
        if role == Role.ACTION:
            self.processes[ref.process_id] = ref
            self.save()

    def process_exited(self, role: Role, ref: ProcessRef) -> None:
        if role == Role.ACTION and self.processes.pop(ref.process_id, None) is not None:
            self.save()

    # -- running ---------------------------------------------------------------------------

    def start(self, request: RunRequest) -> None:
        self.transition(S.INITIALIZING, run_request=request)
        if request.action is None:  # nothing to run: Diego's transformer refuses it the same way
            self.complete(failed=True, reason=lifecycle.EMPTY_ACTION)
            return
        self.task = asyncio.create_task(self._guarded(self._lifecycle(request)), name=f"container-{self.guid}")

    async def _lifecycle(self, request: RunRequest) -> None:
        info = await self._create(request)
        if info is None:
            return
        ctx = self._context(request, info)
        self._has_readiness = bool(request.check_definition and request.check_definition.readiness_checks)
        plan = transformer.build(request, lifecycle_of(self.container), ctx, self._on_running, self._on_routable)
        self.action_leaves = plan.action_leaves
        self.transition(S.CREATED, internal_ip=ctx.internal_ip, external_ip=ctx.external_ip, ports=ctx.ports)
        await self._perform(plan.root, request)

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        """The node's task: whatever happens, the container ends COMPLETED (unless detaching)."""
        try:
            await work
        except asyncio.CancelledError:
            if self.detaching:
                raise
            self.complete(failed=True, reason=lifecycle.CANCELLED)
        except Exception as exc:  # a bug: the container still ends, with the reason
            log.exception("container-lifecycle-failed", guid=self.guid)
            self.complete(failed=True, reason=f"executor error: {exc}")

    async def _create(self, request: RunRequest) -> ContainerInfo | None:
        deps = self.deps
        try:
            image = await deps.images.resolve(request.rootfs, request.image_username, request.image_password)
            self._working_dir = getattr(image, "working_dir", "") or "/"
            env = (*tuple(getattr(image, "env", ()) or ()), *(f"{e.name}={e.value}" for e in request.env))
            spec = ContainerSpec(
                handle=self.guid, rootfs=str(image.path), env=env, memory_mb=self.container.memory_mb,
                disk_mb=self.container.disk_mb, max_pids=self.container.max_pids,
                cpu_weight=request.cpu_weight or 100, privileged=request.privileged,
                ports=tuple(dict.fromkeys(request.ports)), properties=dict(self.container.tags),
                egress_rules=egress_rules(request.egress_rules))
            self.backend_made = True
            info: ContainerInfo = await deps.backend.create(spec)
            return info
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = getattr(exc, "message", "") or str(exc) or type(exc).__name__
            log.warning("container-create-failed", guid=self.guid, error=reason)
            self.log.system(f"Failed to create container: {reason}", source="CELL", stream="stderr")
            self.complete(failed=True, reason=f"failed to create container: {reason}", retryable=True)
            return None

    def _context(self, request: RunRequest, info: ContainerInfo) -> StepContext:
        config = self.deps.config
        ports = [PortMapping(container_port=m.container_port, host_port=m.host_port) for m in info.ports]
        env = instance_env(config.external_ip, info.container_ip,
                           [(p.container_port, p.host_port) for p in ports]) if request.network_env else ()
        self.ctx = StepContext(
            backend=self.deps.backend, handle=self.guid, config=config, log=self.log,
            external_ip=config.external_ip, internal_ip=info.container_ip, ports=ports, env=env,
            default_dir=self._working_dir, default_source=request.log_config.source_name or "APP",
            transfers=self.deps.transfers, tracker=self)
        return self.ctx

    async def _perform(self, root: Any, request: RunRequest) -> None:
        try:
            await root.perform()
        except StepFailed as exc:
            self.complete(failed=True, reason=exc.message)
            return
        if lifecycle_of(self.container) == Lifecycle.TASK and request.result_file:
            result = await self._fetch_result(request.result_file)
            if result is None:
                self.complete(failed=True, reason=lifecycle.RESULT_FETCH_FAILED)
                return
            self.complete(failed=False, result=result)
            return
        self.complete(failed=False)

    async def _fetch_result(self, path: str) -> str | None:
        try:
            data: bytes = await self.deps.backend.stream_out(self.guid, path, MAX_RESULT_BYTES)
        except GardenError as exc:
            log.warning("failed-to-fetch-result", guid=self.guid, path=path, error=exc.message)
            return None
        if len(data) > MAX_RESULT_BYTES:
            return None
        return data.decode("utf-8", errors="replace")

    # -- re-adoption after a restart (recovery.py decides; this resumes) ------------------------

    def adopt(self, record: ContainerRecord, info: ContainerInfo) -> None:
        """Resume supervision of a container a previous executor left RUNNING or CREATED."""
        request = self.container.run_request
        assert request is not None
        self.backend_made = True
        self.processes = {ref.process_id: ref for ref in record.action_processes}
        self.action_leaves, self.leaves_started = record.action_leaves, record.action_leaves_started
        self._working_dir = record.working_dir
        ctx = self._context(request, info)
        self._has_readiness = bool(request.check_definition and request.check_definition.readiness_checks)
        self._ready = self.container.routable
        self.container = self.container.model_copy(update={
            "internal_ip": ctx.internal_ip, "external_ip": ctx.external_ip, "ports": ctx.ports})
        if self.leaves_started < self.action_leaves:
            self.complete(failed=True, reason=lifecycle.RESTARTED_WHILE_STARTING)
            return
        plan = transformer.build_recovered(
            request, lifecycle_of(self.container), ctx, list(self.processes.values()),
            was_running=self.state == S.RUNNING, on_running=self._on_running, on_routable=self._on_routable)
        self.save()
        self.task = asyncio.create_task(self._guarded(self._perform(plan.root, request)), name=f"container-{self.guid}")

    # -- stop, detach, delete --------------------------------------------------------------

    async def stop(self) -> None:
        if self.state == S.COMPLETED:
            return
        self.stopping = True
        if self.state == S.RESERVED:
            self.complete(failed=True, reason=lifecycle.STOPPED_BEFORE_RUNNING)
            return
        self.log.system(f"Stopping instance {self.guid}", source="CELL")
        if self.task is not None:
            self.task.cancel()
            await settle([self.task])
        self.complete(failed=True, reason=lifecycle.CANCELLED)

    async def detach(self) -> None:
        """Stop supervising without touching the processes (executor shutdown)."""
        if self.task is None or self.task.done():
            return
        self.detaching = True
        if self.ctx is not None:
            self.ctx.detaching = True
        self.task.cancel()
        await settle([self.task])

    async def destroy_backend(self) -> None:
        if not self.backend_made:
            return
        try:
            await self.deps.backend.destroy(self.guid)
        except BackendContainerNotFound:
            pass

    def forget(self) -> None:
        self.log.close()
        self.deps.records.remove(self.guid)
