"""cell_bench.py's shared pieces: names and ranges, targets, machine description, statistics."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_ROOT = Path("/var/tmp/pydiego-bench-cell")
APP_PORT = 8080
DOMAIN = "bench"
# Host-level names and ranges no test suite or local cluster uses (tests: 10.243-10.251.x, 10.253-254.x,
# host ports 61000-65439; the ephemeral range is 32768-60999).
EXEC_GARDEN = {"tag": "bn", "bridge_subnet": "10.236.0.0/22", "port_range_start": 31000, "port_range_end": 31099}
REP_GARDEN = {"tag": "bc", "bridge_subnet": "10.232.0.0/22", "port_range_start": 30000, "port_range_end": 30999}
RAW_PREFIX = "pdcbr"                       # raw path: bridge pdcbr-br, veths pdcbr-<n>
RAW_NET = ("10.237.0", 24)                 # bridge .1, containers .10-.209
RAW_CGROUP_PARENT = "pydiego-bench-raw"
TARGETS = {  # name -> (limit, unit, description)
    "overhead_p50_ms": (50.0, "ms", "executor create->running overhead over raw runc, p50"),
    "desired_running_p50_s": (1.0, "s", "desired->RUNNING through BBS + rep, p50 (cached rootfs)"),
}


@dataclass(frozen=True)
class Sizes:
    iterations: int
    cluster_iterations: int
    first_batch: int
    batch: int
    max_containers: int


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    """Percentile with linear interpolation between the closest ranks."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": round(pct(values, 50), 2), "p99": round(pct(values, 99), 2),
            "mean": round(sum(values) / len(values), 2) if values else float("nan"),
            "min": round(min(values), 2) if values else float("nan"),
            "max": round(max(values), 2) if values else float("nan")}


def ms(seconds: float) -> float:
    return seconds * 1000


# -- machine ---------------------------------------------------------------------------------

def hardware() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")))
    runc = subprocess.run(["runc", "--version"], capture_output=True, text=True).stdout.splitlines()
    debian = Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").exists() else "?"
    cgroup = "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1"
    return {"cpu_model": model or platform.processor(), "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)), "ram_gb": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release(), "debian": debian, "runc": runc[0] if runc else "?",
            "python": platform.python_version(), "cgroup": cgroup}


def machine_busy_seconds() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


class CPUMeter:
    """Cores the whole machine kept busy during a phase (this benchmark shares it with everyone)."""

    def __init__(self) -> None:
        self.t0, self.busy0 = time.perf_counter(), machine_busy_seconds()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        return {"seconds": round(wall, 1), "machine_busy_cores": round((machine_busy_seconds() - self.busy0) / wall, 2),
                "loadavg_1m": round(os.getloadavg()[0], 2)}


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0])
    return out


def other_busy_processes() -> list[str]:
    """Other pydiego/pytest processes at start: they compete for the same 2 cores."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if "pytest" in cmd or ("pydiego" in cmd and "keeper.py" not in cmd) or " -m agents." in cmd or " -m control." in cmd:
            found.append(f"{entry.name} {cmd[:110]}")
    return found
