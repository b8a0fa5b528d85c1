"""The backend's own memory: one state.json per container bundle, and per process its files.

A restarted backend rebuilds its address/port pools and its firewall chains from the container
records, and `cleanup_all` uses them (plus name prefixes) to find what to remove. A record is
written once the container is fully created; resources of a half-made container are found by
prefix instead.

Processes (<bundle>/processes/<id>/): the backend writes meta.json (ProcessRecord) before
starting the process and again with its pid; the keeper writes exit_status (ExitRecord) when it
reaps it. Both are written to a temporary file and renamed. Directories of exited processes are
kept (a restarted backend reports their status) until pruned (the newest `keep` stay) or the
container is destroyed.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import structlog
from pydantic import Field, ValidationError

from control.models.base import Model

from .layout import Bundle, Depot, ProcessDir
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
    create_timings_ms: dict[str, float] = Field({}, description="create() time per stage (ContainerInfo)")


class ProcessRecord(Model):
    """What a later backend needs to re-attach to a process (meta.json)."""

    process_id: str
    pid: int = Field(0, description="host pid; 0 while starting")
    start_ticks: int | None = Field(None, description="/proc/<pid>/stat starttime: tells pid reuse apart")
    oom_kills_before: int = Field(0, description="the container's oom_kill counter before the start")
    stdout_path: str | None = None
    stderr_path: str | None = None
    keeper_pid: int = Field(description="the keeper that reaps it and writes exit_status")
    keeper_start_ticks: int | None = None
    created_at: float


class ExitRecord(Model):
    """A reaped process (exit_status, written by keeper.py, which has no pydantic: keep in step)."""

    wait_status: int
    oom_kills: int | None = Field(None, description="the container's oom_kill counter when it was reaped")
    exited_at: float = 0.0


def save(bundle: Bundle, record: ContainerRecord) -> None:
    _write(bundle.state, record.model_dump_json(indent=1).encode())


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_process(pdir: ProcessDir, record: ProcessRecord) -> None:
    _write(pdir.meta, record.model_dump_json().encode())


def load_process(pdir: ProcessDir) -> ProcessRecord | None:
    """The record, with the pid from runc's pid file if the backend died before writing it."""
    try:
        record = ProcessRecord.model_validate_json(pdir.meta.read_bytes())
    except (OSError, ValidationError):
        return None
    if record.pid == 0:
        try:
            record = record.model_copy(update={"pid": int(pdir.pid.read_text().strip())})
        except (OSError, ValueError):
            return record
    return record


def load_exit(pdir: ProcessDir) -> ExitRecord | None:
    try:
        return ExitRecord.model_validate_json(pdir.exit_status.read_bytes())
    except (OSError, ValidationError):
        return None


def process_dirs(bundle: Bundle) -> list[ProcessDir]:
    try:
        return sorted((ProcessDir(p) for p in bundle.processes.iterdir() if p.is_dir()), key=lambda d: d.id)
    except FileNotFoundError:
        return []


def prune_exited(bundle: Bundle, keep: int, exclude: set[str]) -> None:
    """Remove the directories of all but the `keep` most recently exited processes."""
    exited: list[tuple[float, ProcessDir]] = []
    for pdir in process_dirs(bundle):
        if pdir.id in exclude:
            continue
        try:
            exited.append((pdir.exit_status.stat().st_mtime, pdir))
        except FileNotFoundError:
            continue
    exited.sort(key=lambda pair: pair[0])
    for _mtime, pdir in exited[:max(len(exited) - keep, 0)]:
        shutil.rmtree(pdir.path, ignore_errors=True)


def remove_processes(bundle: Bundle, attempts: int = 20) -> None:
    """Remove every process directory, although a keeper may still write a status into one.

    The directory is renamed first (a late status then fails to find its path) and removal is
    retried for a file that appeared meanwhile.
    """
    if not bundle.processes.exists():
        return
    trash = bundle.path / f".processes-{uuid.uuid4().hex[:8]}"
    os.rename(bundle.processes, trash)
    for attempt in range(attempts):
        try:
            shutil.rmtree(trash)
            return
        except FileNotFoundError:
            return
        except OSError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.01)


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
