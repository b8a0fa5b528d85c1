"""DesiredLRP, its SchedulingInfo / RunInfo split, and DesiredLRPUpdate (reference §1.1).

Storage keeps the two halves apart: SchedulingInfo is what auctions and convergence read for
every LRP, RunInfo is what only a rep needs to run one. `DesiredLRP.split()` and
`DesiredLRP.join()` convert between the full wire object and the two stored halves.
Validation collects every problem at once (pydantic reports all field errors together).
"""
from __future__ import annotations

import ipaddress
import json
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from .actions import Action, EnvironmentVariable
from .base import (INT32_MAX, MAX_ANNOTATION_BYTES, MAX_INSTANCES, MAX_ROUTES_BYTES, MAX_VOLUME_MOUNTED_FILES_BYTES,
                   DomainName, Model, ProcessGuid)
from .checks import CheckDefinition
from .routes import ROUTE_ADAPTERS

ROOTFS_SCHEMES = ("preloaded:", "preloaded+layer:", "docker://", "oci:")


def validate_rootfs(value: str) -> str:
    if not value.startswith(ROOTFS_SCHEMES):
        raise ValueError(f"rootfs must start with one of {', '.join(ROOTFS_SCHEMES)}")
    rest = value.split(":", 1)[1]
    if value.startswith("preloaded"):
        stack = rest.split("?", 1)[0]
        if not stack or "/" in stack:
            raise ValueError("preloaded rootfs needs a stack name, e.g. preloaded:busybox")
    elif value.startswith("docker://"):
        image = value[len("docker://"):].lstrip("/")
        if not image or " " in image:
            raise ValueError("docker rootfs needs an image, e.g. docker://registry/org/img#tag")
    elif not rest:
        raise ValueError("oci rootfs needs a layout path, e.g. oci:/path/to/layout:tag")
    return value


class ModificationTag(Model):
    epoch: str = ""
    index: int = Field(default=0, ge=0)

    def succeeded_by(self, other: "ModificationTag") -> bool:
        """True when `other` is newer (Diego's SucceededBy): a different epoch or a higher index."""
        if not self.epoch or not other.epoch:
            return True
        return self.epoch != other.epoch or self.index < other.index

    def incremented(self) -> "ModificationTag":
        return ModificationTag(epoch=self.epoch, index=self.index + 1)


class PortRange(Model):
    start: int = Field(ge=1, le=65535)
    end: int = Field(ge=1, le=65535)


class ICMPInfo(Model):
    type: int
    code: int


class SecurityGroupRule(Model):
    protocol: Literal["tcp", "udp", "icmp", "all"]
    destinations: list[str] = Field(min_length=1)
    ports: list[int] | None = None
    port_range: PortRange | None = None
    icmp_info: ICMPInfo | None = None
    log: bool = False
    annotations: list[str] = []

    @field_validator("destinations")
    @classmethod
    def _destinations(cls, value: list[str]) -> list[str]:
        for dest in value:
            for part in dest.split("-", 1):
                try:
                    ipaddress.ip_network(part, strict=False)
                except ValueError:
                    raise ValueError(f"destination {dest!r} is not an IP, CIDR or IP range") from None
        return value

    @model_validator(mode="after")
    def _ports(self) -> "SecurityGroupRule":
        if self.ports is not None and self.port_range is not None:
            raise ValueError("ports and port_range are exclusive")
        if self.protocol == "icmp" and (self.ports or self.port_range):
            raise ValueError("icmp rules take icmp_info, not ports")
        if self.protocol != "icmp" and self.icmp_info is not None:
            raise ValueError("icmp_info is only for icmp rules")
        return self


class CachedDependency(Model):
    name: str = ""
    from_: str = Field(alias="from", min_length=1)
    to: str = Field(min_length=1)
    cache_key: str = Field(min_length=1)
    log_source: str = ""
    checksum_algorithm: Literal["md5", "sha1", "sha256"] | None = None
    checksum_value: str | None = None


class ImageLayer(Model):
    name: str = ""
    url: str = Field(min_length=1)
    destination_path: str = Field(min_length=1)
    digest_algorithm: Literal["SHA256", "SHA512"] | None = None
    digest_value: str | None = None
    media_type: Literal["TGZ", "TAR", "ZIP"] = "TGZ"
    layer_type: Literal["SHARED", "EXCLUSIVE"] = "SHARED"


class SharedDevice(Model):
    volume_id: str
    mount_config: str = ""


class VolumeMount(Model):
    driver: str = Field(min_length=1)
    container_dir: str = Field(min_length=1)
    mode: Literal["RO", "RW"] = "RO"
    shared: SharedDevice | None = None


class MetricTagValue(Model):
    static: str | None = None
    dynamic: Literal["INDEX", "INSTANCE_GUID"] | None = None

    @model_validator(mode="after")
    def _one(self) -> "MetricTagValue":
        if (self.static is None) == (self.dynamic is None):
            raise ValueError("a metric tag has exactly one of static or dynamic")
        return self


class Sidecar(Model):
    action: Action
    memory_mb: int = Field(default=0, ge=0)
    disk_mb: int = Field(default=0, ge=0)


class LogRateLimit(Model):
    bytes_per_second: int = Field(default=0, ge=-1)


class File(Model):
    path: str = Field(min_length=1)
    content: str = ""


class CertificateProperties(Model):
    organizational_unit: list[str] = []


class Network(Model):
    properties: dict[str, str] = {}


class UpdateStrategy(StrEnum):
    ROLLING = "ROLLING"
    RECREATE = "RECREATE"


def check_annotation(value: str) -> str:
    """Annotations are at most 10 KiB (reference §1.1), counted in bytes."""
    if len(value.encode()) > MAX_ANNOTATION_BYTES:
        raise ValueError(f"annotation is over {MAX_ANNOTATION_BYTES} bytes")
    return value


def _check_routes(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return value
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > MAX_ROUTES_BYTES:
        raise ValueError(f"routes are {size} bytes, over the limit of {MAX_ROUTES_BYTES}")
    problems: list[str] = []
    for key, adapter in ROUTE_ADAPTERS.items():
        if key in value and value[key] is not None:
            try:
                adapter.validate_python(value[key])
            except ValidationError as exc:
                # name the router key: re-raising exc would report `routes.0.port`, not which router
                problems += [f"{'.'.join(map(str, (key, *e['loc'])))}: {e['msg']}" for e in exc.errors()]
    if problems:
        raise ValueError("; ".join(problems))
    return value


class _ResourceFields(Model):
    memory_mb: int = Field(default=0, ge=0, le=INT32_MAX, description="0 = unlimited")
    disk_mb: int = Field(default=0, ge=0, le=INT32_MAX, description="0 = unlimited")
    max_pids: int = Field(default=0, ge=0, le=INT32_MAX, description="0 = unlimited")


class DesiredLRP(_ResourceFields):
    process_guid: ProcessGuid
    domain: DomainName
    rootfs: str
    instances: int = Field(default=1, ge=0, le=MAX_INSTANCES)
    env: list[EnvironmentVariable] = []
    setup: Action | None = None
    action: Action
    monitor: Action | None = None
    check_definition: CheckDefinition | None = None
    start_timeout_ms: int = Field(default=0, ge=0, le=2**63 - 1)
    cpu_weight: int = Field(default=0, ge=0, le=100)
    privileged: bool = False
    ports: list[int] = Field(default=[], max_length=64)
    routes: dict[str, Any] | None = None
    log_guid: str = ""
    log_source: str = ""
    metrics_guid: str = ""
    metric_tags: dict[str, MetricTagValue] | None = None
    annotation: str = ""
    egress_rules: list[SecurityGroupRule] = []
    cached_dependencies: list[CachedDependency] = []
    image_layers: list[ImageLayer] = []
    volume_mounts: list[VolumeMount] = []
    trusted_system_certificates_path: str = ""
    network: Network | None = None
    placement_tags: list[str] = []
    certificate_properties: CertificateProperties | None = None
    image_username: str = ""
    image_password: str = ""
    sidecars: list[Sidecar] = []
    log_rate_limit: LogRateLimit | None = None
    volume_mounted_files: list[File] = []
    legacy_download_user: str = ""
    modification_tag: ModificationTag | None = None
    update_strategy: UpdateStrategy = UpdateStrategy.ROLLING

    _v_rootfs = field_validator("rootfs")(classmethod(lambda cls, v: validate_rootfs(v)))
    _v_annotation = field_validator("annotation")(classmethod(lambda cls, v: check_annotation(v)))
    _v_routes = field_validator("routes")(classmethod(lambda cls, v: _check_routes(v)))

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: list[int]) -> list[int]:
        for port in value:
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} is outside 1-65535")
        if len(set(value)) != len(value):
            raise ValueError("ports must be unique")
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> "DesiredLRP":
        if bool(self.image_username) != bool(self.image_password):
            raise ValueError("image_username and image_password must be set together")
        total = sum(len(f.content.encode()) for f in self.volume_mounted_files)
        if total > MAX_VOLUME_MOUNTED_FILES_BYTES:
            raise ValueError("volume_mounted_files are over 1 MiB")
        return self

    # --- storage split -------------------------------------------------------------------
    def split(self) -> tuple["SchedulingInfo", "RunInfo"]:
        data = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        sched = {k: data[k] for k in SCHEDULING_FIELDS if k in data}
        sched["volume_placement"] = sorted({m.driver for m in self.volume_mounts})
        run = {k: v for k, v in data.items() if k not in SCHEDULING_ONLY_FIELDS}
        return SchedulingInfo.model_validate(sched), RunInfo.model_validate(run)

    @classmethod
    def join(cls, sched: "SchedulingInfo", run: "RunInfo") -> "DesiredLRP":
        data = run.model_dump(by_alias=True, exclude_none=True, mode="json")
        s = sched.model_dump(by_alias=True, exclude_none=True, mode="json")
        s.pop("volume_placement", None)
        data.update(s)
        return cls.model_validate(data)


SCHEDULING_FIELDS = ("process_guid", "domain", "instances", "annotation", "routes", "memory_mb",
                     "disk_mb", "max_pids", "rootfs", "placement_tags", "modification_tag",
                     "log_guid", "metric_tags", "update_strategy")
# Fields that live only in SchedulingInfo; the key fields are repeated in RunInfo.
SCHEDULING_ONLY_FIELDS = ("instances", "annotation", "routes", "modification_tag",
                          "metric_tags", "update_strategy")


class SchedulingInfo(_ResourceFields):
    """What auctions and convergence need for every LRP (stored at desired/<guid>/schedule)."""

    process_guid: ProcessGuid
    domain: DomainName
    rootfs: str
    instances: int = Field(default=1, ge=0)
    annotation: str = ""
    routes: dict[str, Any] | None = None
    placement_tags: list[str] = []
    volume_placement: list[str] = []
    modification_tag: ModificationTag | None = None
    log_guid: str = ""
    metric_tags: dict[str, MetricTagValue] | None = None
    update_strategy: UpdateStrategy = UpdateStrategy.ROLLING


class RunInfo(Model):
    """What a rep needs to run an instance (stored at desired/<guid>/run). Loosely typed on
    purpose: it is only ever produced from a validated DesiredLRP."""

    model_config = {**Model.model_config, "extra": "allow"}
    process_guid: ProcessGuid
    domain: DomainName


class DesiredLRPUpdate(Model):
    """The only fields an update may change (reference §1.1)."""

    instances: int | None = Field(default=None, ge=0, le=MAX_INSTANCES)
    routes: dict[str, Any] | None = None
    annotation: str | None = None
    metric_tags: dict[str, MetricTagValue] | None = None
    image_username: str | None = None
    image_password: str | None = None

    @field_validator("annotation")
    @classmethod
    def _annotation(cls, value: str | None) -> str | None:
        return None if value is None else check_annotation(value)

    @field_validator("routes")
    @classmethod
    def _routes(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_routes(value)

    @model_validator(mode="after")
    def _credentials(self) -> "DesiredLRPUpdate":
        if (self.image_username is None) != (self.image_password is None):
            raise ValueError("image_username and image_password must be updated together")
        if self.image_username is not None and bool(self.image_username) != bool(self.image_password):
            raise ValueError("image_username and image_password must be set together")
        return self
