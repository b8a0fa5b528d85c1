"""The completion-callback worker (reference §2.7): for a completed task with a
completion_callback_url, mark it RESOLVING, POST the result, and delete it unless the receiver
answered 503/504; up to 3 attempts on 503/504 or timeouts, then leave it RESOLVING for the
converger to demote and re-kick."""
from __future__ import annotations

import asyncio

import httpx
import structlog

from control.models.errors import PydiegoError
from control.models.task import Task, TaskCallbackResponse, TaskState

from .task_controller import TaskController

log = structlog.get_logger("bbs.callbacks")
MAX_CB_RETRIES = 3


class CallbackWorker:
    def __init__(self, tasks: TaskController, workers: int = 16, queue_size: int = 10_000,
                 timeout_s: float = 10.0) -> None:
        self.tasks = tasks
        self.workers = workers
        self.timeout_s = timeout_s
        self.queue: asyncio.Queue[Task] = asyncio.Queue(maxsize=queue_size)

    def submit(self, task: Task) -> None:
        if task.state is not TaskState.COMPLETED or not task.task_definition.completion_callback_url:
            return
        try:
            self.queue.put_nowait(task)
        except asyncio.QueueFull:
            log.warning("callback-queue-full", task_guid=task.task_guid)  # the converger re-kicks it

    async def run(self, ready: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s) as client, asyncio.TaskGroup() as group:
            for _ in range(self.workers):
                group.create_task(self._work(client))
            ready.set()

    async def _work(self, client: httpx.AsyncClient) -> None:
        while True:
            task = await self.queue.get()
            try:
                await self.deliver(client, task)
            except PydiegoError as exc:
                log.info("callback-skipped", task_guid=task.task_guid, reason=str(exc))
            except Exception:
                log.exception("callback-crashed", task_guid=task.task_guid)

    async def deliver(self, client: httpx.AsyncClient, task: Task) -> None:
        task = await self.tasks.resolving(task.task_guid)
        body = TaskCallbackResponse(
            task_guid=task.task_guid, failed=task.failed, failure_reason=task.failure_reason,
            result=task.result, annotation=task.task_definition.annotation, created_at=task.created_at)
        url = task.task_definition.completion_callback_url
        for attempt in range(MAX_CB_RETRIES):
            try:
                resp = await client.post(url, json=body.model_dump(mode="json"))
            except httpx.TimeoutException:
                log.info("callback-timeout", task_guid=task.task_guid, attempt=attempt)
                continue
            except httpx.HTTPError as exc:
                log.warning("callback-failed", task_guid=task.task_guid, error=str(exc))
                return  # stays RESOLVING; the converger demotes it after 30 s
            if resp.status_code in (503, 504):
                log.info("callback-unavailable", task_guid=task.task_guid, status=resp.status_code, attempt=attempt)
                continue
            await self.tasks.delete(task.task_guid)
            log.info("callback-delivered", task_guid=task.task_guid, status=resp.status_code)
            return
