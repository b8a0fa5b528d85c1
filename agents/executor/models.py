"""What the rep asks of its executor and what it gets back (reference §2.8, §6.2).

The executor owns a cell's containers from reservation to deletion. These models are its
contract with the rep: an allocation books resources (RESERVED), a run request attaches the
recipe (INITIALIZING), the executor creates the container (CREATED), runs setup and the action
and reports RUNNING once the health checks pass (or at once with no checks), then COMPLETED
with a RunResult. Nothing here talks to the BBS: the rep translates BBS records into these.
"""
from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from control.models.actions import Action, EnvironmentVariable
from control.models.base import Guid, Model
from control.models.checks import CheckDefinition
from control.models.desired_lrp import SecurityGroupRule

MAX_FAILURE_REASON = 10_000
MAX_RESULT_BYTES = 50 * 1024


class ContainerState(StrEnum):
    RESERVED = "reserved"          # resources booked in memory only; expires after reserved_expiration
    INITIALIZING = "initializing"  # run request attached, container being made
    CREATED = "created"            # backend container exists, setup/action starting
    RUNNING = "running"            # step tree ready: health checks passed, or action started without checks
    COMPLETED = "completed"        # finished; run_result says how. Only delete() follows.


class Lifecycle(StrEnum):
    LRP = "lrp"
    TASK = "task"


class Resources(Model):
    memory_mb: int = Field(0, ge=0)
    disk_mb: int = Field(0, ge=0)
    containers: int = Field(0, ge=0)


class AllocationRequest(Model):
    """One container to reserve. `guid` is the instance guid (LRP) or the task guid."""

    guid: Guid
    memory_mb: int = Field(0, ge=0)
    disk_mb: int = Field(0, ge=0)
    max_pids: int = Field(0, ge=0)
    tags: dict[str, str] = Field({}, description="lifecycle, domain, process_guid, index, ... (kept with the container)")


class AllocationFailure(Model):
    guid: str
    reason: str


class LogConfig(Model):
    guid: str = Field("", description="log guid (source id)")
    source_name: str = Field("", description="default log source of the container's processes")
    index: int = 0


class RunRequest(Model):
    """The recipe for a reserved container (built by the rep from a DesiredLRP or a Task)."""

    rootfs: str = Field(description="rootfs URI: preloaded:<stack>, preloaded+layer:..., docker://..., oci:...")
    image_username: str = ""
    image_password: str = ""
    env: list[EnvironmentVariable] = Field([], description="DLRP/Task env plus the rep's INSTANCE_* variables")
    setup: Action | None = None
    action: Action | None = None
    monitor: Action | None = None
    check_definition: CheckDefinition | None = None
    start_timeout_ms: int = Field(0, ge=0)
    cpu_weight: int = Field(0, ge=0, le=100)
    privileged: bool = False
    ports: list[int] = []
    egress_rules: list[SecurityGroupRule] = []
    log_config: LogConfig = LogConfig()
    result_file: str = Field("", description="tasks: file read (<= 50 KiB) when the action succeeds")
    network_env: bool = Field(True, description="add CF_INSTANCE_IP/PORT/ADDR/PORTS/INTERNAL_IP once ports are known")


class RunResult(Model):
    failed: bool = False
    failure_reason: str = Field("", max_length=MAX_FAILURE_REASON)
    stopped: bool = Field(False, description="ended because stop() was called")
    retryable: bool = Field(False, description="failed before the action ran (container creation, rootfs)")
    result: str = Field("", description="tasks: content of result_file")


class PortMapping(Model):
    container_port: int
    host_port: int


class Container(Model):
    guid: str
    state: ContainerState
    memory_mb: int = 0
    disk_mb: int = 0
    max_pids: int = 0
    tags: dict[str, str] = {}
    allocated_at: float = Field(description="unix time of the reservation")
    run_request: RunRequest | None = None
    external_ip: str = Field("", description="the cell's address: mapped ports answer there")
    internal_ip: str = Field("", description="the container's own address on the cell bridge")
    ports: list[PortMapping] = []
    routable: bool = Field(False, description="readiness: true once readiness checks pass (or ready without them)")
    run_result: RunResult | None = None
    memory_usage_bytes: int = 0


class EventKind(StrEnum):
    RESERVED = "reserved"
    RUNNING = "running"
    COMPLETED = "completed"
    ROUTABLE_CHANGED = "routable_changed"
    REMOVED = "removed"


class ContainerEvent(Model):
    kind: EventKind
    container: Container


class LogLine(Model):
    timestamp: float
    source: str = Field(description="log source: APP, HEALTH, CELL, ...")
    stream: str = Field(description="stdout or stderr")
    line: str
