"""Rootfs URIs, parsed into typed references (pure; no I/O).

    preloaded:<stack>
    preloaded+layer:<stack>?layer=<url>&layer_path=/dir[&layer_digest=<sha256 hex>]
    docker://HOST[:PORT]/repo/name[#tag|#sha256:<hex>]     (also `repo/name:tag` / `@sha256:` in the path)
    docker:///name[#tag]                                   (Docker Hub; `name` alone means `library/name`)
    oci:/abs/path/to/layout[:tag]

Limits: only sha256 digests; layer URLs must be http, https or file; the Docker Hub host is fixed
(registry-1.docker.io). A URI that does not parse raises `RootfsNotOffered` naming it.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .errors import RootfsNotOffered

DOCKER_HUB = "registry-1.docker.io"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]{64}")
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?")
_STACK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class PreloadedRootfs:
    stack: str


@dataclass(frozen=True)
class LayeredRootfs:
    stack: str
    layer_url: str
    layer_path: str   # absolute path inside the rootfs where the layer is extracted
    layer_digest: str  # "sha256:<hex>" or "" (not verified)


@dataclass(frozen=True)
class DockerRootfs:
    registry: str     # host[:port]
    repository: str   # e.g. library/busybox
    reference: str    # a tag or "sha256:<hex>"

    @property
    def is_digest(self) -> bool:
        return self.reference.startswith("sha256:")

    def __str__(self) -> str:
        sep = "@" if self.is_digest else ":"
        return f"{self.registry}/{self.repository}{sep}{self.reference}"


@dataclass(frozen=True)
class OciLayoutRootfs:
    path: Path
    tag: str          # "" = not given (latest, or the layout's only image)


RootfsRef = PreloadedRootfs | LayeredRootfs | DockerRootfs | OciLayoutRootfs

SCHEMES = ("preloaded", "preloaded+layer", "docker", "oci")


def scheme_of(uri: str) -> str:
    return uri.split(":", 1)[0] if ":" in uri else ""


def parse_rootfs(uri: str) -> RootfsRef:
    """Parse a rootfs URI; raise RootfsNotOffered (naming it) when the scheme is unknown or it is malformed."""
    scheme = scheme_of(uri)
    rest = uri[len(scheme) + 1:]
    try:
        if scheme == "preloaded":
            return PreloadedRootfs(_stack(rest))
        if scheme == "preloaded+layer":
            return _layered(rest)
        if scheme == "docker":
            return _docker(rest)
        if scheme == "oci":
            return _oci(rest)
    except ValueError as exc:
        raise RootfsNotOffered(f"malformed rootfs {uri!r}: {exc}", rootfs=uri) from None
    raise RootfsNotOffered(f"rootfs {uri!r} has an unknown scheme (offered: {', '.join(SCHEMES)})", rootfs=uri)


def normalize_digest(value: str) -> str:
    """'sha256:<hex>' or bare hex -> 'sha256:<hex>'; ValueError for anything else."""
    value = value.strip().lower()
    if _HEX.fullmatch(value):
        return f"sha256:{value}"
    if _DIGEST.fullmatch(value):
        return value
    raise ValueError(f"not a sha256 digest: {value!r}")


def _stack(name: str) -> str:
    if not _STACK.fullmatch(name):
        raise ValueError(f"bad stack name {name!r}")
    return name


def _layered(rest: str) -> LayeredRootfs:
    stack, _, query = rest.partition("?")
    params = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    unknown = set(params) - {"layer", "layer_path", "layer_digest"}
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}")
    layer = _single(params, "layer")
    if urlsplit(layer).scheme not in ("http", "https", "file"):
        raise ValueError("layer must be an http, https or file URL")
    layer_path = _single(params, "layer_path")
    if not layer_path.startswith("/") or ".." in layer_path.split("/"):
        raise ValueError("layer_path must be an absolute path without '..'")
    digest = normalize_digest(_single(params, "layer_digest")) if "layer_digest" in params else ""
    return LayeredRootfs(_stack(stack), layer, posixpath.normpath(layer_path), digest)


def _single(params: dict[str, list[str]], name: str) -> str:
    values = params.get(name, [])
    if len(values) != 1 or not values[0]:
        raise ValueError(f"needs exactly one non-empty {name}=")
    return values[0]


def _docker(rest: str) -> DockerRootfs:
    if not rest.startswith("//"):
        raise ValueError("expected docker://HOST/repo or docker:///repo")
    host, _, path = rest[2:].partition("/")
    path, _, fragment = path.partition("#")
    if not host:
        host = DOCKER_HUB
    elif not _HOST.fullmatch(host):
        raise ValueError(f"bad registry host {host!r}")
    repository, reference = _split_reference(path, fragment)
    if host == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return DockerRootfs(host, repository, reference)


def _split_reference(path: str, fragment: str) -> tuple[str, str]:
    reference = fragment
    if "@" in path:
        path, _, in_path = path.partition("@")
        reference = reference or in_path
    elif ":" in path.rsplit("/", 1)[-1]:
        path, _, in_path = path.rpartition(":")
        reference = reference or in_path
    reference = reference or DEFAULT_TAG
    if not _REPOSITORY.fullmatch(path):
        raise ValueError(f"bad repository name {path!r}")
    if reference.startswith("sha256:"):
        reference = normalize_digest(reference)
    elif not _TAG.fullmatch(reference):
        raise ValueError(f"bad tag {reference!r}")
    return path, reference


def _oci(rest: str) -> OciLayoutRootfs:
    path, tag = rest, ""
    head, sep, tail = rest.rpartition(":")
    if sep and head and "/" not in tail:
        path, tag = head, tail
        if not _TAG.fullmatch(tag):
            raise ValueError(f"bad tag {tag!r}")
    if not path.startswith("/") or ".." in path.split("/"):
        raise ValueError("the layout path must be absolute, without '..'")
    return OciLayoutRootfs(Path(posixpath.normpath(path)), tag)
