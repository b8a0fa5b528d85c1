"""The converger's only HTTP surface: GET /ping (liveness) and GET /metrics (Prometheus).

A plain ASGI callable: two read-only routes do not need a framework.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST


def create_app(metrics: Callable[[], bytes]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method not in ("GET", "HEAD"):
            status, ctype, body = 405, b"text/plain", b"method not allowed\n"
        elif path == "/ping":
            status, ctype, body = 200, b"application/json", b'{"ok":true}'
        elif path == "/metrics":
            status, ctype, body = 200, CONTENT_TYPE_LATEST.encode(), metrics()
        else:
            status, ctype, body = 404, b"text/plain", b"not found\n"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
    return app
