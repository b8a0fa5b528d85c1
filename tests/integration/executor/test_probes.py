"""The health probes against loopback servers: TCP connect, HTTP 200-only, timeouts, messages."""
from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from agents.executor.steps.health import probe_http, probe_tcp


@pytest.fixture
async def http_port() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:  # a TCP probe: connect and close
            writer.close()
            return
        path = request.split()[1]
        if path == b"/slow":  # never answers: waits for the probe to give up and close
            await reader.read()
            writer.close()
            return
        status = b"200 OK" if path == b"/health" else b"503 Service Unavailable"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_tcp(http_port: int) -> None:
    assert await probe_tcp("127.0.0.1", http_port, 1) is None
    port = closed_port()
    assert await probe_tcp("127.0.0.1", port, 1) == (
        f"Failed to make TCP connection to port {port}: dial tcp 127.0.0.1:{port}: connect: connection refused")


async def test_http(http_port: int) -> None:
    assert await probe_http("127.0.0.1", http_port, "/health", 1) is None
    error = await probe_http("127.0.0.1", http_port, "/other", 1)
    assert error is not None and error.startswith(
        f"Failed to make HTTP request to '/other' on port {http_port}: received status code 503 in ")
    assert await probe_http("127.0.0.1", http_port, "/slow", 0.2) == \
        f"Failed to make HTTP request to '/slow' on port {http_port}: timed out after 0.20 seconds"
    port = closed_port()
    assert await probe_http("127.0.0.1", port, "/", 1) == \
        f"Failed to make HTTP request to '/' on port {port}: connection refused"
