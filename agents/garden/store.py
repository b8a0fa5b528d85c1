"""The backend's own memory: one state.json per container bundle, written atomically.

A restarted backend rebuilds its address/port pools and its DNAT chain from these records, and
`cleanup_all` uses them (plus name prefixes) to find what to remove. A record is written once the
container is fully created; resources of a half-made container are found by prefix instead.
"""
from __future__ import annotations

import os
from pathlib import Path

import structlog
from pydantic import Field, ValidationError

from control.models.base import Model

from .layout import Bundle, Depot
from .models import ContainerSpec, PortMapping

log = structlog.get_logger("garden")


class ContainerRecord(Model):
    spec: ContainerSpec
    container_ip: str
    ports: tuple[PortMapping, ...] = ()
    created_at: float
    init_pid: int
    lower_dir: str = Field(description="overlay lower dir (the base or its uid-shifted copy)")
    disk_baseline: int = Field(0, description="bytes the empty ext4 writable layer already used")
    stopped: bool = False


def save(bundle: Bundle, record: ContainerRecord) -> None:
    tmp = bundle.state.with_suffix(".tmp")
    tmp.write_bytes(record.model_dump_json(indent=1).encode())
    os.replace(tmp, bundle.state)


def load_all(depot: Depot) -> dict[str, ContainerRecord]:
    """Every readable record; unreadable ones are logged and skipped (cleanup_all removes them)."""
    records: dict[str, ContainerRecord] = {}
    if not depot.containers.is_dir():
        return records
    for entry in sorted(depot.containers.iterdir()):
        state = Bundle(entry).state
        if not state.is_file():
            continue
        try:
            record = ContainerRecord.model_validate_json(state.read_bytes())
        except (OSError, ValidationError) as exc:
            log.error("container-record-unreadable", path=str(state), error=str(exc))
            continue
        records[record.spec.handle] = record
    return records


def bundle_dirs(depot: Depot) -> list[Path]:
    return sorted(p for p in depot.containers.iterdir() if p.is_dir()) if depot.containers.is_dir() else []
