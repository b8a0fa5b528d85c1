"""Task and TaskDefinition (reference §1.3) and the task state machine (§2.7)."""
from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator, model_validator

from .actions import Action, EnvironmentVariable
from .base import INT32_MAX, MAX_ERROR_CHARS, CellId, DomainName, Model, TaskGuid
from .desired_lrp import (CachedDependency, CertificateProperties, File, ImageLayer, LogRateLimit,
                          Network, SecurityGroupRule, VolumeMount, check_annotation, validate_rootfs)

MAX_TASK_RETRIES = 3
MAX_RESULT_BYTES = 50 * 1024


class TaskState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    RESOLVING = "RESOLVING"


T = TaskState
# (from, to) -> the operation that performs it. Anything absent is an invalid transition.
TASK_TRANSITIONS: dict[tuple[TaskState, TaskState], str] = {
    (T.PENDING, T.RUNNING): "start",          # a rep starts it
    (T.PENDING, T.PENDING): "reject",         # placement failure: back to the auction
    (T.RUNNING, T.PENDING): "reject",         # retryable container-creation failure
    (T.PENDING, T.COMPLETED): "cancel/fail",  # cancelled or failed before it ran
    (T.RUNNING, T.COMPLETED): "complete",     # the rep reports the result (or cancel/fail)
    (T.COMPLETED, T.RESOLVING): "resolving",  # a client or the callback worker takes it
    (T.RESOLVING, T.COMPLETED): "demote",     # converger: the resolver died
}


def task_allows(current: TaskState, to: TaskState) -> bool:
    return (current, to) in TASK_TRANSITIONS


class TaskDefinition(Model):
    rootfs: str
    env: list[EnvironmentVariable] = []
    action: Action
    memory_mb: int = Field(default=0, ge=0, le=INT32_MAX)
    disk_mb: int = Field(default=0, ge=0, le=INT32_MAX)
    max_pids: int = Field(default=0, ge=0, le=INT32_MAX)
    cpu_weight: int = Field(default=0, ge=0, le=100)
    privileged: bool = False
    log_source: str = ""
    log_guid: str = ""
    metrics_guid: str = ""
    result_file: str = ""
    completion_callback_url: str = ""
    annotation: str = ""
    egress_rules: list[SecurityGroupRule] = []
    cached_dependencies: list[CachedDependency] = []
    volume_mounts: list[VolumeMount] = []
    network: Network | None = None
    placement_tags: list[str] = []
    certificate_properties: CertificateProperties | None = None
    image_username: str = ""
    image_password: str = ""
    image_layers: list[ImageLayer] = []
    log_rate_limit: LogRateLimit | None = None
    metric_tags: dict[str, Any] | None = None
    volume_mounted_files: list[File] = []

    @field_validator("rootfs")
    @classmethod
    def _rootfs(cls, value: str) -> str:
        return validate_rootfs(value)

    @field_validator("annotation")
    @classmethod
    def _annotation(cls, value: str) -> str:
        return check_annotation(value)

    @field_validator("completion_callback_url")
    @classmethod
    def _callback(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("completion_callback_url must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> "TaskDefinition":
        if bool(self.image_username) != bool(self.image_password):
            raise ValueError("image_username and image_password must be set together")
        return self


class DesireTaskRequest(Model):
    task_guid: TaskGuid
    domain: DomainName
    task_definition: TaskDefinition


class Task(Model):
    task_guid: TaskGuid
    domain: DomainName
    task_definition: TaskDefinition
    state: TaskState = TaskState.PENDING
    cell_id: CellId = ""
    result: str = ""
    failed: bool = False
    failure_reason: str = Field(default="", max_length=MAX_ERROR_CHARS)
    rejection_count: int = Field(default=0, ge=0)
    rejection_reason: str = Field(default="", max_length=MAX_ERROR_CHARS)
    created_at: int = 0
    updated_at: int = 0
    first_completed_at: int = 0


class StartTaskRequest(Model):
    cell_id: CellId = Field(min_length=1)


class CompleteTaskRequest(Model):
    cell_id: CellId = Field(min_length=1)
    failed: bool = False
    failure_reason: str = ""
    result: str = ""

    @field_validator("result")
    @classmethod
    def _result_size(cls, value: str) -> str:
        # a limit in bytes, like the rep's: max_length would count characters
        if len(value.encode()) > MAX_RESULT_BYTES:
            raise ValueError(f"result is over {MAX_RESULT_BYTES} bytes")
        return value


class TaskErrorRequest(Model):
    error_message: str = Field(min_length=1)


class StartTaskResponse(Model):
    should_start: bool


class TaskCallbackResponse(Model):
    """The body POSTed to completion_callback_url."""

    task_guid: str
    failed: bool
    failure_reason: str
    result: str
    annotation: str
    created_at: int
