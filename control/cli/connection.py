"""Where the CLI finds the BBS: flags, then PYDIEGO_* environment variables, then the local
cluster's state file (`<cluster dir>/cluster.json`, written by `pydiego cluster up`)."""
from __future__ import annotations

import json
import os
from argparse import Namespace
from pathlib import Path

from control.client.bbs_client import BBSClient
from control.kit.tls import client_context


class ConnectionError_(Exception):
    pass


def default_cluster_dir() -> Path:
    return Path(os.environ.get("PYDIEGO_CLUSTER_DIR", Path.home() / ".pydiego" / "cluster"))


def client_from_args(args: Namespace) -> BBSClient:
    url = args.bbs_url or os.environ.get("PYDIEGO_BBS_URL")
    ca = args.ca_cert or os.environ.get("PYDIEGO_CA_CERT")
    cert = args.client_cert or os.environ.get("PYDIEGO_CLIENT_CERT")
    key = args.client_key or os.environ.get("PYDIEGO_CLIENT_KEY")
    if not url:
        state_file = Path(args.dir or default_cluster_dir()) / "cluster.json"
        if not state_file.exists():
            raise ConnectionError_(
                "no BBS to talk to: pass --bbs-url (with --ca-cert/--client-cert/--client-key), "
                f"set PYDIEGO_BBS_URL, or start a local cluster with `pydiego cluster up` (looked for {state_file})")
        state = json.loads(state_file.read_text())
        url, ca, cert, key = state["bbs_url"], state.get("ca_cert"), state.get("client_cert"), state.get("client_key")
    tls = client_context(ca, cert, key) if url.startswith("https") and ca else None
    return BBSClient(url, tls=tls, retries=int(os.environ.get("PYDIEGO_RETRIES", "3")))
