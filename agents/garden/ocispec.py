"""OCI runtime config (config.json) and process specs for runc, as pure functions.

Starts from what `runc spec` (runc 1.1.5) generates and changes:
- the network namespace is new (runc makes it inside the container's user namespace); the
  backend attaches it afterwards (`ip netns attach`) and wires the veth. Joining a netns created
  beforehand (namespaces[].path) breaks `runc exec` in user-namespaced containers on runc < 1.2
  (opencontainers/runc#4390), so the host never pre-creates it.
- an absolute cgroupsPath, memory limit == memory+swap limit (so the OOM killer acts instead of
  swapping), cpu.shares, pids.max;
- unprivileged: a user namespace with uid/gid mappings, /sys bind-mounted read-only (sysfs cannot
  be mounted from a user namespace that does not own the netns) and no cgroup mount;
- init: the host's static busybox bind-mounted at /.pydiego/sh runs a pause loop that ignores
  SIGTERM (so `stop` can TERM everything else first) and reaps orphans.
"""
from __future__ import annotations

from typing import Any

from .rootfs import IdMapping

INIT_PATH = "/.pydiego/sh"
# `sleep ... & wait` rather than a foreground sleep: busybox runs applets in-process when it can,
# and only a shell blocked in wait() reaps the orphans re-parented to it.
INIT_SCRIPT = "trap '' TERM HUP INT; while :; do sleep 86400 & wait; done"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Docker's default capability set; privileged containers differ only by running without a user
# namespace (no CAP_NET_ADMIN: a container must not renumber itself on the shared bridge).
CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
MASKED_PATHS = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def cpu_shares(weight: int) -> int:
    return max(2, 1024 * weight // 100)


def capabilities() -> dict[str, list[str]]:
    return {k: list(CAPABILITIES) for k in ("bounding", "effective", "permitted", "ambient")}


def process_config(args: list[str], env: list[str], cwd: str = "/", uid: int = 0, gid: int = 0) -> dict[str, Any]:
    """An OCI process object; `runc exec --process` takes the same shape."""
    return {
        "terminal": False,
        "user": {"uid": uid, "gid": gid},
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": capabilities(),
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    }


def _mounts(privileged: bool, init_binary: str) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    ]
    if privileged:
        mounts += [
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ]
    else:
        mounts.append({"destination": "/sys", "type": "bind", "source": "/sys",
                       "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    mounts.append({"destination": INIT_PATH, "type": "bind", "source": init_binary,
                   "options": ["bind", "ro", "nosuid", "nodev"]})
    return mounts


def container_config(*, rootfs: str, hostname: str, env: list[str], cgroups_path: str, init_binary: str,
                     memory_mb: int, cpu_weight: int, max_pids: int, mapping: IdMapping | None) -> dict[str, Any]:
    """config.json for a container whose init is the pause loop; user processes come via exec."""
    resources: dict[str, Any] = {
        "devices": [{"allow": False, "access": "rwm"}],
        "cpu": {"shares": cpu_shares(cpu_weight)},
    }
    if memory_mb:
        limit = memory_mb * 1024 * 1024
        resources["memory"] = {"limit": limit, "swap": limit}
    if max_pids:
        resources["pids"] = {"limit": max_pids}
    namespaces = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]
    linux: dict[str, Any] = {
        "resources": resources,
        "cgroupsPath": cgroups_path,
        "namespaces": namespaces,
        "maskedPaths": MASKED_PATHS,
        "readonlyPaths": READONLY_PATHS,
    }
    if mapping is not None:
        namespaces.append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": mapping.host_id, "size": mapping.size}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": mapping.host_id, "size": mapping.size}]
    return {
        "ociVersion": "1.0.2-dev",
        "process": process_config([INIT_PATH, "-c", INIT_SCRIPT], env),
        "root": {"path": rootfs, "readonly": False},
        "hostname": hostname,
        "mounts": _mounts(mapping is None, init_binary),
        "linux": linux,
    }
