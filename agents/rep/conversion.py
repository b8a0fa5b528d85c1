"""BBS records -> executor requests, and executor containers -> BBS net info (reference §1.7, §6.2, §6.3).

Pure functions. Tags on a container carry everything the harmonizer needs to match it with its
BBS record after a restart: lifecycle, domain, process_guid, index, rootfs.
Cached dependencies and image layers become DownloadActions run before the LRP's own setup
(Diego bind-mounts a shared cache instead; here the executor's download cache plays that part).
"""
from __future__ import annotations

from control.models.actions import DownloadAction, EnvironmentVariable, SerialAction
from control.models.desired_lrp import DesiredLRP
from control.models.task import Task

from agents.executor.models import AllocationRequest, Container, LogConfig, RunRequest

from control.models.rep import LRPWork, TaskWork

LRP = "lrp"
TASK = "task"


def lrp_allocation(work: LRPWork, instance_guid: str) -> AllocationRequest:
    return AllocationRequest(
        guid=instance_guid, memory_mb=work.resource.memory_mb, disk_mb=work.resource.disk_mb,
        max_pids=work.resource.max_pids,
        tags={"lifecycle": LRP, "domain": work.domain, "process_guid": work.process_guid,
              "index": str(work.index), "rootfs": work.rootfs})


def task_allocation(work: TaskWork) -> AllocationRequest:
    return AllocationRequest(
        guid=work.task_guid, memory_mb=work.resource.memory_mb, disk_mb=work.resource.disk_mb,
        max_pids=work.resource.max_pids,
        tags={"lifecycle": TASK, "domain": work.domain, "rootfs": work.rootfs})


def _downloads(deps: list[object]) -> list[dict[str, object]]:
    """CachedDependency / ImageLayer -> download envelopes (user root, cache by key or digest)."""
    out: list[dict[str, object]] = []
    for dep in deps:
        if hasattr(dep, "cache_key"):  # CachedDependency
            action = DownloadAction.model_validate({
                "from": dep.from_, "to": dep.to, "user": "root", "cache_key": dep.cache_key,  # type: ignore[attr-defined]
                "log_source": dep.log_source, "checksum_algorithm": dep.checksum_algorithm,  # type: ignore[attr-defined]
                "checksum_value": dep.checksum_value, "artifact": dep.name})  # type: ignore[attr-defined]
        else:  # ImageLayer
            algorithm = dep.digest_algorithm.lower() if dep.digest_algorithm else None  # type: ignore[attr-defined]
            action = DownloadAction.model_validate({
                "from": dep.url, "to": dep.destination_path, "user": "root",  # type: ignore[attr-defined]
                "cache_key": dep.digest_value or dep.url,  # type: ignore[attr-defined]
                "checksum_algorithm": algorithm, "checksum_value": dep.digest_value if algorithm else None,  # type: ignore[attr-defined]
                "artifact": dep.name})  # type: ignore[attr-defined]
        out.append({"download": action.model_dump(mode="json", by_alias=True, exclude_none=True)})
    return out


def _setup(setup: object | None, deps: list[object]) -> SerialAction | object | None:
    downloads = _downloads(deps)
    if not downloads:
        return setup
    actions = downloads + ([setup.model_dump(mode="json", by_alias=True, exclude_none=True)]  # type: ignore[attr-defined]
                           if setup is not None else [])
    return {"serial": {"actions": actions}}


def lrp_run_request(desired: DesiredLRP, index: int, instance_guid: str) -> RunRequest:
    """§1.7: DLRP env, then the instance's own variables (the executor adds image env below and
    CF_INSTANCE_IP/PORT/ADDR/PORTS above once ports are mapped)."""
    env = list(desired.env) + [
        EnvironmentVariable(name="INSTANCE_INDEX", value=str(index)),
        EnvironmentVariable(name="INSTANCE_GUID", value=instance_guid),
        EnvironmentVariable(name="CF_INSTANCE_INDEX", value=str(index)),
        EnvironmentVariable(name="CF_INSTANCE_GUID", value=instance_guid)]
    return RunRequest.model_validate({
        "rootfs": desired.rootfs, "image_username": desired.image_username,
        "image_password": desired.image_password, "env": env,
        "setup": _setup(desired.setup, [*desired.cached_dependencies, *desired.image_layers]),
        "action": desired.action, "monitor": desired.monitor, "check_definition": desired.check_definition,
        "start_timeout_ms": desired.start_timeout_ms, "cpu_weight": desired.cpu_weight,
        "privileged": desired.privileged, "ports": desired.ports, "egress_rules": desired.egress_rules,
        "log_config": LogConfig(guid=desired.log_guid, source_name=desired.log_source or "APP", index=index),
    })


def task_run_request(task: Task) -> RunRequest:
    d = task.task_definition
    return RunRequest.model_validate({
        "rootfs": d.rootfs, "image_username": d.image_username, "image_password": d.image_password,
        "env": d.env, "setup": _setup(None, [*d.cached_dependencies, *d.image_layers]),
        "action": d.action, "cpu_weight": d.cpu_weight, "privileged": d.privileged,
        "egress_rules": d.egress_rules, "result_file": d.result_file, "network_env": False,
        "log_config": LogConfig(guid=d.log_guid, source_name=d.log_source or "TASK"),
    })


def net_info(container: Container) -> dict[str, object]:
    """Start-request fields from a running container (§6.3: address = the cell's, ports = mappings)."""
    return {"address": container.external_ip, "instance_address": container.internal_ip,
            "ports": [{"container_port": p.container_port, "host_port": p.host_port} for p in container.ports],
            "preferred_address": "HOST"}
