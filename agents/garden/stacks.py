"""Base root filesystems ("stacks") for containers: `preloaded:<name>` rootfs URIs name them.

The busybox stack is the host's static busybox (Debian's busybox-static) plus a symlink per
applet, /etc/passwd and /etc/group with root and nobody, and the usual empty mount points. It is
2 MB and built in milliseconds, at cell setup and by the tests.

The debian stack is a `debootstrap --variant=minbase` Debian (bookworm by default) with apt's
lists and caches dropped: ~45 s and ~130 MB, and it needs the network to reach the mirror, so it
is built only when asked (never by the test suite unless PYDIEGO_DEBIAN_STACK=1). OCI images
(docker://, oci:) are not stacks: see images/.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

from .rootfs import mountpoints

BUSYBOX = Path("/bin/busybox")
DEBIAN_MIRROR = "http://deb.debian.org/debian"


def build_busybox_stack(target: str | Path, busybox: str | Path = BUSYBOX) -> Path:
    """Create (or complete) a busybox rootfs at `target` and return its path. Idempotent."""
    root = Path(target)
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "proc", "sys", "dev", "var", "home"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for d in ("tmp", "var/tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(root / d, 0o1777)
    binary = root / "bin" / "busybox"
    if not binary.is_file() or binary.is_symlink():
        binary.unlink(missing_ok=True)
        shutil.copy2(busybox, binary)
        os.chmod(binary, 0o755)
    applets = subprocess.run([str(busybox), "--list-full"], check=True, capture_output=True, text=True).stdout
    for rel in applets.split():
        link = root / rel
        if link.name == "busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return root


def build_debian_stack(target: str | Path, suite: str = "bookworm", mirror: str = DEBIAN_MIRROR,
                       timeout: float = 1800.0) -> Path:
    """Create a minbase Debian rootfs at `target` with debootstrap and return its path.

    Idempotent: a target that already holds /etc/debian_version is returned as it is. Built in a
    sibling scratch directory and renamed, so an interrupted build leaves no half stack behind.
    Needs root, the `debootstrap` package and network access to `mirror`.
    """
    root = Path(target)
    if (root / "etc" / "debian_version").is_file():
        return root
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not os.path.exists(debootstrap):
        raise FileNotFoundError("debootstrap is not installed (apt-get install debootstrap)")
    scratch = root.with_name(f".{root.name}.tmp-{uuid.uuid4().hex[:8]}")
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([debootstrap, "--variant=minbase", suite, str(scratch), mirror],
                       check=True, capture_output=True, timeout=timeout)
        for cache in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for entry in (scratch / cache).glob("*"):
                if entry.is_file() and entry.name != "lock":
                    entry.unlink()
        os.rename(scratch, root)
    finally:
        _unmount_under(scratch)  # a killed debootstrap can leave /proc or /dev mounted inside
        shutil.rmtree(scratch, ignore_errors=True)
    return root


def _unmount_under(directory: Path) -> None:
    prefix = f"{directory}/"
    for point in reversed(mountpoints()):
        if point.startswith(prefix):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
