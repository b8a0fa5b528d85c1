"""OCI / Docker v2 manifests, indexes and image configs (pure parsing and platform selection).

Understood: OCI image manifest and index, Docker schema 2 manifest and manifest list. Not
understood (ImageProblem): Docker schema 1, foreign (non-distributable) layers, digests other
than sha256. Every digest is checked against `sha256:<64 hex>` here, before anything uses it
as a file name.
"""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from typing import Any

from .errors import ImageProblem

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))

LAYER_TYPES = frozenset({
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
})
REF_NAME = "org.opencontainers.image.ref.name"
MAX_DOCUMENT = 4 * 1024 * 1024  # manifests, indexes and configs are small JSON documents

_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
           "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "i686": "386", "i386": "386"}


def host_architecture() -> str:
    """The OCI name of this machine's architecture (amd64 on x86_64)."""
    machine = platform.machine().lower()
    return _ARCHES.get(machine, machine)


def check_digest(value: object) -> str:
    if not (isinstance(value, str) and value.startswith("sha256:") and len(value) == 71
            and all(c in "0123456789abcdef" for c in value[7:])):
        raise ImageProblem(f"unsupported or malformed digest {value!r} (only sha256 is supported)")
    return value


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, value: object) -> Descriptor:
        if not isinstance(value, dict):
            raise ImageProblem("descriptor is not an object")
        size = value.get("size")
        if not isinstance(size, int) or size < 0:
            raise ImageProblem(f"descriptor has a bad size {size!r}")
        return cls(str(value.get("mediaType", "")), check_digest(value.get("digest")), size,
                   _dict(value.get("platform")), _dict(value.get("annotations")))


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageConfig:
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    diff_ids: tuple[str, ...] = ()


def load_json(body: bytes, what: str) -> dict[str, Any]:
    if len(body) > MAX_DOCUMENT:
        raise ImageProblem(f"{what} is larger than {MAX_DOCUMENT} bytes")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ImageProblem(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ImageProblem(f"{what} is not a JSON object")
    return doc


def parse_document(body: bytes, media_type: str = "") -> Manifest | Index:
    """A manifest or an index, told apart by mediaType (header or body) or by its keys."""
    doc = load_json(body, "manifest")
    kind = doc.get("mediaType") or media_type.split(";")[0].strip()
    if doc.get("schemaVersion") == 1 or "signed" in kind or "v1+prettyjws" in kind:
        raise ImageProblem("Docker schema 1 manifests are not supported")
    if kind in INDEX_TYPES or (kind not in MANIFEST_TYPES and "manifests" in doc):
        return Index(tuple(Descriptor.from_json(d) for d in _list(doc.get("manifests"))))
    if kind in MANIFEST_TYPES or "layers" in doc:
        return _manifest(doc)
    raise ImageProblem(f"unsupported manifest media type {kind!r}")


def _manifest(doc: dict[str, Any]) -> Manifest:
    layers = tuple(Descriptor.from_json(d) for d in _list(doc.get("layers")))
    for layer in layers:
        if "foreign" in layer.media_type or "nondistributable" in layer.media_type:
            raise ImageProblem(f"layer {layer.digest} is foreign/non-distributable ({layer.media_type})")
        if layer.media_type and layer.media_type not in LAYER_TYPES:
            raise ImageProblem(f"layer {layer.digest} has unsupported media type {layer.media_type!r}")
    return Manifest(Descriptor.from_json(doc.get("config")), layers)


def select_platform(index: Index, os: str = "linux", architecture: str | None = None) -> Descriptor:
    """The index entry for os/architecture; an entry without platform only when it is the only one."""
    architecture = architecture or host_architecture()
    candidates = [d for d in index.manifests
                  if d.platform.get("os") == os and d.platform.get("architecture") == architecture]
    if candidates:
        return candidates[0]
    if len(index.manifests) == 1 and not index.manifests[0].platform:
        return index.manifests[0]
    offered = sorted({f"{d.platform.get('os')}/{d.platform.get('architecture')}" for d in index.manifests})
    raise ImageProblem(f"no {os}/{architecture} image in the index (it has: {', '.join(offered) or 'nothing'})")


def select_tag(index: Index, tag: str) -> Descriptor:
    """The entry of an OCI layout's index.json named `tag` ('' = latest, or the only entry)."""
    for d in index.manifests:
        if d.annotations.get(REF_NAME) == (tag or "latest"):
            return d
    if not tag and len(index.manifests) == 1:
        return index.manifests[0]
    names = sorted(d.annotations.get(REF_NAME, "?") for d in index.manifests)
    raise ImageProblem(f"tag {tag or 'latest'!r} not in the layout (it has: {', '.join(names) or 'nothing'})")


def parse_config(body: bytes) -> ImageConfig:
    doc = load_json(body, "image config")
    conf = _dict(doc.get("config"))
    diff_ids = tuple(check_digest(d) for d in _list(_dict(doc.get("rootfs")).get("diff_ids")))
    return ImageConfig(env=_strings(conf.get("Env")), working_dir=str(conf.get("WorkingDir") or ""),
                       user=str(conf.get("User") or ""), entrypoint=_strings(conf.get("Entrypoint")),
                       cmd=_strings(conf.get("Cmd")), diff_ids=diff_ids)


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ImageProblem("expected a list in the manifest")
    return value


def _strings(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()
