"""ASGI middleware refusing request bodies over a size limit with 413 and a typed body, both
by Content-Length and by counting a streamed body, before any handler runs; every body is
read as JSON."""
from __future__ import annotations

import json
from typing import Any

from control.models.errors import RequestTooLarge


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Any) -> None:
        body = json.dumps(RequestTooLarge(f"request body is over {self.max_bytes} bytes").to_body()).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # JSON is the only body format: accept it whatever Content-Type the client sent
        # (curl -d sends form encoding), so the body is parsed and validated as JSON.
        headers = [(n, v) for n, v in scope.get("headers", []) if n != b"content-type"]
        scope = dict(scope, headers=headers + [(b"content-type", b"application/json")])
        for name, value in headers:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = True
                if too_big:
                    await self._reject(send)
                    return
        # Read the body up front (bounded), so a chunked upload cannot exceed the limit either.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Any:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
