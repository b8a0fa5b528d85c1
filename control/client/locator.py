"""Find the active instance of a locked singleton (the BBS, later the auctioneer) from the
address its holder published in the lock value."""
from __future__ import annotations

from control.coordination.base import CoordinationConfig
from control.coordination.factory import build
from control.kit.etcd import Etcd


class LockLocator:
    """`await locator()` returns the active holder's address, or None while nobody holds it."""

    def __init__(self, cfg: CoordinationConfig, lock: str = "bbs") -> None:
        self.cfg = cfg
        self.lock = lock

    async def __call__(self) -> str | None:
        etcd = Etcd(self.cfg.etcd_endpoints)
        coordinator = build(self.cfg, etcd)
        await coordinator.open()
        try:
            info = await coordinator.holder(self.lock)
        finally:
            await coordinator.close()
            await etcd.close()
        address = info.doc.get("address") if info else None
        return str(address) if address else None
