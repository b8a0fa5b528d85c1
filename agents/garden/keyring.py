"""Kernel key quotas for containers.

runc gives every container a new session keyring, owned by the container's root. Unprivileged
containers all map root to the same host uid, and the kernel's per-uid quota for non-root users
(kernel.keys.maxkeys = 200, maxbytes = 20000 by default) then caps a cell at fewer than 200
containers: the next `runc run` fails with "unable to create session key: disk quota exceeded".
The backend raises both limits (never lowers them) at setup. They are machine-wide settings.
"""
from __future__ import annotations

from pathlib import Path

import structlog

log = structlog.get_logger("garden")
KEYS = Path("/proc/sys/kernel/keys")
MIN_MAXKEYS = 20_000
MIN_MAXBYTES = 2_000_000


def ensure_key_quota(root: Path = KEYS) -> None:
    for name, minimum in (("maxkeys", MIN_MAXKEYS), ("maxbytes", MIN_MAXBYTES)):
        path = root / name
        try:
            current = int(path.read_text())
            if current < minimum:
                path.write_text(str(minimum))
                log.info("key-quota-raised", setting=f"kernel.keys.{name}", before=current, after=minimum)
        except (OSError, ValueError) as exc:  # read-only /proc (nested container): containers still work until the quota
            log.warning("key-quota-unchanged", setting=f"kernel.keys.{name}", error=str(exc))
