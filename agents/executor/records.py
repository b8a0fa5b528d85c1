"""The executor's memory across restarts: one small JSON record per container, written atomically.

Layout under state_dir:
    containers/<guid>/record.json   ContainerRecord (mode 0600: the run request may hold registry credentials)
    containers/<guid>/logs/         raw process output and the retained log (logs.py)
    cache/                          download cache (steps/download.py)

A record is rewritten at every state change and whenever a process of the action starts or
exits, so a restarted executor knows which backend processes to re-attach to (recovery.py).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import structlog
from pydantic import Field, ValidationError

from control.models.base import Model

from .models import Container
from .steps.base import ProcessRef

log = structlog.get_logger("executor")


class ContainerRecord(Model):
    container: Container
    action_processes: tuple[ProcessRef, ...] = Field((), description=(
        "the action's processes that were running at the last write (backend ids, log files)"))
    action_leaves: int = Field(0, description="run/download/upload steps in the action tree")
    action_leaves_started: int = Field(0, description="how many of them had started")
    working_dir: str = Field("/", description="the image's working directory (default dir of run actions)")


class RecordStore:
    def __init__(self, state_dir: str | Path) -> None:
        self.root = Path(state_dir) / "containers"

    def setup(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def dir(self, guid: str) -> Path:
        return self.root / guid

    def save(self, record: ContainerRecord) -> None:
        directory = self.dir(record.container.guid)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "record.json"
        tmp = directory / "record.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, record.model_dump_json(indent=1).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def load_all(self) -> dict[str, ContainerRecord]:
        """Every readable record by guid; unreadable ones are logged and left out (then cleaned as orphans)."""
        records: dict[str, ContainerRecord] = {}
        if not self.root.is_dir():
            return records
        for entry in sorted(self.root.iterdir()):
            path = entry / "record.json"
            if not path.is_file():
                continue
            try:
                record = ContainerRecord.model_validate_json(path.read_bytes())
            except (OSError, ValidationError) as exc:
                log.error("container-record-unreadable", path=str(path), error=str(exc)[:500])
                continue
            records[record.container.guid] = record
        return records

    def orphan_dirs(self, known: set[str]) -> list[Path]:
        """Directories of containers that have no readable record."""
        if not self.root.is_dir():
            return []
        return [p for p in sorted(self.root.iterdir()) if p.is_dir() and p.name not in known]

    def remove(self, guid: str) -> None:
        shutil.rmtree(self.dir(guid), ignore_errors=True)
