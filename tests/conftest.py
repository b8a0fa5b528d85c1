"""Session fixtures: one real etcd and one real Consul for the whole run (tests isolate
themselves with a unique key prefix), the test layers' markers, and opt-in e2e."""
from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from control.kit.etcd import Etcd
from tests.servers import ConsulServer, EtcdServer

LAYERS = ("unit", "component", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for layer in LAYERS:
            if layer in parts:
                item.add_marker(getattr(pytest.mark, layer))
        if "e2e" in parts and not os.environ.get("PYDIEGO_E2E"):
            item.add_marker(pytest.mark.skip(reason="e2e tests need a deployed cluster: set PYDIEGO_E2E=1"))


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path_factory.mktemp("etcd")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def consul_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulServer]:
    server = ConsulServer(tmp_path_factory.mktemp("consul")).start()
    yield server
    server.stop()


@pytest.fixture
def key_prefix() -> str:
    return f"/test-{uuid.uuid4().hex[:12]}/v1"


@pytest.fixture
async def etcd(etcd_server: EtcdServer) -> AsyncIterator[Etcd]:
    client = Etcd([etcd_server.endpoint])
    await client.connect()
    yield client
    await client.close()
