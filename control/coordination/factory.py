"""Build the configured coordination backend."""
from __future__ import annotations

from control.kit.etcd import Etcd

from .base import CoordinationConfig, Coordinator
from .consul_backend import ConsulCoordinator
from .etcd_backend import EtcdCoordinator


def build(cfg: CoordinationConfig, etcd: Etcd | None = None) -> Coordinator:
    etcd = etcd or Etcd(cfg.etcd_endpoints)
    if cfg.backend == "consul":
        return ConsulCoordinator(cfg, etcd)
    return EtcdCoordinator(cfg, etcd)
