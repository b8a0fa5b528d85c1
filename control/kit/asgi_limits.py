"""ASGI middleware refusing request bodies over a size limit with 413 and a typed body, both
by Content-Length and by counting a streamed body, before any handler runs; every body is
read as JSON.

It also refuses, with a typed 400/422, two kinds of valid JSON that the models cannot store:
nesting deeper than MAX_JSON_DEPTH (pydantic-core reads stored documents back only up to
~200 levels and serializes only so deep, so such a request would be a 500, or worse, a stored
document nobody can read), and lone UTF-16 surrogate escapes ("\\ud800"), which are not
Unicode and cannot be encoded as UTF-8 for etcd.
"""
from __future__ import annotations

import json
import re
from typing import Any

from control.models.errors import InvalidJSON, InvalidRequest, PydiegoError, RequestTooLarge

MAX_JSON_DEPTH = 64
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text nests arrays/objects deeper than `limit` (strings skipped)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # cannot be deeper than its number of openers
    depth = 0
    for m in _BRACKET.finditer(_STRING.sub(b'""', body)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def has_lone_surrogate(body: bytes) -> bool:
    """Whether the JSON text decodes to a string holding an unpaired UTF-16 surrogate."""
    if not _SURROGATE_ESCAPE.search(body):
        return False  # the common case: no surrogate escape at all
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return False  # not JSON: the route reports InvalidJSON
    try:
        json.dumps(decoded, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Any, err: PydiegoError | None = None) -> None:
        err = err or RequestTooLarge(f"request body is over {self.max_bytes} bytes")
        body = json.dumps(err.to_body()).encode()
        await send({"type": "http.response.start", "status": err.status,
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
        if json_too_deep(body):
            await self._reject(send, InvalidRequest(f"request body nests deeper than {MAX_JSON_DEPTH} levels"))
            return
        if has_lone_surrogate(body):
            await self._reject(send, InvalidJSON("request body holds a lone UTF-16 surrogate escape: not valid Unicode"))
            return
        delivered = False

        async def replay() -> Any:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
