"""Fencing tokens kept in etcd, the store every fenced write goes to.

When a process acquires a lock (in Consul or in etcd) it bumps the counter
`<prefix>/fence/<lock>` and takes the new value as its token; every store write it makes then
compares the counter with its token inside the same etcd transaction. A holder that lost its
lock — frozen, partitioned, slow to notice — finds the counter moved on and its writes refused,
so it can never overwrite a newer holder's work. The counter lives in etcd, not in Consul's
lock index, so it keeps increasing across a Consul restart that wipes Consul's indexes.
"""
from __future__ import annotations

from control.kit.etcd import Etcd, Txn

WIDTH = 20  # zero-padded so that etcd's byte-wise value comparison is numeric


def encode(token: int) -> bytes:
    return str(token).zfill(WIDTH).encode()


def fence_key(prefix: str, name: str) -> bytes:
    return f"{prefix}/fence/{name}".encode()


async def bump(etcd: Etcd, prefix: str, name: str, attempts: int = 100) -> int:
    """Increase the lock's fencing counter by one and return the new value."""
    key = fence_key(prefix, name)
    for _ in range(attempts):
        current = await etcd.get(key)
        token = (int(current.value) if current else 0) + 1
        txn = Txn()
        txn.expect_rev(etcd.tx, key, current.mod_revision if current else None)
        txn.put(etcd.tx, key, encode(token))
        if await etcd.commit(txn, fenced=False):
            return token
    raise RuntimeError(f"could not bump the fence of {name}")


async def current(etcd: Etcd, prefix: str, name: str) -> int:
    kv = await etcd.get(fence_key(prefix, name))
    return int(kv.value) if kv else 0
