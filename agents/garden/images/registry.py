"""A client for the OCI distribution API: manifests and blobs, with Bearer-token and Basic auth.

Speaks plain HTTP to registries listed as insecure and to loopback hosts, HTTPS (verified) to all
others. On a 401 it answers the WWW-Authenticate challenge once: Bearer (token from the realm,
with the caller's credentials if any, cached until it expires) or Basic (the caller's
credentials). Blob downloads are checked against the descriptor's size and digest while they
stream into a file. Every request has the store's timeout; transport failures and 5xx answers
raise RegistryUnreachable, everything else ImageProblem, both with a one-line reason.
"""
from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from .errors import ImageProblem, RegistryUnreachable
from .manifest import ACCEPT, MAX_DOCUMENT
from .uri import DockerRootfs

_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""

    def __bool__(self) -> bool:
        return bool(self.username or self.password)

    def basic(self) -> httpx.BasicAuth:
        return httpx.BasicAuth(self.username, self.password)

    def basic_header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…",scope="…"` -> ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    while rest:
        key, _, rest = rest.strip().partition("=")
        if rest.startswith('"'):
            value, _, rest = rest[1:].partition('"')
        else:
            value, _, rest = rest.partition(",")
        params[key.strip().lower()] = value
        rest = rest.lstrip().removeprefix(",")
    return scheme.lower(), params


class RegistryClient:
    """One HTTP client per image store; callers pass the image reference and credentials."""

    def __init__(self, *, timeout: float, insecure_registries: Sequence[str] = (),
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._insecure = frozenset(insecure_registries)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=True,
                                       headers={"User-Agent": "pydiego-garden"})
        self._auth: dict[tuple[str, str, str, str], tuple[str, float]] = {}

    def base_url(self, registry: str) -> str:
        host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
        plain = registry in self._insecure or host in _LOOPBACK or host in self._insecure
        return f"{'http' if plain else 'https'}://{registry}"

    async def manifest(self, ref: DockerRootfs, reference: str, creds: Credentials) -> tuple[bytes, str]:
        """The manifest or index `reference` (tag or digest) of ref's repository: (body, media type)."""
        url = f"{self.base_url(ref.registry)}/v2/{ref.repository}/manifests/{reference}"
        response = await self._send("GET", url, ref, creds, {"Accept": ACCEPT})
        try:
            if response.status_code == 404:
                raise ImageProblem(f"manifest {reference!r} not found in {ref.registry}/{ref.repository}")
            self._check(response, f"manifest {reference}")
            body = await _read_limited(response, MAX_DOCUMENT)
        except httpx.TransportError as exc:
            raise RegistryUnreachable(f"reading manifest {reference} from {ref.registry} failed: "
                                      f"{_reason(exc)}") from None
        finally:
            await response.aclose()
        if reference.startswith("sha256:") and f"sha256:{hashlib.sha256(body).hexdigest()}" != reference:
            raise ImageProblem(f"manifest {reference} has a different digest")
        return body, response.headers.get("content-type", "")

    async def download(self, ref: DockerRootfs, digest: str, size: int, dest: Path, creds: Credentials) -> None:
        """Stream blob `digest` into dest, checking its size and sha256; dest is the caller's to remove."""
        url = f"{self.base_url(ref.registry)}/v2/{ref.repository}/blobs/{digest}"
        response = await self._send("GET", url, ref, creds, {})
        hasher, received = hashlib.sha256(), 0
        try:
            if response.status_code == 404:
                raise ImageProblem(f"blob {digest} not found in {ref.registry}/{ref.repository}")
            self._check(response, f"blob {digest}")
            with open(dest, "wb") as out:
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
                    if received > size:
                        raise ImageProblem(f"blob {digest} is larger than the {size} bytes its descriptor says")
                    hasher.update(chunk)
                    out.write(chunk)
        except httpx.TransportError as exc:
            raise RegistryUnreachable(f"download of blob {digest} from {ref.registry} failed: {_reason(exc)}") from None
        finally:
            await response.aclose()
        if received != size or f"sha256:{hasher.hexdigest()}" != digest:
            raise ImageProblem(f"blob {digest} from {ref.registry} failed verification "
                               f"(got {received} bytes, sha256:{hasher.hexdigest()[:12]}…)")

    async def fetch_url(self, url: str, dest: Path) -> None:
        """Download a plain http(s) URL (a preloaded+layer layer) into dest."""
        try:
            async with self._http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ImageProblem(f"GET {url} answered {response.status_code}")
                with open(dest, "wb") as out:
                    async for chunk in response.aiter_bytes():
                        out.write(chunk)
        except httpx.TransportError as exc:
            raise RegistryUnreachable(f"cannot download {url}: {_reason(exc)}") from None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, url: str, ref: DockerRootfs, creds: Credentials,
                    headers: dict[str, str]) -> httpx.Response:
        """Send with cached auth; answer one 401 challenge; return the (streaming) response."""
        key = (ref.registry, ref.repository, creds.username, creds.password)
        response = await self._stream(method, url, self._header(key), headers, ref)
        if response.status_code != 401:
            return response
        challenge = response.headers.get("www-authenticate", "")
        await response.aclose()
        self._auth.pop(key, None)
        await self._authenticate(key, challenge, ref, creds)
        response = await self._stream(method, url, self._header(key), headers, ref)
        if response.status_code in (401, 403):
            await response.aclose()
            who = f"as {creds.username!r}" if creds else "without credentials"
            raise ImageProblem(f"{ref.registry} refused access to {ref.repository} {who} ({response.status_code})")
        return response

    async def _stream(self, method: str, url: str, auth: str, headers: dict[str, str],
                      ref: DockerRootfs) -> httpx.Response:
        all_headers = {**headers, **({"Authorization": auth} if auth else {})}
        try:
            response = await self._http.send(self._http.build_request(method, url, headers=all_headers), stream=True)
        except httpx.TransportError as exc:
            raise RegistryUnreachable(f"registry {ref.registry} unreachable: {_reason(exc)}") from None
        if response.status_code >= 500:
            await response.aclose()
            raise RegistryUnreachable(f"registry {ref.registry} answered {response.status_code}")
        return response

    def _header(self, key: tuple[str, str, str, str]) -> str:
        header, expires = self._auth.get(key, ("", 0.0))
        return header if expires > time.monotonic() else ""

    async def _authenticate(self, key: tuple[str, str, str, str], challenge: str, ref: DockerRootfs,
                            creds: Credentials) -> None:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not creds:
                raise ImageProblem(f"{ref.registry} requires credentials for {ref.repository}")
            self._auth[key] = (creds.basic_header(), time.monotonic() + 3600)
            return
        if scheme != "bearer" or "realm" not in params:
            raise ImageProblem(f"{ref.registry} asks for unsupported authentication {challenge!r}")
        token, lifetime = await self._token(params, ref, creds)
        self._auth[key] = (f"Bearer {token}", time.monotonic() + lifetime * 0.9)

    async def _token(self, params: dict[str, str], ref: DockerRootfs, creds: Credentials) -> tuple[str, float]:
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        query.setdefault("scope", f"repository:{ref.repository}:pull")
        try:
            response = await self._http.get(params["realm"], params=query, auth=creds.basic() if creds else None)
        except httpx.TransportError as exc:
            raise RegistryUnreachable(f"token service of {ref.registry} unreachable: {_reason(exc)}") from None
        if response.status_code != 200:
            raise ImageProblem(f"token service of {ref.registry} refused {ref.repository} ({response.status_code})")
        try:
            doc = response.json()
            token = str(doc.get("token") or doc["access_token"])
            lifetime = float(doc.get("expires_in") or 60)
        except (ValueError, KeyError, AttributeError):
            raise ImageProblem(f"token service of {ref.registry} sent no token") from None
        return token, lifetime

    @staticmethod
    def _check(response: httpx.Response, what: str) -> None:
        if response.status_code != 200:
            raise ImageProblem(f"{what}: registry answered {response.status_code}")


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise ImageProblem(f"document larger than {limit} bytes")
    return bytes(body)


def _reason(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
