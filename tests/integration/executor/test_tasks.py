"""Tasks on real runc: result files, downloads from a host HTTP server, uploads, and logs."""
from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from agents.executor.models import ContainerState, RunRequest

from .conftest import Cell
from .helpers import reserve, run_action, wait_state


def task(action: dict, **extra: object) -> RunRequest:  # type: ignore[type-arg]
    return RunRequest.model_validate({"rootfs": "preloaded:busybox", "action": action, **extra})


async def test_task_result_file_is_read(cell: Cell) -> None:
    await reserve(cell.executor, "task-1", lifecycle="task")
    await cell.executor.run_container("task-1", task(run_action("echo -n 'the answer: 42' > /tmp/result"),
                                           result_file="/tmp/result"))
    result = (await wait_state(cell.executor, "task-1", ContainerState.COMPLETED)).run_result
    assert result is not None and (result.failed, result.result) == (False, "the answer: 42")


async def test_task_result_file_over_50_kib_fails(cell: Cell) -> None:
    await reserve(cell.executor, "task-2", lifecycle="task")
    await cell.executor.run_container("task-2", task(run_action("head -c 51201 /dev/zero > /tmp/result"),
                                           result_file="/tmp/result"))
    result = (await wait_state(cell.executor, "task-2", ContainerState.COMPLETED)).run_result
    assert result is not None and (result.failed, result.failure_reason) == (True, "failed to fetch result")


@dataclass
class Server:
    """A tiny HTTP/1.0 server on 127.0.0.1: GET serves `files`, POST stores the body in `uploads`."""

    files: dict[str, bytes] = field(default_factory=dict)
    uploads: dict[str, bytes] = field(default_factory=dict)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            method, path, _ = request.split(b"\r\n")[0].decode().split(" ")
            headers = dict(line.decode().split(": ", 1) for line in request.split(b"\r\n")[1:] if b": " in line)
            length = int({k.lower(): v for k, v in headers.items()}.get("content-length", "0"))
            body = await reader.readexactly(length) if length else b""
            if method == "POST":
                self.uploads[path] = body
                status, payload = "201 Created", b""
            elif path in self.files:
                status, payload = "200 OK", self.files[path]
            else:
                status, payload = "404 Not Found", b""
            writer.write(f"HTTP/1.0 {status}\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    listener = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    srv.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield srv


def tgz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def test_download_into_the_container_then_upload(cell: Cell, server: Server) -> None:
    app = tgz({"bin/hello": b"#!/bin/sh\necho hello from the droplet\n"})
    server.files["/droplet.tgz"] = app
    url = f"http://127.0.0.1:{server.port}"
    action = {"serial": {"actions": [
        {"download": {"from": f"{url}/droplet.tgz", "to": "/home/app", "user": "root", "artifact": "droplet",
                      "cache_key": "droplet-1", "checksum_algorithm": "sha256",
                      "checksum_value": hashlib.sha256(app).hexdigest()}},
        run_action("/home/app/bin/hello > /tmp/out"),
        {"upload": {"from": "/tmp/out", "to": f"{url}/uploaded", "user": "root"}},
    ]}}
    await reserve(cell.executor, "stage", lifecycle="task")
    await cell.executor.run_container("stage", task(action))
    result = (await wait_state(cell.executor, "stage", ContainerState.COMPLETED)).run_result
    assert result is not None and not result.failed, result
    assert server.uploads["/uploaded"] == b"hello from the droplet\n"
    lines = [line.line async for line in cell.executor.logs("stage")]
    assert "Downloading droplet..." in lines and any(l.startswith("Downloaded droplet (") for l in lines)


async def test_download_with_a_wrong_checksum_fails(cell: Cell, server: Server) -> None:
    server.files["/droplet.tgz"] = tgz({"f": b"x"})
    action = {"serial": {"actions": [
        {"download": {"from": f"http://127.0.0.1:{server.port}/droplet.tgz", "to": "/app", "user": "root",
                      "checksum_algorithm": "sha1", "checksum_value": "0" * 40}},
        run_action("echo never runs"),
    ]}}
    await reserve(cell.executor, "bad", lifecycle="task")
    await cell.executor.run_container("bad", task(action))
    result = (await wait_state(cell.executor, "bad", ContainerState.COMPLETED)).run_result
    assert result is not None and result.failed and not result.retryable
    assert result.failure_reason.startswith("Downloading failed: checksum mismatch: sha1 expected 000"), result
