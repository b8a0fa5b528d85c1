"""Executor configuration: one frozen model, every field with a default and a description.

Defaults are Diego's (reference §6.2, §6.4, §6.6, §10): graceful stop 10 s, reservations expire
after 1 min, health checks every 2 s until healthy then every 30 s with a 1 s timeout, 250
containers, 5 concurrent downloads, a 10 GB download cache. Tests shorten the durations.
"""
from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field


class ExecutorConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    state_dir: str = Field("/var/lib/pydiego/executor", description=(
        "container records, per-container logs and the download cache (must survive a restart of the rep)"))
    memory_mb: int = Field(0, ge=0, description="memory offered to containers; 0 = MemTotal minus memory_reserve_mb")
    memory_reserve_mb: int = Field(512, ge=0, description="memory kept for the cell itself when memory_mb is detected")
    disk_mb: int = Field(0, ge=0, description="disk offered to containers; 0 = size of the file system of state_dir")
    containers: int = Field(250, ge=0, description="most containers at once; 0 = Diego's default, 250")
    graceful_shutdown_interval: timedelta = Field(timedelta(seconds=10), description=(
        "time a process has between SIGTERM and SIGKILL when its container is stopped"))
    reserved_expiration: timedelta = Field(timedelta(minutes=1), description=(
        "a reservation not given a run request within this time is completed (failed); the rep deletes it"))
    reaper_interval: timedelta = Field(timedelta(minutes=1), description="how often expired reservations are looked for")
    healthy_monitoring_interval: timedelta = Field(timedelta(seconds=30), description=(
        "liveness interval of a check without interval_ms, and of the legacy monitor action once healthy"))
    unhealthy_monitoring_interval: timedelta = Field(timedelta(seconds=2), description=(
        "interval of startup (and until-ready) checks and of the monitor action before it first passes"))
    default_check_timeout: timedelta = Field(timedelta(seconds=1), description=(
        "connect/request timeout of a declarative check without its own"))
    log_retention_bytes: int = Field(1024 * 1024, ge=4096, description=(
        "output (as log lines) kept per container; older lines are dropped"))
    log_poll_interval: timedelta = Field(timedelta(milliseconds=100), description=(
        "how often the processes' output files are read into the container log"))
    max_concurrent_downloads: int = Field(5, ge=1, description="download actions running at once on the cell")
    download_cache_dir: str = Field("", description="cache of downloads with a cache_key; empty = <state_dir>/cache")
    download_cache_max_bytes: int = Field(10 * 1000**3, ge=0, description=(
        "size of the download cache; least recently used entries are evicted beyond it"))
    download_timeout: timedelta = Field(timedelta(minutes=10), description="whole-transfer timeout of one download or upload")
    max_upload_bytes: int = Field(1024**3, ge=1, description="largest file an upload action sends")
    external_ip: str = Field("127.0.0.1", description="the cell's address, put into net info (mapped ports answer there)")

    @property
    def cache_dir(self) -> str:
        return self.download_cache_dir or f"{self.state_dir.rstrip('/')}/cache"

    @property
    def max_containers(self) -> int:
        return self.containers or 250
