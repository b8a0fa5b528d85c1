"""Base root filesystems ("stacks") for containers. For now: a minimal busybox stack for tests.

The busybox stack is the host's static busybox (Debian's busybox-static) plus a symlink per
applet, /etc/passwd and /etc/group with root and nobody, and the usual empty mount points. It is
2 MB and built in milliseconds; real stacks (cflinuxfs, OCI images) come later.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BUSYBOX = Path("/bin/busybox")


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
