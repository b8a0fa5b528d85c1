"""Where the CLI finds the BBS: flags, then PYDIEGO_* environment variables, then the local
cluster's state file (`<cluster dir>/cluster.json`, written by `pydiego cluster up`)."""
from __future__ import annotations

import json
import os
import ssl
from argparse import Namespace
from pathlib import Path

from control.client.bbs_client import BBSClient
from control.client.locator import LockLocator
from control.coordination.base import CoordinationConfig
from control.kit.tls import client_context


class ConnectionError_(Exception):
    pass


def default_cluster_dir() -> Path:
    return Path(os.environ.get("PYDIEGO_CLUSTER_DIR", Path.home() / ".pydiego" / "cluster"))


def _settings(args: Namespace) -> tuple[str, str | None, str | None, str | None, LockLocator | None]:
    """(BBS url, CA, client cert, client key, locator) from flags, environment or cluster.json."""
    url = args.bbs_url or os.environ.get("PYDIEGO_BBS_URL")
    ca = args.ca_cert or os.environ.get("PYDIEGO_CA_CERT")
    cert = args.client_cert or os.environ.get("PYDIEGO_CLIENT_CERT")
    key = args.client_key or os.environ.get("PYDIEGO_CLIENT_KEY")
    locate = None
    if not url:
        state_file = Path(args.dir or default_cluster_dir()) / "cluster.json"
        if not state_file.exists():
            raise ConnectionError_(
                "no BBS to talk to: pass --bbs-url (with --ca-cert/--client-cert/--client-key), "
                f"set PYDIEGO_BBS_URL, or start a local cluster with `pydiego cluster up` (looked for {state_file})")
        state = json.loads(state_file.read_text())
        url, ca, cert, key = state["bbs_url"], state.get("ca_cert"), state.get("client_cert"), state.get("client_key")
        if state.get("coordination"):
            locate = LockLocator(CoordinationConfig.model_validate(state["coordination"]))
    return url, ca, cert, key, locate


def tls_from_args(args: Namespace) -> ssl.SSLContext | None:
    """The client TLS context of the cluster (its CA and client certificate): the BBS's and the
    reps' (`pydiego logs` reads logs from the cells with it)."""
    _, ca, cert, key, _ = _settings(args)
    return client_context(ca, cert, key) if ca else None


def client_from_args(args: Namespace) -> BBSClient:
    url, ca, cert, key, locate = _settings(args)
    tls = client_context(ca, cert, key) if url.startswith("https") and ca else None
    # With a locator the CLI rides out a failover (a lock TTL, ~3 s in the local cluster):
    # 8 retries back off over ~11 s; without one, a dead address fails fast.
    retries = int(os.environ.get("PYDIEGO_RETRIES", "8" if locate else "2"))
    return BBSClient(url, tls=tls, retries=retries, locate=locate)


def coordination_from_args(args: Namespace) -> CoordinationConfig:
    """Where locks live: --consul / --etcd flags, else the local cluster's settings."""
    if getattr(args, "consul", None) or getattr(args, "etcd", None):
        backend = "consul" if args.consul else "etcd"
        return CoordinationConfig(backend=backend, consul_address=args.consul or "127.0.0.1:8500",
                                  etcd_endpoints=[args.etcd or "127.0.0.1:2379"], key_prefix=args.key_prefix)
    state_file = Path(args.dir or default_cluster_dir()) / "cluster.json"
    if not state_file.exists():
        raise ConnectionError_("no coordination store to read: pass --consul ADDR (and --etcd ADDR) or --etcd ADDR, "
                               f"or start a local cluster with `pydiego cluster up` (looked for {state_file})")
    state = json.loads(state_file.read_text())
    return CoordinationConfig.model_validate(state["coordination"])
