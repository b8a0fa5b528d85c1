"""Networking: mapped ports reachable from the host; containers isolated from each other and from
host services."""
from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from agents.garden import ContainerInfo, ContainerSpec, ProcessSpec, RuncBackend

from .helpers import sh

HTTPD = "mkdir -p /www && echo \"hello from $HOSTNAME\" > /www/index.html && exec httpd -f -p 8080 -h /www"


async def start_httpd(backend: RuncBackend, stack: Path, handle: str) -> ContainerInfo:
    info = await backend.create(ContainerSpec(handle=handle, rootfs=str(stack), ports=(8080,),
                                              env=(f"HOSTNAME={handle}",)))
    await backend.run(handle, ProcessSpec(path="sh", args=("-c", HTTPD)))
    return info


async def get(url: str, timeout: float = 5.0) -> str:
    """GET with retries until the server answers (httpd needs a moment to listen)."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(trust_env=False, timeout=1.0) as client:
        while True:
            try:
                response = await client.get(url)
                response.raise_for_status()
                return response.text
            except httpx.HTTPError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.05)


async def test_httpd_reachable_through_mapped_port(backend: RuncBackend, stack: Path) -> None:
    info = await start_httpd(backend, stack, "web")
    (mapping,) = info.ports
    assert mapping.container_port == 8080
    assert backend.config.port_range_start <= mapping.host_port <= backend.config.port_range_end
    ipv6 = Path(f"/proc/sys/net/ipv6/conf/{backend.names.bridge}/disable_ipv6")
    assert not ipv6.exists() or ipv6.read_text().strip() == "1"
    for url in (f"http://127.0.0.1:{mapping.host_port}/index.html",
                f"http://{info.bridge_ip}:{mapping.host_port}/index.html",
                f"http://{info.container_ip}:8080/index.html"):
        assert await get(url) == "hello from web\n", url


async def test_containers_cannot_reach_each_other_or_the_host(backend: RuncBackend, stack: Path) -> None:
    a = await start_httpd(backend, stack, "net-a")
    b = await start_httpd(backend, stack, "net-b")
    await get(f"http://127.0.0.1:{b.ports[0].host_port}/index.html")  # b is up

    # A host service listening on the bridge address.
    connections = 0

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    server = await asyncio.start_server(on_connect, a.bridge_ip, 0)
    host_port = server.sockets[0].getsockname()[1]
    try:
        fetch = "timeout -s KILL 2 wget -q -O- http://{}/index.html"
        direct, out = await sh(backend, "net-a", fetch.format(f"{b.container_ip}:8080"))
        assert direct.code != 0 and "hello" not in out.out, "containers reached each other directly"
        to_host, _ = await sh(backend, "net-a", fetch.format(f"{a.bridge_ip}:{host_port}"))
        assert to_host.code != 0 and connections == 0, "a container reached a host service"
        assert await get(f"http://{b.container_ip}:8080/index.html") == "hello from net-b\n"  # the host can
    finally:
        server.close()
        await server.wait_closed()
