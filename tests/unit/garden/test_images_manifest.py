"""Manifests, indexes and configs: parsing, digest checks, platform and tag selection."""
from __future__ import annotations

import json

import pytest

from agents.garden.images.errors import ImageProblem
from agents.garden.images.manifest import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Index,
    Manifest,
    parse_config,
    parse_document,
    select_platform,
    select_tag,
)

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def desc(digest: str, media_type: str = OCI_MANIFEST, **extra: object) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest, "size": 10, **extra}


def doc(**fields: object) -> bytes:
    return json.dumps({"schemaVersion": 2, **fields}).encode()


def test_oci_and_docker_manifests() -> None:
    layer = desc(D2, "application/vnd.oci.image.layer.v1.tar+gzip")
    parsed = parse_document(doc(mediaType=OCI_MANIFEST, config=desc(D1, "application/vnd.oci.image.config.v1+json"),
                                layers=[layer]))
    assert isinstance(parsed, Manifest) and parsed.config.digest == D1 and [d.digest for d in parsed.layers] == [D2]
    docker_layer = desc(D3, "application/vnd.docker.image.rootfs.diff.tar.gzip")
    docker = parse_document(doc(config=desc(D1), layers=[docker_layer]), DOCKER_MANIFEST)
    assert isinstance(docker, Manifest) and docker.layers[0].digest == D3


def test_index_detected_by_header_or_body() -> None:
    assert isinstance(parse_document(doc(manifests=[desc(D1)]), DOCKER_LIST), Index)
    assert isinstance(parse_document(doc(mediaType=OCI_INDEX, manifests=[])), Index)


@pytest.mark.parametrize(("body", "reason"), [
    (doc(config=desc("sha256:../../etc/passwd"), layers=[]), "malformed digest"),
    (doc(config=desc("sha512:" + "a" * 128), layers=[]), "only sha256"),
    (json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(), "schema 1"),
    (doc(config=desc(D1), layers=[desc(D2, "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip")]), "foreign"),
    (doc(config=desc(D1), layers=[desc(D2, "text/plain")]), "unsupported media type"),
    (doc(config={"digest": D1, "size": -1}, layers=[]), "bad size"),
    (b"{not json", "not valid JSON"),
    (b"[]", "not a JSON object"),
    (doc(mediaType="application/x-other"), "unsupported manifest media type"),
])
def test_refused_documents(body: bytes, reason: str) -> None:
    with pytest.raises(ImageProblem, match=reason):
        parse_document(body)


def test_select_platform_picks_linux_amd64_and_skips_attestations() -> None:
    index = parse_document(doc(manifests=[
        desc(D1, platform={"os": "linux", "architecture": "arm64"}),
        desc(D2, platform={"os": "unknown", "architecture": "unknown"}),
        desc(D3, platform={"os": "linux", "architecture": "amd64"}),
    ]))
    assert isinstance(index, Index)
    assert select_platform(index, architecture="amd64").digest == D3
    assert select_platform(index, architecture="arm64").digest == D1
    with pytest.raises(ImageProblem, match=r"no linux/s390x image in the index \(it has: linux/amd64, linux/arm64, "):
        select_platform(index, architecture="s390x")
    single = parse_document(doc(manifests=[desc(D1)]))
    assert isinstance(single, Index) and select_platform(single, architecture="amd64").digest == D1


def test_select_tag_in_an_oci_layout_index() -> None:
    named = lambda d, tag: desc(d, annotations={"org.opencontainers.image.ref.name": tag})  # noqa: E731
    index = parse_document(doc(manifests=[named(D1, "v1"), named(D2, "latest")]))
    assert isinstance(index, Index)
    assert select_tag(index, "v1").digest == D1 and select_tag(index, "").digest == D2
    with pytest.raises(ImageProblem, match=r"tag 'v9' not in the layout \(it has: latest, v1\)"):
        select_tag(index, "v9")
    only = parse_document(doc(manifests=[named(D3, "v2")]))
    assert isinstance(only, Index) and select_tag(only, "").digest == D3


def test_image_config() -> None:
    config = parse_config(json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin", "A=1"], "WorkingDir": "/app", "User": "1000:1000",
                   "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"]},
        "rootfs": {"type": "layers", "diff_ids": [D1, D2]}}).encode())
    assert (config.env, config.working_dir, config.user, config.entrypoint, config.cmd, config.diff_ids) == (
        ("PATH=/bin", "A=1"), "/app", "1000:1000", ("/bin/sh", "-c"), ("echo hi",), (D1, D2))
    empty = parse_config(b'{"rootfs": {"diff_ids": []}}')
    assert (empty.env, empty.user, empty.cmd) == ((), "", ())
