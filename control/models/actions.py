"""The action language (reference §1.6) in Diego's one-key wire form.

An action is an object with exactly one key naming it: `{"run": {...}}`, `{"serial": {"actions":
[...]}}`, `{"timeout": {"action": {...}, "timeout_ms": 5000}}`. Nesting is recursive. The
discriminator reads the single key so a wrong action reports one clear error, not one per variant.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from .base import Model


class EnvironmentVariable(Model):
    name: str = Field(min_length=1, max_length=4096)
    value: str = ""


class ResourceLimits(Model):
    nofile: int | None = Field(default=None, ge=0)
    nproc: int | None = Field(default=None, ge=0, description="ignored, as in Diego")


class RunAction(Model):
    path: str = Field(min_length=1)
    args: list[str] = []
    dir: str | None = None
    user: str = Field(min_length=1, description="user name (not uid) inside the container")
    env: list[EnvironmentVariable] = []
    resource_limits: ResourceLimits | None = None
    log_source: str = ""
    suppress_log_output: bool = False


ChecksumAlgorithm = Literal["md5", "sha1", "sha256"]


class DownloadAction(Model):
    from_: str = Field(alias="from", min_length=1)
    to: str = Field(min_length=1)
    user: str = Field(min_length=1)
    artifact: str = ""
    cache_key: str = ""
    log_source: str = ""
    checksum_algorithm: ChecksumAlgorithm | None = None
    checksum_value: str | None = None

    @field_validator("from_")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "file://")):
            raise ValueError("must be an http(s):// or file:// URL")
        return value

    @model_validator(mode="after")
    def _checksum_pair(self) -> "DownloadAction":
        if (self.checksum_algorithm is None) != (self.checksum_value is None):
            raise ValueError("checksum_algorithm and checksum_value must be set together")
        return self


class UploadAction(Model):
    from_: str = Field(alias="from", min_length=1)
    to: str = Field(min_length=1)
    user: str = Field(min_length=1)
    artifact: str = ""
    log_source: str = ""


class SerialAction(Model):
    actions: list["Action"] = Field(min_length=1)
    log_source: str = ""


class ParallelAction(Model):
    actions: list["Action"] = Field(min_length=1)
    log_source: str = ""


class CodependentAction(Model):
    actions: list["Action"] = Field(min_length=1)
    log_source: str = ""


class TimeoutAction(Model):
    action: "Action"
    timeout_ms: int = Field(gt=0)
    log_source: str = ""


class TryAction(Model):
    action: "Action"
    log_source: str = ""


class EmitProgressAction(Model):
    action: "Action"
    start_message: str = ""
    success_message: str = ""
    failure_message_prefix: str = ""
    log_source: str = ""


class RunEnvelope(Model):
    run: RunAction


class DownloadEnvelope(Model):
    download: DownloadAction


class UploadEnvelope(Model):
    upload: UploadAction


class SerialEnvelope(Model):
    serial: SerialAction


class ParallelEnvelope(Model):
    parallel: ParallelAction


class CodependentEnvelope(Model):
    codependent: CodependentAction


class TimeoutEnvelope(Model):
    timeout: TimeoutAction


class TryEnvelope(Model):
    try_: TryAction = Field(alias="try")


class EmitProgressEnvelope(Model):
    emit_progress: EmitProgressAction


ACTION_NAMES = ("run", "download", "upload", "serial", "parallel", "codependent",
                "timeout", "try", "emit_progress")


def _action_name(value: Any) -> str | None:
    if isinstance(value, dict):
        if len(value) != 1:
            return None
        (name,) = value.keys()
        return name if name in ACTION_NAMES else None
    for name, cls in _ENVELOPES.items():
        if isinstance(value, cls):
            return name
    return None


Action = Annotated[
    Union[
        Annotated[RunEnvelope, Tag("run")],
        Annotated[DownloadEnvelope, Tag("download")],
        Annotated[UploadEnvelope, Tag("upload")],
        Annotated[SerialEnvelope, Tag("serial")],
        Annotated[ParallelEnvelope, Tag("parallel")],
        Annotated[CodependentEnvelope, Tag("codependent")],
        Annotated[TimeoutEnvelope, Tag("timeout")],
        Annotated[TryEnvelope, Tag("try")],
        Annotated[EmitProgressEnvelope, Tag("emit_progress")],
    ],
    Discriminator(
        _action_name,
        custom_error_type="invalid_action",
        custom_error_message=f"an action is an object with exactly one key, one of {', '.join(ACTION_NAMES)}",
    ),
]

_ENVELOPES: dict[str, type[Model]] = {
    "run": RunEnvelope, "download": DownloadEnvelope, "upload": UploadEnvelope,
    "serial": SerialEnvelope, "parallel": ParallelEnvelope, "codependent": CodependentEnvelope,
    "timeout": TimeoutEnvelope, "try": TryEnvelope, "emit_progress": EmitProgressEnvelope,
}

for _cls in (SerialAction, ParallelAction, CodependentAction, TimeoutAction, TryAction, EmitProgressAction):
    _cls.model_rebuild()
for _cls in _ENVELOPES.values():
    _cls.model_rebuild()


def unwrap(action: Model) -> tuple[str, Model]:
    """Return (name, inner action) of an envelope, e.g. ("run", RunAction(...))."""
    name = _action_name(action)
    assert name is not None
    return name, getattr(action, "try_" if name == "try" else name)
