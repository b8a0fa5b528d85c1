"""What the cell API does (reference §4.7, §6.1): take work, report state, stop and cancel.

`/work` books what fits and returns what did not, each item with its reason: a wrong cell id is
a 400 (nothing taken); an evacuating cell returns everything; a rootfs this cell does not offer
is refused per item; LRPs are admitted largest-memory first. Booking is all the request does:
claiming in the BBS and starting containers follow through the harmonizer (executor RESERVED
events), so `/work` answers in milliseconds.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from control.kit.clock import new_guid
from control.models.cell import Provider
from control.models.errors import InvalidRequest, NotFound

from agents.executor.api import ContainerNotFound, ExecutorAPI
from agents.executor.models import ContainerState

from . import conversion
from control.models.rep import CellState, LRPWork, Resources, StateLRP, StateTask, TaskWork, Work

log = structlog.get_logger("rep.cell")
EVACUATING = "cell is evacuating"


class CellRep:
    def __init__(self, executor: ExecutorAPI, cell_id: str, rep_url: str, zone: str,
                 providers: Callable[[], list[tuple[str, list[str]]]], offers: Callable[[str], bool],
                 evacuating: Callable[[], bool], placement_tags: list[str] | None = None,
                 optional_placement_tags: list[str] | None = None,
                 guids: Callable[[], str] = new_guid) -> None:
        self.executor = executor
        self.cell_id = cell_id
        self.rep_url = rep_url
        self.zone = zone
        self.providers = providers
        self.offers = offers
        self.evacuating = evacuating
        self.placement_tags = placement_tags or []
        self.optional_placement_tags = optional_placement_tags or []
        self.guids = guids
        self._stopping: dict[str, asyncio.Task[None]] = {}

    async def perform(self, work: Work) -> Work:
        if work.cell_id and work.cell_id != self.cell_id:
            raise InvalidRequest(f"workload cell ID {work.cell_id!r} does not match this cell {self.cell_id!r}")
        if self.evacuating():
            return Work(cell_id=self.cell_id,
                        lrps=[w.model_copy(update={"reason": EVACUATING}) for w in work.lrps],
                        tasks=[w.model_copy(update={"reason": EVACUATING}) for w in work.tasks])
        failed_lrps: list[LRPWork] = []
        failed_tasks: list[TaskWork] = []
        lrps = sorted(work.lrps, key=lambda w: w.resource.memory_mb, reverse=True)
        allocations, items = [], []
        for lrp in lrps:
            if not self.offers(lrp.rootfs):
                failed_lrps.append(lrp.model_copy(update={"reason": f"rootfs not offered by this cell: {lrp.rootfs}"}))
                continue
            allocations.append(conversion.lrp_allocation(lrp, self.guids()))
            items.append(lrp)
        for task in work.tasks:
            if not self.offers(task.rootfs):
                failed_tasks.append(task.model_copy(update={"reason": f"rootfs not offered by this cell: {task.rootfs}"}))
                continue
            allocations.append(conversion.task_allocation(task))
            items.append(task)
        refused = {f.guid: f.reason for f in await self.executor.allocate(allocations)}
        for allocation, item in zip(allocations, items):
            if allocation.guid in refused:
                failed = item.model_copy(update={"reason": refused[allocation.guid]})
                (failed_lrps if isinstance(item, LRPWork) else failed_tasks).append(failed)  # type: ignore[arg-type]
        log.info("work-performed", lrps=len(work.lrps), tasks=len(work.tasks),
                 failed_lrps=len(failed_lrps), failed_tasks=len(failed_tasks))
        return Work(cell_id=self.cell_id, lrps=failed_lrps, tasks=failed_tasks)

    def state(self) -> CellState:
        containers = self.executor.list()
        total, free = self.executor.total_resources(), self.executor.remaining_resources()
        lrps, tasks, starting, running = [], [], 0, 0
        for c in containers:
            if c.state in (ContainerState.RESERVED, ContainerState.INITIALIZING, ContainerState.CREATED):
                starting += 1
            elif c.state is ContainerState.RUNNING:
                running += 1
            if c.tags.get("lifecycle") == conversion.TASK:
                tasks.append(StateTask(task_guid=c.guid, domain=c.tags.get("domain", ""), rootfs=c.tags.get("rootfs", ""),
                                       memory_mb=c.memory_mb, disk_mb=c.disk_mb, state=c.state.value.upper(),
                                       failed=bool(c.run_result and c.run_result.failed)))
            else:
                lrps.append(StateLRP(process_guid=c.tags.get("process_guid", ""), instance_guid=c.guid,
                                     index=int(c.tags.get("index", "0")), domain=c.tags.get("domain", ""),
                                     rootfs=c.tags.get("rootfs", ""), memory_mb=c.memory_mb, disk_mb=c.disk_mb,
                                     max_pids=c.max_pids, state=_lrp_state(c.state, c.run_result)))
        return CellState(
            cell_id=self.cell_id, rep_url=self.rep_url, zone=self.zone,
            rootfs_providers=[Provider(name=n, properties=p) for n, p in self.providers()],
            total_resources=Resources(**total.model_dump()), available_resources=Resources(**free.model_dump()),
            starting_container_count=starting, running_container_count=running, lrps=lrps, tasks=tasks,
            evacuating=self.evacuating(), placement_tags=self.placement_tags,
            optional_placement_tags=self.optional_placement_tags)

    async def stop_lrp(self, process_guid: str, instance_guid: str) -> None:
        container = self._container(instance_guid, f"instance {instance_guid} of {process_guid}")
        if container.tags.get("process_guid") != process_guid:
            raise NotFound(f"instance {instance_guid} of {process_guid} is not on this cell")
        log.info("stopping-instance", process_guid=process_guid, instance_guid=instance_guid)
        self._stop_in_background(instance_guid)

    async def cancel_task(self, task_guid: str) -> None:
        container = self._container(task_guid, f"task {task_guid}")
        if container.tags.get("lifecycle") != conversion.TASK:
            raise NotFound(f"task {task_guid} is not on this cell")
        log.info("cancelling-task", task_guid=task_guid)
        self._stop_in_background(task_guid)

    def _stop_in_background(self, guid: str) -> None:
        """A graceful stop takes up to the graceful interval (10 s): answer 202 at once (as Diego's
        rep does) and let the harmonizer report the outcome. Tasks are kept and awaited by aclose()."""
        if guid in self._stopping:
            return
        task = asyncio.create_task(self._stop(guid), name=f"stop-{guid}")
        self._stopping[guid] = task
        task.add_done_callback(lambda _: self._stopping.pop(guid, None))

    async def _stop(self, guid: str) -> None:
        try:
            await self.executor.stop(guid)
        except ContainerNotFound:
            pass
        except Exception as exc:
            log.warning("stop-failed", guid=guid, error=repr(exc))

    async def aclose(self) -> None:
        for task in list(self._stopping.values()):
            task.cancel()
        if self._stopping:
            await asyncio.wait(list(self._stopping.values()))

    def _container(self, guid: str, what: str):  # type: ignore[no-untyped-def]
        try:
            return self.executor.get(guid)
        except ContainerNotFound:
            raise NotFound(f"{what} is not on this cell") from None


def _lrp_state(state: ContainerState, result: object) -> str:
    if state is ContainerState.RUNNING:
        return "RUNNING"
    if state is ContainerState.COMPLETED:
        return "SHUTDOWN" if getattr(result, "stopped", False) else "CRASHED"
    return "CLAIMED"
