"""The executor: a cell's containers from reservation to deletion, behind ExecutorAPI (api.py).

Composition: the rep builds `Executor(config, backend, images, clock)` and runs it as a
supervisor member (`run(ready)`): it first re-adopts what a previous executor left (recovery.py),
then signals ready and runs two loops until cancelled — the reservation reaper and the log
collector. Cancellation detaches: every container keeps running, its record stays, the next
executor picks it up; stopping or deleting containers is the rep's decision (evacuation too).

Allocation is synchronous arithmetic under the event loop (no await between the check and the
booking), so concurrent allocate() calls cannot over-commit the cell.
"""
from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable

import structlog

from agents.garden.errors import GardenError
from agents.garden.models import ContainerMetrics, ContainerState as BackendState
from control.kit.clock import Clock

from . import lifecycle, recovery, resources
from .api import ContainerNotFound, ExecutorError, InvalidStateTransition
from .backend import ExecutorBackend
from .config import ExecutorConfig
from .events import EventHub, Subscription
from .images import ImageResolver
from .metrics import ExecutorMetrics
from .models import (AllocationFailure, AllocationRequest, Container, ContainerEvent, ContainerState, EventKind,
                     LogLine, Resources, RunRequest)
from .node import ContainerNode
from .records import RecordStore
from .transfers import Transfers

log = structlog.get_logger("executor")

S = ContainerState


class Executor:
    """Implements ExecutorAPI over a container backend (agents/garden)."""

    def __init__(self, config: ExecutorConfig, backend: ExecutorBackend, images: ImageResolver, clock: Clock) -> None:
        self.config = config
        self.backend = backend
        self.images = images
        self.clock = clock
        self.records = RecordStore(config.state_dir)
        self.transfers = Transfers(config)
        self._total = resources.detect_total(config)
        self._nodes: dict[str, ContainerNode] = {}
        self._deleting: dict[str, asyncio.Future[None]] = {}
        self._hub = EventHub()
        self._counters: Counter[str] = Counter()

    # -- runner ----------------------------------------------------------------------------

    async def run(self, ready: asyncio.Event) -> None:
        """The supervisor runner (see serve)."""
        await self.serve(ready)

    async def serve(self, ready: asyncio.Event) -> None:
        """The runner: recover, signal ready, reap reservations and collect logs until cancelled;
        then detach from every container (they keep running)."""
        self.records.setup()
        self.transfers.setup()
        await self.recover()
        ready.set()
        log.info("executor-ready", containers=len(self._nodes), total=self._total.model_dump())
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._every(self.config.reaper_interval.total_seconds(), self.reap_expired))
                group.create_task(self._every(self.config.log_poll_interval.total_seconds(), self.collect_logs))
        finally:
            await asyncio.gather(*(node.detach() for node in list(self._nodes.values())), return_exceptions=True)
            self.collect_logs()
            self._hub.close()
            log.info("executor-detached", containers=len(self._nodes))

    @staticmethod
    async def _every(seconds: float, work: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(seconds)
            work()

    def reap_expired(self) -> list[str]:
        """Complete reservations older than reserved_expiration (the rep then deletes them)."""
        now = self.clock.now_ns() / 1e9
        limit = self.config.reserved_expiration.total_seconds()
        expired = [n for n in self._nodes.values() if n.state == S.RESERVED and now - n.container.allocated_at >= limit]
        for node in expired:
            log.info("reservation-expired", guid=node.guid)
            node.complete(failed=True, reason=lifecycle.EXPIRED)
            self._counters["expired"] += 1
        return [n.guid for n in expired]

    def collect_logs(self) -> None:
        for node in list(self._nodes.values()):
            try:
                node.log.collect()
            except OSError as exc:
                log.warning("log-collect-failed", guid=node.guid, error=str(exc))

    # -- ExecutorAPI -----------------------------------------------------------------------

    def total_resources(self) -> Resources:
        return self._total

    def remaining_resources(self) -> Resources:
        return resources.remaining(self._total, (
            Resources(memory_mb=n.container.memory_mb, disk_mb=n.container.disk_mb, containers=1)
            for n in self._nodes.values()))

    async def allocate(self, requests: list[AllocationRequest]) -> list[AllocationFailure]:
        failures: list[AllocationFailure] = []
        for request in requests:
            if request.guid in self._nodes:
                failures.append(AllocationFailure(guid=request.guid, reason=resources.CONTAINER_EXISTS))
                continue
            reason = resources.shortfall(self.remaining_resources(), request)
            if reason is not None:
                failures.append(AllocationFailure(guid=request.guid, reason=reason))
                continue
            container = Container(guid=request.guid, state=S.RESERVED, memory_mb=request.memory_mb,
                                  disk_mb=request.disk_mb, max_pids=request.max_pids, tags=dict(request.tags),
                                  allocated_at=self.clock.now_ns() / 1e9, external_ip=self.config.external_ip)
            node = ContainerNode(container, self)
            node.log.open()
            self._nodes[request.guid] = node
            node.save()
            self.publish(EventKind.RESERVED, container)
        return failures

    async def run_container(self, guid: str, request: RunRequest) -> None:
        """ExecutorAPI.run: attach the recipe to a RESERVED container and start making it (returns at once)."""
        node = self._node(guid)
        if node.state != S.RESERVED:
            raise InvalidStateTransition(f"container {guid} is {node.state}, not reserved")
        node.start(request)

    async def stop(self, guid: str) -> None:
        await self._node(guid).stop()

    async def delete(self, guid: str) -> None:
        """Stop, destroy the backend container, forget the container (REMOVED). Idempotent.

        Concurrent deletes of one guid share the same work. A failed backend destroy raises
        ExecutorError and keeps the container, so the rep can retry.
        """
        pending = self._deleting.get(guid)
        if pending is not None:
            await asyncio.shield(pending)
            return
        node = self._nodes.get(guid)
        if node is None:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._deleting[guid] = future
        try:
            await node.stop()
            try:
                await node.destroy_backend()
            except GardenError as exc:
                raise ExecutorError(f"destroying container {guid} failed: {exc.message}") from exc
            node.log.collect()
            node.forget()
            self._nodes.pop(guid, None)
            self.publish(EventKind.REMOVED, node.container)
            future.set_result(None)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else ExecutorError("delete interrupted"))
            future.exception()
            raise
        finally:
            self._deleting.pop(guid, None)

    def get(self, guid: str) -> Container:
        return self._node(guid).container

    def list(self) -> list[Container]:
        return [n.container for n in self._nodes.values()]

    def subscribe(self) -> Subscription:
        return self._hub.subscribe()

    def logs(self, guid: str, follow: bool = False, tail: int = 100) -> AsyncIterator[LogLine]:
        node = self._node(guid)  # raises ContainerNotFound now, not at the first iteration
        return self._logs(node, follow, tail)

    async def _logs(self, node: ContainerNode, follow: bool, tail: int) -> AsyncIterator[LogLine]:
        node.log.collect()
        if not follow:
            for line in node.log.tail(tail):
                yield line
            return
        async for line in node.log.follow(tail):
            yield line

    # -- additions beyond ExecutorAPI ------------------------------------------------------

    async def container_metrics(self, guid: str) -> ContainerMetrics:
        """CPU, memory and disk of a created container (for the rep's /container_metrics)."""
        node = self._node(guid)
        if not node.backend_made or node.state in (S.RESERVED, S.INITIALIZING):
            raise ContainerNotFound(f"container {guid} has no backend container yet")
        try:
            metrics: ContainerMetrics = await self.backend.metrics(guid)
        except GardenError as exc:
            raise ContainerNotFound(f"container {guid}: {exc.message}") from exc
        return metrics

    def metrics_snapshot(self) -> ExecutorMetrics:
        by_state = Counter(n.state.value for n in self._nodes.values())
        return ExecutorMetrics(
            containers={state.value: by_state.get(state.value, 0) for state in S},
            starting=sum(1 for n in self._nodes.values() if lifecycle.is_starting(n.state)),
            total=self._total, remaining=self.remaining_resources(),
            events=dict(self._counters), log_bytes=sum(n.log.retained_bytes for n in self._nodes.values()))

    def publish(self, kind: EventKind, container: Container) -> None:
        self._counters[kind.value] += 1
        if kind == EventKind.COMPLETED and container.run_result is not None:
            self._counters["completed_failed" if container.run_result.failed else "completed_succeeded"] += 1
        self._hub.publish(ContainerEvent(kind=kind, container=container))

    # -- recovery --------------------------------------------------------------------------

    async def recover(self) -> dict[str, recovery.Fate]:
        """Re-adopt, complete, keep or clean up what a previous executor left (recovery.py)."""
        records = self.records.load_all()
        handles = await self.backend.list()
        fates = recovery.plan({guid: r.container.state for guid, r in records.items()}, handles)
        for guid, fate in fates.items():
            record = records.get(guid)
            self._counters[f"recovered_{fate.value.replace('-', '_')}"] += 1
            try:
                if fate in (recovery.Fate.DESTROY, recovery.Fate.DROP):
                    self.records.remove(guid)
                    if guid in handles:
                        await self.backend.destroy(guid)
                    continue
                assert record is not None
                node = ContainerNode(record.container, self)
                node.log.open()
                node.backend_made = guid in handles
                self._nodes[guid] = node
                if fate == recovery.Fate.FAIL_RETRYABLE:
                    node.complete(failed=True, reason=lifecycle.RESTARTED_WHILE_CREATING, retryable=True)
                elif fate == recovery.Fate.FAIL_MISSING:
                    node.complete(failed=True, reason=lifecycle.CONTAINER_MISSING)
                elif fate == recovery.Fate.ADOPT:
                    info = await self.backend.info(guid)
                    if info.state != BackendState.ACTIVE:
                        node.complete(failed=True, reason=lifecycle.CONTAINER_MISSING)
                    else:
                        node.adopt(record, info)
            except GardenError as exc:
                log.error("recovery-step-failed", guid=guid, fate=fate.value, error=exc.message)
        for orphan in self.records.orphan_dirs(set(self._nodes)):
            self.records.remove(orphan.name)
        log.info("executor-recovered", **{f.value: sum(1 for x in fates.values() if x == f) for f in recovery.Fate})
        return fates

    # -- helpers ---------------------------------------------------------------------------

    def _node(self, guid: str) -> ContainerNode:
        node = self._nodes.get(guid)
        if node is None:
            raise ContainerNotFound(f"container {guid} not found")
        return node

