"""Common base model, typed identifiers and size limits shared by every model module.

Limits follow Diego (reference §1): guids match `^[a-zA-Z0-9_-]+$`, annotations are at most
10 KiB, routes at most 128 KiB, error strings are truncated to 1024 characters.
"""
from __future__ import annotations

import time
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

GUID_PATTERN = r"^[a-zA-Z0-9_-]+$"
MAX_ANNOTATION_BYTES = 10 * 1024
MAX_ROUTES_BYTES = 128 * 1024
MAX_ERROR_CHARS = 1024
MAX_VOLUME_MOUNTED_FILES_BYTES = 1024 * 1024

Guid = Annotated[str, StringConstraints(pattern=GUID_PATTERN, min_length=1, max_length=255)]
ProcessGuid = Guid
TaskGuid = Guid
InstanceGuid = Annotated[str, StringConstraints(max_length=255)]
CellId = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_.-]*$", max_length=255)]
DomainName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^/\s\x00-\x1f\x7f]+$")]
INT32_MAX = 2**31 - 1  # Diego's int32 fields
MAX_INSTANCES = 10_000  # one desire writes all its rows in one etcd transaction (--max-txn-ops)
Port = Annotated[int, "port"]


class Model(BaseModel):
    """Frozen, strict-about-unknown-fields base for every wire/storage model."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def truncate(text: str | None, limit: int = MAX_ERROR_CHARS) -> str:
    """Truncate an error string to Diego's stored length."""
    return (text or "")[:limit]


def now_ns() -> int:
    return time.time_ns()
