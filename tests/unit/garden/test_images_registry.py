"""The distribution API client against an in-memory fake registry (httpx.MockTransport).

The fake keeps manifests and blobs, enforces Bearer-token or Basic auth like Docker Hub and
`docker-registry` do, and records requests, so the tests check the auth dance, scheme choice,
verification and error mapping without sockets. The real registry is in the integration tests.
"""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from agents.garden.images.errors import ImageProblem, RegistryUnreachable
from agents.garden.images.manifest import OCI_MANIFEST
from agents.garden.images.registry import Credentials, RegistryClient, parse_challenge
from agents.garden.images.uri import DockerRootfs

REF = DockerRootfs("reg.test:5000", "team/app", "v1")
MANIFEST = b'{"schemaVersion": 2, "config": {}, "layers": []}'
BLOB = b"layer bytes" * 100
BLOB_DIGEST = f"sha256:{hashlib.sha256(BLOB).hexdigest()}"


@dataclass
class FakeRegistry:
    auth: str = "none"  # none | bearer | basic
    user: str = "alice"
    password: str = "secret"
    anonymous_tokens: bool = True
    status: int = 200
    blobs: dict[str, bytes] = field(default_factory=lambda: {BLOB_DIGEST: BLOB})
    manifests: dict[str, bytes] = field(default_factory=lambda: {"v1": MANIFEST})
    seen: list[str] = field(default_factory=list)
    token_calls: int = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url}")
        if request.url.host == "auth.test":
            return self._token(request)
        if not self._authorized(request):
            challenge = ('Bearer realm="http://auth.test/token",service="reg.test",scope="repository:team/app:pull"'
                         if self.auth == "bearer" else 'Basic realm="basic-realm"')
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if self.status != 200:
            return httpx.Response(self.status)
        path = request.url.path
        if path.startswith("/v2/team/app/manifests/") and path.rsplit("/", 1)[1] in self.manifests:
            return httpx.Response(200, content=self.manifests[path.rsplit("/", 1)[1]],
                                  headers={"Content-Type": OCI_MANIFEST})
        if path.startswith("/v2/team/app/blobs/") and path.rsplit("/", 1)[1] in self.blobs:
            return httpx.Response(200, content=self.blobs[path.rsplit("/", 1)[1]])
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})

    def _basic_ok(self, header: str) -> bool:
        return header == "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

    def _authorized(self, request: httpx.Request) -> bool:
        header = request.headers.get("authorization", "")
        if self.auth == "bearer":
            return header == "Bearer tok-1"
        if self.auth == "basic":
            return self._basic_ok(header)
        return True

    def _token(self, request: httpx.Request) -> httpx.Response:
        self.token_calls += 1
        header = request.headers.get("authorization", "")
        if (header and not self._basic_ok(header)) or (not header and not self.anonymous_tokens):
            return httpx.Response(401)
        assert request.url.params["scope"] == "repository:team/app:pull"
        return httpx.Response(200, json={"token": "tok-1", "expires_in": 300})


def client(fake: FakeRegistry) -> RegistryClient:
    return RegistryClient(timeout=5, insecure_registries=["reg.test:5000"], transport=httpx.MockTransport(fake.handle))


async def test_bearer_token_is_fetched_once_and_reused(tmp_path: Path) -> None:
    fake = FakeRegistry(auth="bearer")
    registry = client(fake)
    try:
        body, media_type = await registry.manifest(REF, "v1", Credentials())
        await registry.download(REF, BLOB_DIGEST, len(BLOB), tmp_path / "blob", Credentials())
    finally:
        await registry.aclose()
    assert body == MANIFEST and media_type == OCI_MANIFEST
    assert (tmp_path / "blob").read_bytes() == BLOB
    assert fake.token_calls == 1
    assert fake.seen[0].startswith("GET http://reg.test:5000/v2/team/app/manifests/v1")  # plain http: insecure


async def test_bearer_with_credentials_and_refusals() -> None:
    fake = FakeRegistry(auth="bearer", anonymous_tokens=False)
    registry = client(fake)
    try:
        assert (await registry.manifest(REF, "v1", Credentials("alice", "secret")))[0] == MANIFEST
        with pytest.raises(ImageProblem, match="token service of reg.test:5000 refused team/app"):
            await registry.manifest(REF, "v1", Credentials("alice", "wrong"))
        with pytest.raises(ImageProblem, match="refused team/app"):
            await registry.manifest(REF, "v1", Credentials())
    finally:
        await registry.aclose()


async def test_basic_auth() -> None:
    fake = FakeRegistry(auth="basic")
    registry = client(fake)
    try:
        with pytest.raises(ImageProblem, match="requires credentials for team/app"):
            await registry.manifest(REF, "v1", Credentials())
        with pytest.raises(ImageProblem, match="refused access to team/app as 'alice' \\(401\\)"):
            await registry.manifest(REF, "v1", Credentials("alice", "wrong"))
        assert (await registry.manifest(REF, "v1", Credentials("alice", "secret")))[0] == MANIFEST
    finally:
        await registry.aclose()


async def test_errors_are_typed() -> None:
    fake = FakeRegistry()
    registry = client(fake)
    try:
        with pytest.raises(ImageProblem, match="manifest 'v2' not found in reg.test:5000/team/app"):
            await registry.manifest(REF, "v2", Credentials())
        fake.manifests["sha256:" + "0" * 64] = MANIFEST  # served under a digest it does not have
        with pytest.raises(ImageProblem, match="different digest"):
            await registry.manifest(REF, "sha256:" + "0" * 64, Credentials())
        fake.status = 503
        with pytest.raises(RegistryUnreachable, match="answered 503"):
            await registry.manifest(REF, "v1", Credentials())
    finally:
        await registry.aclose()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    down = RegistryClient(timeout=5, transport=httpx.MockTransport(refuse))
    try:
        with pytest.raises(RegistryUnreachable, match="registry reg.test:5000 unreachable: .*refused"):
            await down.manifest(REF, "v1", Credentials())
    finally:
        await down.aclose()


async def test_blob_size_and_digest_are_checked(tmp_path: Path) -> None:
    fake = FakeRegistry()
    wrong = "sha256:" + "2" * 64
    fake.blobs[wrong] = BLOB
    registry = client(fake)
    try:
        with pytest.raises(ImageProblem, match="failed verification"):
            await registry.download(REF, wrong, len(BLOB), tmp_path / "a", Credentials())
        with pytest.raises(ImageProblem, match="larger than the 10 bytes"):
            await registry.download(REF, BLOB_DIGEST, 10, tmp_path / "b", Credentials())
        with pytest.raises(ImageProblem, match="blob sha256:3333.* not found"):
            await registry.download(REF, "sha256:" + "3" * 64, 1, tmp_path / "c", Credentials())
    finally:
        await registry.aclose()


async def test_scheme_per_registry() -> None:
    registry = RegistryClient(timeout=1, insecure_registries=["plain.test", "other.test:5000"])
    try:
        assert registry.base_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
        assert registry.base_url("localhost") == "http://localhost"
        assert registry.base_url("[::1]:5000") == "http://[::1]:5000"
        assert registry.base_url("plain.test:443") == "http://plain.test:443"
        assert registry.base_url("other.test:5000") == "http://other.test:5000"
        assert registry.base_url("other.test") == "https://other.test"
        assert registry.base_url("registry-1.docker.io") == "https://registry-1.docker.io"
    finally:
        await registry.aclose()


def test_parse_challenge() -> None:
    assert parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                           'scope="repository:library/busybox:pull"') == (
        "bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                   "scope": "repository:library/busybox:pull"})
    assert parse_challenge('Basic realm="basic-realm"') == ("basic", {"realm": "basic-realm"})
    assert parse_challenge("") == ("", {})
