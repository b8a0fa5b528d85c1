"""An HTTP(S) server as a supervised member: uvicorn without its own signal handlers.

Every pydiego daemon with an API (bbs, rep, auctioneer, ...) serves through this: ready once it
listens, drains on cancellation. TLS is mutual when `require_client_cert` is set.
"""
from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn


@dataclass(frozen=True)
class ServerTLS:
    ca_cert: str
    server_cert: str
    server_key: str
    require_client_cert: bool = True


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the supervisor owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class APIServer:
    """Runs a uvicorn server as a supervised member; ready once it listens."""

    def __init__(self, app: Any, host: str, port: int, tls: ServerTLS | None,
                 before_drain: Callable[[], None] | None = None) -> None:
        self.before_drain = before_drain  # e.g. end the event streams so draining is quick
        kwargs: dict[str, Any] = {}
        if tls is not None:
            kwargs = dict(ssl_certfile=tls.server_cert, ssl_keyfile=tls.server_key, ssl_ca_certs=tls.ca_cert,
                          ssl_cert_reqs=ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL)
        self.config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                     lifespan="off", timeout_graceful_shutdown=2, **kwargs)
        self.server = _QuietServer(self.config)

    async def run(self, ready: asyncio.Event) -> None:
        serving = asyncio.ensure_future(self.server.serve())
        try:
            while not self.server.started:
                if serving.done():
                    await serving
                    raise RuntimeError("API server stopped before it started listening")
                await asyncio.sleep(0.01)
            ready.set()
            await asyncio.shield(serving)
        finally:
            if self.before_drain is not None:
                self.before_drain()
            self.server.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await serving
