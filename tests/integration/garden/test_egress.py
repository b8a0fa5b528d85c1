"""Egress rules: a container reaches what its rules allow (here, servers in a network namespace
the test makes, standing for "the outside"), and nothing else; never another container or the
cell's own services, even with 0.0.0.0/0."""
from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.garden import ContainerSpec, RuncBackend
from agents.garden.models import EgressRule

from .helpers import assert_no_traces, sh
from .test_network import get, start_httpd

FETCH = "timeout -s KILL 2 wget -q -O- http://{}/"


@dataclass(frozen=True)
class Outside:
    netns: str
    host_ip: str    # the host's end of the veth: a host address, so containers must not reach it
    server_ip: str  # in the netns: reachable only through egress rules


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


@pytest.fixture
def outside(garden_slot: int, tmp_path: Path) -> Iterator[Outside]:
    """A netns with httpd on ports 8080 and 9090, wired to the host by a veth (forwarding on)."""
    name = f"gte{garden_slot}-{uuid.uuid4().hex[:6]}"
    host_if, net = f"{name}h", f"10.242.{garden_slot}"
    outside = Outside(name, f"{net}.1", f"{net}.2")
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("hello from outside\n")
    servers: list[subprocess.Popen[bytes]] = []
    try:
        _ip("netns", "add", name)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", name)
        _ip("addr", "add", f"{outside.host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", name, "addr", "add", f"{outside.server_ip}/30", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        Path(f"/proc/sys/net/ipv4/conf/{host_if}/forwarding").write_text("1\n")  # replies go back to the bridge
        for port in ("8080", "9090"):
            servers.append(subprocess.Popen(["ip", "netns", "exec", name, "busybox", "httpd", "-f", "-p", port,
                                             "-h", str(tmp_path / "www")]))
        yield outside
    finally:
        for server in servers:
            server.kill()
            server.wait()
        _ip("link", "del", host_if, check=False)
        _ip("netns", "del", name, check=False)


@pytest.fixture
async def host_service(outside: Outside) -> AsyncIterator[list[str]]:
    """A TCP service on a host address other than the bridge's; yields the addresses it answers on."""
    connections: list[str] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append("connected")
        writer.close()

    server = await asyncio.start_server(on_connect, outside.host_ip, 7070)
    try:
        yield connections
    finally:
        server.close()
        await server.wait_closed()


async def test_egress_rules_open_exactly_what_they_say(backend: RuncBackend, stack: Path, outside: Outside,
                                                       host_service: list[str]) -> None:
    to_8080 = EgressRule(protocol="tcp", destinations=(f"{outside.server_ip}-{outside.server_ip}",), ports=(8080,))
    await backend.create(ContainerSpec(handle="allowed", rootfs=str(stack), egress_rules=(to_8080,)))
    await backend.create(ContainerSpec(handle="closed", rootfs=str(stack)))
    await get(f"http://{outside.server_ip}:8080/")  # the host itself can reach it: the servers are up

    status, out = await sh(backend, "allowed", FETCH.format(f"{outside.server_ip}:8080"))
    assert (status.code, out.out) == (0, "hello from outside\n"), out.err
    status, _ = await sh(backend, "allowed", FETCH.format(f"{outside.server_ip}:9090"))
    assert status.code != 0, "a port outside the rule was reachable"
    status, _ = await sh(backend, "closed", FETCH.format(f"{outside.server_ip}:8080"))
    assert status.code != 0, "a container without egress rules got out"

    await backend.destroy("allowed")
    assert_no_traces(backend, "allowed")


async def test_egress_to_everything_still_excludes_containers_and_the_cell(
        backend: RuncBackend, stack: Path, outside: Outside, host_service: list[str]) -> None:
    everything = EgressRule(protocol="all", destinations=("0.0.0.0/0",))
    await backend.create(ContainerSpec(handle="open", rootfs=str(stack), egress_rules=(everything,)))
    peer = await start_httpd(backend, stack, "peer")
    await get(f"http://{peer.container_ip}:8080/index.html")  # peer is up

    status, out = await sh(backend, "open", FETCH.format(f"{outside.server_ip}:9090"))
    assert (status.code, out.out) == (0, "hello from outside\n"), out.err
    status, out = await sh(backend, "open", "ping -c 1 -W 2 " + outside.server_ip)
    assert status.code == 0, out.out + out.err  # icmp too: protocol "all"
    for target in (f"{peer.container_ip}:8080", f"{peer.bridge_ip}:{peer.ports[0].host_port}",
                   f"{outside.host_ip}:7070", f"{peer.bridge_ip}:7070"):
        status, out = await sh(backend, "open", FETCH.format(target))
        assert status.code != 0 and "hello" not in out.out, f"egress 0.0.0.0/0 reached {target}"
    assert host_service == [], "a container reached a host service"

    # A restarted backend rebuilds the rules from its records.
    again = RuncBackend(backend.config)
    try:
        await again.setup()
        status, _ = await sh(again, "open", FETCH.format(f"{outside.server_ip}:8080"))
        assert status.code == 0
    finally:
        await again.aclose()


async def test_icmp_and_udp_rules(backend: RuncBackend, stack: Path, outside: Outside) -> None:
    rules = (EgressRule(protocol="icmp", destinations=(f"{outside.server_ip}/32",), icmp_type=8, icmp_code=0),
             EgressRule(protocol="udp", destinations=("10.242.0.0/16",), port_range=(5000, 5010)),
             EgressRule(protocol="tcp", destinations=("::/0",)))  # IPv6: accepted, allows nothing
    await backend.create(ContainerSpec(handle="pinger", rootfs=str(stack), egress_rules=rules))
    status, out = await sh(backend, "pinger", "ping -c 1 -W 2 " + outside.server_ip)
    assert status.code == 0, out.out + out.err
    status, _ = await sh(backend, "pinger", FETCH.format(f"{outside.server_ip}:8080"))
    assert status.code != 0
    lines = [line for line in subprocess.run(["iptables-save", "-t", "filter"], check=True, capture_output=True,
                                             text=True).stdout.splitlines()
             if backend.names.rule_comment("pinger") in line]
    assert len(lines) == 2 and any("--dport 5000:5010" in line for line in lines), lines
    await backend.destroy("pinger")
    assert_no_traces(backend, "pinger")
    await backend.create(ContainerSpec(handle="after", rootfs=str(stack)))
    status, _ = await sh(backend, "after", "ping -c 1 -W 1 " + outside.server_ip)
    assert status.code != 0
